"""Prometheus: a collector over the recorders, and /metrics over HTTP on loopback by default.

The collector builds its families only when scraped (like prometheus_client's GCCollector), so
it costs nothing between scrapes. It is registered once per registry however many traced
policies exist; the ``policy`` label tells them apart.
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tracedpolicy.errors import internal_errors, record_internal_error
from tracedpolicy.loops import REGISTRY as LOOPS
from tracedpolicy.recorder import recorders
from tracedpolicy.report import leak_report
from tracedpolicy.stats import HistogramSnapshot

LOOP_LABELS = ["policy", "loop_class"]


def _buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in zip(snapshot.bounds, snapshot.cumulative_counts)
    ]


class PolicyCollector(Collector):
    """Every recorder's numbers as Prometheus metric families."""

    def describe(self) -> list[Metric]:
        # Names only, so registering does not collect.
        return list(self._families().values())

    def collect(self) -> Iterator[Metric]:
        try:
            LOOPS.sweep()
            families = self._families()
            self._fill(families)
        except Exception as failure:
            record_internal_error("collector", failure)
            return iter(())
        return iter(families.values())

    def _families(self) -> dict[str, Any]:
        return {
            "created": CounterMetricFamily(
                "asyncio_loop_created",
                "Event loops made through traced policies and loop factories.",
                labels=LOOP_LABELS,
            ),
            "closed": CounterMetricFamily(
                "asyncio_loop_closed", "Traced event loops that were closed.", labels=LOOP_LABELS
            ),
            "open": GaugeMetricFamily(
                "asyncio_loop_open", "Traced event loops alive and not closed.", labels=LOOP_LABELS
            ),
            "leaked": CounterMetricFamily(
                "asyncio_loop_leaked",
                "Traced event loops leaked: gc_unclosed, thread_exit or open_at_exit.",
                labels=[*LOOP_LABELS, "reason"],
            ),
            "lifetime": HistogramMetricFamily(
                "asyncio_loop_lifetime_seconds",
                "How long traced event loops lived, recorded when they close.",
                labels=LOOP_LABELS,
            ),
            "get": CounterMetricFamily(
                "asyncio_policy_get_event_loop_calls",
                "get_event_loop() calls by result: hit, created (implicitly) or miss.",
                labels=["policy", "result", "thread"],
            ),
            "set": CounterMetricFamily(
                "asyncio_policy_set_event_loop_calls",
                "set_event_loop() calls by action: set a loop, or clear (None).",
                labels=["policy", "action"],
            ),
            "creation": HistogramMetricFamily(
                "asyncio_policy_new_event_loop_duration_seconds",
                "How long the base policy or factory took to make an event loop.",
                labels=LOOP_LABELS,
            ),
            "errors": CounterMetricFamily(
                "tracedpolicy_internal_errors",
                "Failures of tracedpolicy's own telemetry; policy calls were unaffected.",
                labels=["kind"],
            ),
        }

    def _fill(self, families: dict[str, Any]) -> None:
        for policy_recorder in recorders():
            policy = policy_recorder.label
            for loop_class, stats in policy_recorder.loop_classes().items():
                labels = [policy, loop_class]
                families["created"].add_metric(labels, stats.created.value)
                families["closed"].add_metric(labels, stats.closed.value)
                families["open"].add_metric(labels, stats.open)
                for reason, counter in stats.leaked.items():
                    families["leaked"].add_metric([*labels, reason], counter.value)
                for name, histogram in (
                    ("lifetime", stats.lifetime_seconds),
                    ("creation", stats.creation_seconds),
                ):
                    snapshot = histogram.snapshot()
                    families[name].add_metric(labels, _buckets(snapshot), snapshot.sum)
            for result in ("hit", "created", "miss"):
                for thread in ("main", "other"):
                    count = policy_recorder.call_count(f"get_event_loop.{result}.{thread}")
                    families["get"].add_metric([policy, result, thread], count)
            for action in ("set", "clear"):
                count = policy_recorder.call_count(f"set_event_loop.{action}")
                families["set"].add_metric([policy, action], count)
        for kind, count in internal_errors().items():
            families["errors"].add_metric([kind], count)


_lock = threading.Lock()
_collector = PolicyCollector()
_registered: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()
_servers: dict[tuple[str, int], Any] = {}


def register(registry: CollectorRegistry | None = None) -> PolicyCollector:
    """Put the collector into ``registry`` (default: prometheus_client's), once."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        if registry not in _registered:
            registry.register(_collector)
            _registered.add(registry)
    return _collector


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: scrapes come every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """prometheus_client's WSGI app, plus ``/loops``: the leak report as text."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") == "/loops":
            body = leak_report().encode()
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [body]
        return metrics(environ, start_response)

    return app


def serve(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve ``/metrics`` (and ``/loops``) of ``registry`` on ``addr:port`` in a thread.

    prometheus_client's WSGI app and threading server, as its ``start_http_server`` uses them,
    with one more page. Binds loopback unless told otherwise. Returns the server (its
    ``server_port`` is the port when ``port`` is 0), or None if it could not start: that
    failure is counted and logged, never raised, since a policy call must not fail over it.
    """
    registry = REGISTRY if registry is None else registry
    with _lock:
        server = _servers.get((addr, port))
        if server is not None:
            return server
        try:

            class Server(ThreadingWSGIServer):
                address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET

            server = make_server(addr, port, make_app(registry), Server, _QuietHandler)
        except Exception as failure:
            record_internal_error("http_server", failure)
            return None
        name = f"tracedpolicy-metrics-{server.server_port}"
        threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
        _servers[(addr, port)] = _servers[(addr, server.server_port)] = server
        return server


def shutdown_servers() -> None:
    """Stop every server :func:`serve` started."""
    with _lock:
        servers = {id(server): server for server in _servers.values()}.values()
        _servers.clear()
    for server in servers:
        server.shutdown()
        server.server_close()
