"""Prometheus: a collector over the recorders, and /metrics over HTTP on loopback by default.

The collector builds its families only when scraped (like prometheus_client's GCCollector), so
it costs nothing between scrapes. It is registered once per registry however many traced
policies exist; the ``policy`` label tells them apart.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
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

from tracedpolicy.base import forksafe
from tracedpolicy.exporters import fleet, fleetvalues, metrics, multiprocess
from tracedpolicy.exporters.metrics import ALL, BUCKETS, samples
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.stats import HistogramSnapshot


def _buckets(snapshot: HistogramSnapshot) -> list[tuple[str, float]]:
    return [
        ("+Inf" if bound == float("inf") else repr(bound), count)
        for bound, count in zip(snapshot.bounds, snapshot.cumulative_counts)
    ]


_FAMILIES = {
    "counter": CounterMetricFamily,
    "gauge": GaugeMetricFamily,
    "ratio": GaugeMetricFamily,
    "histogram": HistogramMetricFamily,
}


class PolicyCollector(Collector):
    """Every recorder's numbers as Prometheus metric families."""

    def describe(self) -> list[Metric]:
        # Names only, so registering does not collect.
        return [self._family(metric) for metric in ALL]

    def collect(self) -> Iterator[Metric]:
        try:
            families = [self._filled(metric) for metric in ALL]
        except Exception as failure:
            record_internal_error("collector", failure)
            return iter(())
        return iter(families)

    @staticmethod
    def _family(metric: metrics.Metric) -> Any:
        family_class: Any = _FAMILIES[metric.kind]  # each has add_metric, with its own arguments
        return family_class(metric.prometheus_name, metric.help, labels=metric.labels)

    def _filled(self, metric: metrics.Metric) -> Metric:
        family = self._family(metric)
        for labels, value in samples(metric):
            label_values = [labels[name] for name in metric.labels]
            if metric.kind == "histogram":
                family.add_metric(label_values, _buckets(value), value.sum)
            else:
                family.add_metric(label_values, value)
        filled: Metric = family
        return filled


logger = logging.getLogger("tracedpolicy")

_lock = forksafe.lock()
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
        gathered = fleet.every_process() if fleet.owner() is not None else None
        if environ.get("PATH_INFO") == "/loops":
            from tracedpolicy.exporters.report import fleet_report, leak_report  # when first asked

            text = leak_report() if gathered is None else fleet_report(gathered)
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [text.encode()]
        if gathered is not None:
            merged = CollectorRegistry(auto_describe=False)
            merged.register(_EveryProcessCollector(registry, gathered.values))
            return make_wsgi_app(merged)(environ, start_response)
        if multiprocess.directory() is not None:
            return _every_process(environ, start_response)
        return metrics(environ, start_response)

    return app


class _EveryProcessCollector(Collector):
    """``registry`` as it is, with tracedpolicy's families replaced by the family's merge: the
    serving process's own values and every other process's (see
    :mod:`tracedpolicy.exporters.fleet`)."""

    def __init__(self, registry: CollectorRegistry, values: fleetvalues.Values) -> None:
        self.registry, self.values = registry, values

    def collect(self) -> Iterator[Metric]:
        ours = {metric.prometheus_name for metric in ALL}
        replaced = False
        for found in self.registry.collect():
            if found.name in ours:
                replaced = True
            else:
                yield found
        if replaced:  # tracedpolicy's collector is in this registry: the merge stands for it
            yield from (
                _merged(metric, self.values.get(metric.prometheus_name, {})) for metric in ALL
            )


def _merged(metric: metrics.Metric, entries: dict[str, Any]) -> Metric:
    """One family from merged values; a share (ratio) is told apart by a ``pid`` label."""
    family_class: Any = _FAMILIES[metric.kind]
    names = [*metric.labels, "pid"] if metric.kind == "ratio" else list(metric.labels)
    built = family_class(metric.prometheus_name, metric.help, labels=names)
    for key, value in sorted(entries.items()):
        labels = json.loads(key)
        if len(labels) != len(names):
            continue  # written by another version of tracedpolicy
        if metric.kind == "histogram":
            bounds = (*BUCKETS[metric], float("inf"))
            if len(value[0]) != len(bounds):
                continue
            snapshot = HistogramSnapshot(bounds, tuple(value[0]), value[1], value[0][-1])
            built.add_metric(labels, _buckets(snapshot), value[1])
        else:
            built.add_metric(labels, value)
    result: Metric = built
    return result


def _every_process(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    """The metrics of every process of the multi-process directory, merged (a new registry for
    each scrape, as prometheus_client's multi-process mode asks)."""
    multiprocess.sync()  # this process's own counts, as of now
    registry = multiprocess.registry_of_every_process()
    return make_wsgi_app(registry)(environ, start_response)


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
                thread: threading.Thread | None = None

            server = make_server(addr, port, make_app(registry), Server, _QuietHandler)
        except OSError as failure:
            reason = failure.strerror or str(failure)
            record_internal_error(
                "http_server",
                failure,
                f"no /metrics on {addr}:{port} ({reason}): choose a free port (0: any free"
                " one); tracing goes on",
            )
            return None
        except Exception as failure:
            record_internal_error("http_server", failure)
            return None
        name = f"tracedpolicy-metrics-{server.server_port}"
        server.thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
        server.thread.start()
        _servers[(addr, port)] = _servers[(addr, server.server_port)] = server
        fleet.gather_here()  # the processes this one starts are in its scrape
    _warn_if_reachable(server)
    return server


_warned_reachable = False


def _warn_if_reachable(server: Any) -> None:
    """Say once that a server bound beyond loopback (allowed: metrics_addr says so) is open."""
    global _warned_reachable
    host, port = server.server_address[:2]
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    if not _warned_reachable:
        _warned_reachable = True
        logger.warning(
            "tracedpolicy serves /metrics and /loops on %s:%s, beyond this host: anyone who"
            " reaches it reads loop counts, file paths and thread names",
            host,
            port,
        )


def stop(server: Any) -> None:
    """Stop one server :func:`serve` started, and forget it."""
    with _lock:
        for key in [key for key, value in _servers.items() if value is server]:
            del _servers[key]
        if not _servers:
            fleet.disband()
    server.shutdown()
    server.server_close()
    thread = getattr(server, "thread", None)
    if thread is not None and thread is not threading.current_thread():
        thread.join(5)  # gone when stop() returns: the process's threads are as before


def forget_servers_in_child() -> None:
    """In a forked child: no thread serves, and the parent's listening sockets are closed here."""
    servers = {id(server): server for server in _servers.values()}.values()
    _servers.clear()
    for server in servers:
        with contextlib.suppress(OSError):
            server.socket.close()


def shutdown_servers() -> None:
    """Stop every server :func:`serve` started."""
    with _lock:
        servers = {id(server): server for server in _servers.values()}.values()
        _servers.clear()
        fleet.disband()
    for server in servers:
        server.shutdown()
        server.server_close()
