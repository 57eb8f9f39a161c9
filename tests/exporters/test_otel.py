"""OpenTelemetry spans and metrics, asserted with the real SDK's in-memory exporter and reader."""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import warnings
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records.sites import class_name
from tracedpolicy.sources.policy import HIT_SAMPLER

from ..conftest import Telemetry, restore_exporters
from ..outcomes import in_thread
from ..sources.test_factory import run_with

DefaultPolicy: Any = RUNNING.default_policy


def attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_creation_set_and_miss_spans_have_exact_names_and_attributes(
    telemetry: Telemetry,
) -> None:
    label = "tests.otel.spans"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    loop = policy.new_event_loop()
    policy.set_event_loop(loop)
    assert policy.get_event_loop() is loop  # a hit: counted, no span by default
    policy.set_event_loop(None)
    events: list[tracedpolicy.PolicyEvent] = []
    tracedpolicy.add_observer(events.append)
    try:
        with pytest.raises(RuntimeError) as miss:
            in_thread(policy.get_event_loop, name="otel-worker")
    finally:
        tracedpolicy.remove_observer(events.append)
    loop.close()

    spans = telemetry.spans(label)
    assert [span.name for span in spans] == [
        "asyncio.policy.new_event_loop",
        "asyncio.policy.set_event_loop",
        "asyncio.policy.set_event_loop",
        "asyncio.policy.get_event_loop",
    ]
    assert all(span.kind is SpanKind.INTERNAL for span in spans)
    assert {span.instrumentation_scope.name for span in spans} == {"tracedpolicy"}  # type: ignore[union-attr]
    main = {"thread.id": threading.get_ident(), "thread.name": "MainThread"}
    of_policy = {
        "asyncio.loop.origin": "policy",
        "asyncio.loop.creator": label,
        "asyncio.policy.class": label,
    }
    on_loop = {
        **of_policy,
        "asyncio.loop.class": class_name(type(loop)),
        "asyncio.loop.id": attributes(spans[0])["asyncio.loop.id"],
        **main,
    }
    assert attributes(spans[0]) == on_loop
    assert attributes(spans[1]) == {**on_loop, "asyncio.policy.action": "set"}
    assert attributes(spans[2]) == {
        **of_policy,
        "asyncio.policy.action": "clear",
        **main,
    }
    message = "There is no current event loop in thread 'otel-worker'."
    missed = spans[3]
    assert attributes(missed)["asyncio.policy.result"] == "miss"
    assert attributes(missed)["thread.name"] == "otel-worker"
    assert attributes(missed)["thread.id"] != threading.get_ident()
    assert missed.status.status_code is StatusCode.ERROR
    assert missed.status.description == f"RuntimeError: {message}"
    assert [event.name for event in missed.events] == ["exception"]
    assert missed.events[0].attributes["exception.type"] == "RuntimeError"  # type: ignore[index]
    assert missed.events[0].attributes["exception.message"] == message  # type: ignore[index]
    assert str(miss.value) == message
    (missed_event,) = [event for event in events if event.result == "miss"]
    assert missed_event.error is miss.value  # the very exception object the caller got


@pytest.mark.skipif(
    not RUNNING.creates_loops_implicitly,
    reason="no implicit loop creation here (3.14+)",
)
def test_implicit_creation_nests_new_and_set_spans_under_the_get_span(
    telemetry: Telemetry, loops: list[Any]
) -> None:
    label = "tests.otel.implicit"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loops.append(policy.get_event_loop())
    new, set_, get = telemetry.spans(label)
    assert (new.name, set_.name, get.name) == (
        "asyncio.policy.new_event_loop",
        "asyncio.policy.set_event_loop",
        "asyncio.policy.get_event_loop",
    )
    assert new.parent is not None and new.parent.span_id == get.context.span_id
    assert set_.parent is not None and set_.parent.span_id == get.context.span_id
    assert attributes(get)["asyncio.policy.result"] == "created"
    assert attributes(get)["asyncio.loop.id"] == attributes(new)["asyncio.loop.id"]
    assert get.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(("options", "expected"), [({}, 0), ({"get_spans": "all"}, 50)])
def test_hit_spans_are_off_by_default_and_on_when_asked(
    telemetry: Telemetry, loops: list[Any], options: dict[str, Any], expected: int
) -> None:
    label = f"tests.otel.hits.{len(options)}"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label, **options)
    loop = policy.new_event_loop()
    loops.append(loop)
    policy.set_event_loop(loop)
    for _ in range(50):
        policy.get_event_loop()
    hits = [s for s in telemetry.spans(label) if s.name == "asyncio.policy.get_event_loop"]
    assert len(hits) == expected
    assert all(attributes(s)["asyncio.policy.result"] == "hit" for s in hits)


def test_sampled_hit_spans_follow_the_rate(telemetry: Telemetry, loops: list[Any]) -> None:
    label = "tests.otel.sampled"
    policy = TracedEventLoopPolicy(
        DefaultPolicy(), label=label, get_spans="sampled", get_span_sample_rate=0.25
    )
    loop = policy.new_event_loop()
    loops.append(loop)
    policy.set_event_loop(loop)
    draws = random.Random(20261125)
    expected = sum(draws.random() < 0.25 for _ in range(400))
    HIT_SAMPLER.seed(20261125)
    for _ in range(400):
        policy.get_event_loop()
    hits = [s for s in telemetry.spans(label) if s.name == "asyncio.policy.get_event_loop"]
    assert len(hits) == expected and 60 < expected < 140


def test_asyncio_run_counts_one_loop_created_set_cleared_and_closed(
    telemetry: Telemetry,
) -> None:
    label = "tests.otel.run"
    tracedpolicy.install(DefaultPolicy(), label=label)

    async def main() -> str:
        return class_name(type(asyncio.get_running_loop()))

    loop_class = asyncio.run(main())
    on_loop = (("creator", label), ("loop_class", loop_class), ("origin", "policy"))
    assert telemetry.points("asyncio.loop.created", label) == {on_loop: 1}
    assert telemetry.points("asyncio.loop.closed", label) == {on_loop: 1}
    assert telemetry.points("asyncio.loop.open", label) == {on_loop: 0}
    sets = telemetry.points("asyncio.policy.set_event_loop.calls", label)
    assert sets == {
        (("action", "clear"), ("policy", label)): 1,
        (("action", "set"), ("policy", label)): 1,
    }
    ((lifetime_count, lifetime_sum, _),) = telemetry.points("asyncio.loop.lifetime", label).values()
    assert lifetime_count == 1 and lifetime_sum > 0
    ((creation_count, _, _),) = telemetry.points(
        "asyncio.policy.new_event_loop.duration", label
    ).values()
    assert creation_count == 1
    assert [s.name for s in telemetry.spans(label)] == [
        "asyncio.policy.new_event_loop",
        "asyncio.policy.set_event_loop",
        "asyncio.policy.set_event_loop",
    ]


def test_loop_factory_loops_get_their_own_span_name_and_metrics(telemetry: Telemetry) -> None:
    label = "tests.otel.factory"
    loop = run_with(tracedpolicy.loop_factory(label=label))
    (span,) = telemetry.spans(label)
    assert span.name == "asyncio.loop_factory.new_event_loop"
    assert attributes(span)["asyncio.loop_factory.name"] == label
    assert attributes(span)["asyncio.loop.class"] == class_name(type(loop))
    assert attributes(span)["asyncio.loop.origin"] == "loop_factory"
    on_loop = (
        ("creator", label),
        ("loop_class", class_name(type(loop))),
        ("origin", "loop_factory"),
    )
    assert telemetry.points("asyncio.loop.created", label) == {on_loop: 1}
    assert telemetry.points("asyncio.loop.closed", label) == {on_loop: 1}


def test_loop_ids_are_stable_per_loop_and_never_reused(telemetry: Telemetry) -> None:
    label = "tests.otel.ids"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    seen: list[int] = []
    for _ in range(5):
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        policy.set_event_loop(None)
        loop.close()
        del loop  # let the next loop take the same memory address
    for span in telemetry.spans(label):
        seen.append(attributes(span).get("asyncio.loop.id", 0))
    made = seen[0::3]
    assert len(set(made)) == 5 and made == sorted(made)
    assert seen[1::3] == made  # the set span names the loop the new span made


def test_disabled_sdk_records_nothing_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, loops: list[Any]
) -> None:
    """OTEL_SDK_DISABLED makes the SDK's providers no-ops; the policy still works."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    policy = TracedEventLoopPolicy(
        DefaultPolicy(),
        label="tests.otel.disabled",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    try:
        loop = policy.new_event_loop()
        loops.append(loop)
        policy.set_event_loop(loop)
        assert policy.get_event_loop() is loop
        assert exporter.get_finished_spans() == ()
        data = reader.get_metrics_data()
        assert data is None or all(not rm.scope_metrics for rm in data.resource_metrics)
        assert tracedpolicy.snapshot()["policy tests.otel.disabled"]["loops.created"] == 1
    finally:
        restore_exporters()


def test_a_leak_is_a_span_linked_to_the_loops_creation_span(telemetry: Telemetry) -> None:
    label = "tests.otel.leak"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        policy.new_event_loop()
        gc.collect()
    # The collection counts what the GC callback queued, and traces it.
    leaked = telemetry.points("asyncio.loop.leaked", label)
    created, leak = telemetry.spans(label)
    assert (created.name, leak.name) == ("asyncio.policy.new_event_loop", "asyncio.loop.leak")
    assert [link.context for link in leak.links] == [created.context]
    leak_attributes = attributes(leak)
    assert leak_attributes.pop("asyncio.loop.leak.reason") == "gc_unclosed"
    assert leak_attributes.pop("code.function") == (
        "test_a_leak_is_a_span_linked_to_the_loops_creation_span"
    )
    assert leak_attributes.pop("code.filepath") == __file__
    assert isinstance(leak_attributes.pop("code.lineno"), int)
    assert leak_attributes == attributes(created)  # the creation span's own attributes
    on_loop = (
        ("creator", label),
        ("loop_class", attributes(created)["asyncio.loop.class"]),
        ("origin", "policy"),
        ("reason", "gc_unclosed"),
    )
    assert leaked[on_loop] == 1


def test_a_leak_span_is_a_root_whatever_span_was_current(telemetry: Telemetry) -> None:
    label = "tests.otel.leak-root"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        policy.new_event_loop()
        gc.collect()  # the leak is queued, to be counted at the next look
    tracer = telemetry.tracer_provider.get_tracer("an application")
    with tracer.start_as_current_span("request-42"):
        telemetry.points("asyncio.loop.leaked")  # a collection, inside the user's span
    (leak,) = [s for s in telemetry.spans(label) if s.name == "asyncio.loop.leak"]
    assert leak.parent is None
    assert len(leak.links) == 1
