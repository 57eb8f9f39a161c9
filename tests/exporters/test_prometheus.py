"""Prometheus: the same numbers as OpenTelemetry, from the registry and from a real scrape."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.exporters import prometheus
from tracedpolicy.records.sites import class_name

from ..conftest import Telemetry
from ..outcomes import in_thread

DefaultPolicy: Any = RUNNING.default_policy

#: OpenTelemetry instrument -> Prometheus metric, the issue's table.
NAMES = {
    "asyncio.loop.created": "asyncio_loop_created_total",
    "asyncio.loop.closed": "asyncio_loop_closed_total",
    "asyncio.loop.open": "asyncio_loop_open",
    "asyncio.policy.get_event_loop.calls": "asyncio_policy_get_event_loop_calls_total",
    "asyncio.policy.set_event_loop.calls": "asyncio_policy_set_event_loop_calls_total",
    "tracedpolicy.internal_errors": "tracedpolicy_internal_errors_total",
}
HISTOGRAMS = {
    "asyncio.loop.lifetime": "asyncio_loop_lifetime_seconds",
    "asyncio.policy.new_event_loop.duration": "asyncio_policy_new_event_loop_duration_seconds",
}


def missed_then_set(policy: Any) -> Any:
    """A get that finds no loop (a miss), then a new loop made and set by hand."""
    with contextlib.suppress(RuntimeError):
        policy.get_event_loop()
    loop = policy.new_event_loop()
    policy.set_event_loop(loop)
    return loop


def scripted_workload(policy: Any) -> list[Any]:
    """Hits, misses, an implicit creation, sets and clears over three threads; one loop leaks."""
    if RUNNING.creates_loops_implicitly:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            main_loop = policy.get_event_loop()  # created implicitly in the main thread
    else:  # 3.14+: a miss instead, then a loop set by hand
        main_loop = missed_then_set(policy)
    for _ in range(7):
        policy.get_event_loop()

    def worker(leak: bool) -> Any:
        loop = missed_then_set(policy)
        for _ in range(11):
            policy.get_event_loop()
        policy.set_event_loop(None)
        if not leak:
            loop.close()
        return loop

    kept = [in_thread(lambda: worker(False)), in_thread(lambda: worker(True))]
    main_loop.close()
    return kept


def named(labels: dict[str, str], creator: str) -> bool:
    """Whether a sample is about ``creator`` (``creator`` on loops, ``policy`` on calls)."""
    return labels.get("creator", labels.get("policy")) == creator


def prometheus_samples(
    text: str, creator: str
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            if ("creator" in labels or "policy" in labels) and not named(labels, creator):
                continue
            samples[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return samples


@pytest.fixture
def server(telemetry: Telemetry) -> Iterator[Any]:
    http = prometheus.serve(0, registry=telemetry.registry)
    assert http is not None
    yield http
    prometheus.shutdown_servers()


def test_otel_prometheus_and_an_http_scrape_show_the_same_numbers(
    telemetry: Telemetry, server: Any
) -> None:
    label = "tests.prometheus.same"
    kept = scripted_workload(TracedEventLoopPolicy(DefaultPolicy(), label=label))
    port = server.server_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        scraped = prometheus_samples(response.read().decode(), label)
    from_registry = prometheus_samples(generate_latest(telemetry.registry).decode(), label)
    assert scraped == from_registry

    for otel_name, prometheus_name in NAMES.items():
        ours = otel_name.startswith("asyncio")
        points = telemetry.points(otel_name, label if ours else None)
        assert points or not ours, otel_name
        for attributes, value in points.items():
            assert from_registry[(prometheus_name, attributes)] == value, (otel_name, attributes)
    for otel_name, prometheus_name in HISTOGRAMS.items():
        for attributes, (count, total, _buckets) in telemetry.points(otel_name, label).items():
            assert from_registry[(f"{prometheus_name}_count", attributes)] == count
            assert from_registry[(f"{prometheus_name}_sum", attributes)] == pytest.approx(total)

    loop_class = class_name(type(kept[0]))
    on_loop = (("creator", label), ("loop_class", loop_class), ("origin", "policy"))
    assert from_registry[("asyncio_loop_created_total", on_loop)] == 3
    assert from_registry[("asyncio_loop_closed_total", on_loop)] == 2
    assert from_registry[("asyncio_loop_open", on_loop)] == 1
    calls = "asyncio_policy_get_event_loop_calls_total"

    def get(result: str) -> float:
        return from_registry[(calls, (("policy", label), ("result", result)))]

    implicit = RUNNING.creates_loops_implicitly
    assert (get("hit"), get("created"), get("miss")) == ((29, 1, 2) if implicit else (29, 0, 3))
    kept[1].close()


def test_every_metric_has_help_and_passes_promtool(telemetry: Telemetry) -> None:
    for loop in scripted_workload(
        TracedEventLoopPolicy(DefaultPolicy(), label="tests.prometheus.promtool")
    ):
        loop.close()
    text = generate_latest(telemetry.registry).decode()
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {
        "asyncio_loop_created",
        "asyncio_loop_open",
        "asyncio_loop_lifetime_seconds",
        "asyncio_policy_new_event_loop_duration_seconds",
        "tracedpolicy_internal_errors",
    }
    assert all(family.documentation for family in families)
    promtool = shutil.which("promtool")
    if promtool is None:
        assert not os.environ.get("TRACEDPOLICY_REQUIRE_PROMTOOL"), "promtool is required here"
        return
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_collector_is_registered_once_per_registry_however_many_policies() -> None:
    registry = CollectorRegistry()
    for index in range(5):
        TracedEventLoopPolicy(
            DefaultPolicy(), label=f"tests.once.{index}", prometheus_registry=registry
        )
    prometheus.register(registry)
    names = [f.name for f in text_string_to_metric_families(generate_latest(registry).decode())]
    assert len(names) == len(set(names))
    assert "asyncio_loop_created" in names


def test_label_cardinality_is_bounded_by_classes_not_by_threads_or_loops(
    telemetry: Telemetry,
) -> None:
    label = "tests.prometheus.cardinality"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)

    def churn() -> None:
        for _ in range(5):
            loop = policy.new_event_loop()
            policy.set_event_loop(loop)
            policy.get_event_loop()
            policy.set_event_loop(None)
            loop.close()

    threads = [threading.Thread(target=churn, name=f"churn-{i}") for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = prometheus_samples(generate_latest(telemetry.registry).decode(), label)
    ours = [key for key in samples if named(dict(key[1]), label)]
    label_values = {value for _, labels in ours for _, value in labels}
    assert not any(value.startswith("churn-") for value in label_values)
    gets = [key for key in ours if key[0] == "asyncio_policy_get_event_loop_calls_total"]
    assert len(gets) == 3  # hit, created, miss: after 200 loops in 40 threads
    assert (
        samples[
            (
                "asyncio_loop_created_total",
                next(k[1] for k in ours if k[0] == "asyncio_loop_created_total"),
            )
        ]
        == 200
    )


def test_metrics_server_binds_loopback_by_default(telemetry: Telemetry, server: Any) -> None:
    assert server.server_address[0] == "127.0.0.1"


def test_otel_names_map_to_ours_under_opentelemetrys_own_prometheus_exporter(
    telemetry: Telemetry,
) -> None:
    """OpenTelemetry's Prometheus exporter turns our instruments into our Prometheus names."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    reader = PrometheusMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    label = "tests.prometheus.otel-exporter"
    try:
        policy = TracedEventLoopPolicy(
            DefaultPolicy(),
            label=label,
            meter_provider=meter_provider,
            prometheus_registry=telemetry.registry,
        )
        scripted_workload(policy)[1].close()
        theirs = {
            (family.name, family.type): {
                tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel_")))
                for s in family.samples
                if named(s.labels, label)
            }
            for family in reader._collector.collect()
        }
        ours = {
            (family.name, family.type): {
                tuple(sorted(s.labels.items())) for s in family.samples if named(s.labels, label)
            }
            for family in text_string_to_metric_families(
                generate_latest(telemetry.registry).decode()
            )
        }
        for key, label_sets in ours.items():
            if label_sets:
                assert theirs.get(key) == label_sets, key
    finally:
        meter_provider.shutdown()  # the reader takes its collector out of REGISTRY


def test_a_worker_file_still_being_made_does_not_fail_the_merged_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prometheus_client creates a worker's file empty, then sizes it: a scrape in between."""
    from wsgiref.util import setup_testing_defaults

    from tracedpolicy.exporters.prometheus import make_app

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    (tmp_path / "counter_4242.db").write_bytes(b"")
    environ: dict[str, Any] = {"PATH_INFO": "/metrics"}
    setup_testing_defaults(environ)
    statuses: list[str] = []
    body = b"".join(
        make_app(CollectorRegistry())(environ, lambda status, *_: statuses.append(status))
    )
    assert statuses == ["200 OK"] and b"Traceback" not in body
