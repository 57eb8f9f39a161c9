"""Fail-open: a tracer, meter, exporter, collector or HTTP server that fails changes nothing.

Each fault is real where it can be caused (a busy port, a span processor that raises, a
provider whose instruments raise); a monkeypatch stands in only where nothing else can make
the collection path fail.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.metrics import Meter, NoOpMeter, NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records import errors

from ..collecting import InACycle, finishes_with_a_collection_at
from ..conftest import Telemetry, restore_exporters
from ..outcomes import in_thread, observe

DefaultPolicy: Any = RUNNING.default_policy


class FailingTracer(trace.Tracer):
    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("tracer down")

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("tracer down")


class FailingTracerProvider(trace.NoOpTracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return FailingTracer()


class FailingSpanProcessor(SpanProcessor):
    """An exporter that fails as the span ends."""

    def on_end(self, span: ReadableSpan) -> None:
        raise ConnectionError("exporter down")


class FailingMeter(NoOpMeter):
    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("meter down")


class FailingMeterProvider(NoOpMeterProvider):
    def get_meter(self, *args: Any, **kwargs: Any) -> Meter:
        return FailingMeter("failing")


class FailingHistogramMeterProvider(NoOpMeterProvider):
    """Instruments that are made, but whose record() fails."""

    class _Meter(NoOpMeter):
        def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
            class Histogram:
                def record(self, *args: Any, **kwargs: Any) -> None:
                    raise ConnectionError("histogram down")

            return Histogram()

    def get_meter(self, *args: Any, **kwargs: Any) -> Meter:
        return self._Meter("failing-histogram")


@pytest.fixture(autouse=True)
def fresh_error_counts() -> Iterator[None]:
    errors.reset_for_tests()
    yield
    errors.reset_for_tests()
    restore_exporters()


def exercise(policy: Any) -> list[Any]:
    """new, set, hit, clear, miss in a worker, and close: what each returned or raised."""
    loop = policy.new_event_loop()
    outcomes = [
        observe(lambda: policy.set_event_loop(loop)),
        observe(lambda: policy.get_event_loop() is loop),
        observe(lambda: policy.set_event_loop(None)),
        observe(lambda: in_thread(policy.get_event_loop, name="faulty")),
        observe(loop.close),
        observe(loop.is_closed),
    ]
    return outcomes


def expected_outcomes() -> list[Any]:
    return exercise(DefaultPolicy())


def logged(caplog: pytest.LogCaptureFixture, kind: str) -> int:
    return sum(f"tracedpolicy {kind} failed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("provider_option", "make_provider", "kind", "failures"),
    [
        # Four spans per exercise: new, set, clear and the miss.
        ("tracer_provider", FailingTracerProvider, "tracer", 8),
        # Making the instruments fails once; the calls never reach the meter after that.
        ("meter_provider", FailingMeterProvider, "meter", 1),
        # Two histogram records per exercise: the loop's creation and its close.
        ("meter_provider", FailingHistogramMeterProvider, "meter", 4),
    ],
)
def test_failing_providers_change_no_call_and_are_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture,
    provider_option: str,
    make_provider: Any,
    kind: str,
    failures: int,
) -> None:
    with caplog.at_level(logging.ERROR, logger="tracedpolicy"):
        policy = TracedEventLoopPolicy(
            DefaultPolicy(), label=f"tests.faults.{kind}", **{provider_option: make_provider()}
        )
        assert exercise(policy) == expected_outcomes()
        assert exercise(policy) == expected_outcomes()
    assert errors.internal_errors() == {kind: failures}
    assert logged(caplog, kind) == 1


def test_a_failing_span_exporter_changes_no_call(caplog: pytest.LogCaptureFixture) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(FailingSpanProcessor())
    with caplog.at_level(logging.ERROR, logger="tracedpolicy"):
        policy = TracedEventLoopPolicy(
            DefaultPolicy(), label="tests.faults.exporter", tracer_provider=tracer_provider
        )
        assert exercise(policy) == expected_outcomes()
    assert errors.internal_errors()["tracer"] == 4  # new, set, clear and the miss
    assert logged(caplog, "tracer") == 1


def test_a_failing_metric_callback_is_counted_and_the_rest_still_collects(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise MemoryError("cannot list recorders")  # no real way to make this fail

    TracedEventLoopPolicy(DefaultPolicy(), label="tests.faults.callback").new_event_loop().close()
    monkeypatch.setattr(tracedpolicy.metrics, "recorders", broken)
    data = telemetry.reader.get_metrics_data()
    assert data is not None
    assert errors.internal_errors()["meter"] >= 1


def test_a_failing_collector_leaves_the_scrape_working(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> Any:
        raise MemoryError("cannot list recorders")

    monkeypatch.setattr(tracedpolicy.metrics, "recorders", broken)
    text = generate_latest(telemetry.registry).decode()
    assert "asyncio_loop_created" not in text
    assert errors.internal_errors()["collector"] == 1


def test_a_busy_metrics_port_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="tracedpolicy"):
            policy = tracedpolicy.install(
                metrics_port=port, prometheus_registry=CollectorRegistry()
            )
    assert tracedpolicy.is_traced(policy) and RUNNING.get_policy() is policy  # type: ignore[misc]
    assert errors.internal_errors()["http_server"] == 1
    (said,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert said.getMessage() == (
        f"tracedpolicy: no /metrics on 127.0.0.1:{port} (Address already in use): choose a free"
        " port (0: any free one); tracing goes on"
    )
    assert said.exc_info is None  # the traceback only at debug level
    assert tracedpolicy.telemetry.metrics_server() is None


def test_an_unmeasurable_registry_fails_open() -> None:
    """A registry that refuses the collector (a name clash) leaves the policy working."""
    registry = CollectorRegistry()
    registry.register(tracedpolicy.prometheus.PolicyCollector())  # the names are taken
    policy = TracedEventLoopPolicy(
        DefaultPolicy(), label="tests.faults.registry", prometheus_registry=registry
    )
    assert exercise(policy) == expected_outcomes()
    assert errors.internal_errors()["collector"] == 1


class BrokenTracerProvider(trace.NoOpTracerProvider):
    """A provider that fails when asked for a tracer (not only when its spans start)."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        raise ConnectionError("tracer provider down")


def test_a_failing_tracer_provider_fails_alone_and_is_counted_as_a_tracer(
    telemetry: Telemetry,
) -> None:
    label = "tests.errors.tracer-alone"
    policy = TracedEventLoopPolicy(
        DefaultPolicy(),
        label=label,
        tracer_provider=BrokenTracerProvider(),
        meter_provider=telemetry.meter_provider,
    )
    policy.new_event_loop().close()
    assert errors.internal_errors() == {"tracer": 1}
    created = telemetry.points("asyncio.loop.created", label)
    assert list(created.values()) == [1]  # the meter provider was configured all the same


def test_a_collection_while_counting_a_failure_may_count_another() -> None:
    """A ``__del__`` run by a collection inside the count may fail through tracedpolicy too."""
    before = errors.internal_errors()
    assert finishes_with_a_collection_at(
        errors.record_internal_error,
        "_counters.setdefault(kind, Counter())",
        lambda: errors.record_internal_error("tests.outer", RuntimeError("outer")),
        lambda: InACycle(
            lambda: errors.record_internal_error("tests.inner", RuntimeError("inner"))
        ),
    )
    after = errors.internal_errors()
    for kind in ("tests.outer", "tests.inner"):
        assert after[kind] == before.get(kind, 0) + 1
