"""OpenTelemetry: spans for the rare policy calls, and instruments that read the recorders.

Only the OpenTelemetry *API* is used here, so with no SDK configured everything is a no-op
proxy that binds once a real provider is set. Counts are observable instruments whose callbacks
read :mod:`tracedpolicy.records.recorder` at collection time; nothing calls the SDK on a
get_event_loop hit. The two histograms are recorded when a loop is made or closed, which is rare.

Instrument names map to the Prometheus names of :mod:`tracedpolicy.exporters.prometheus` by the
standard OpenTelemetry-to-Prometheus rules (dots to underscores, ``_total`` for counters,
``_seconds`` for unit ``s``), with the same attribute keys as label names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Callable

from opentelemetry import context, metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from tracedpolicy.base.version import __version__
from tracedpolicy.exporters.metrics import (
    ALL,
    CREATION_DURATION,
    EVENTLOOP_DELAY,
    LOOP_LIFETIME,
    Metric,
    samples,
)
from tracedpolicy.health import monitor as health
from tracedpolicy.records import events
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.events import (
    CONSTRUCTOR,
    GET_EVENT_LOOP,
    LOOP_CLOSED,
    LOOP_FACTORY,
    LOOP_LEAKED,
    NEW_EVENT_LOOP,
    ORIGINS,
    POLICY,
    SET_EVENT_LOOP,
    Operation,
    PolicyEvent,
)
from tracedpolicy.records.record import LoopRecord
from tracedpolicy.records.stats import CREATION_SECONDS, LIFETIME_SECONDS

INSTRUMENTATION_NAME = "tracedpolicy"

SPAN_NAMES = {
    (POLICY, NEW_EVENT_LOOP): "asyncio.policy.new_event_loop",
    (POLICY, GET_EVENT_LOOP): "asyncio.policy.get_event_loop",
    (POLICY, SET_EVENT_LOOP): "asyncio.policy.set_event_loop",
    (LOOP_FACTORY, NEW_EVENT_LOOP): "asyncio.loop_factory.new_event_loop",
    (CONSTRUCTOR, NEW_EVENT_LOOP): "asyncio.loop.create",
    **{(origin, LOOP_LEAKED): "asyncio.loop.leak" for origin in ORIGINS},
}

#: The attribute that also names the creator, by origin (a constructor's is the loop class).
_CREATOR_ATTRIBUTES = {POLICY: "asyncio.policy.class", LOOP_FACTORY: "asyncio.loop_factory.name"}


def span_attributes(event: PolicyEvent) -> dict[str, Any]:
    """The attributes of a span about ``event``."""
    attributes: dict[str, Any] = {
        "asyncio.loop.origin": event.origin,
        "asyncio.loop.creator": event.creator,
        "thread.id": event.thread_id,
        "thread.name": event.thread_name,
    }
    if event.origin in _CREATOR_ATTRIBUTES:
        attributes[_CREATOR_ATTRIBUTES[event.origin]] = event.creator
    if event.loop_class is not None:
        attributes["asyncio.loop.class"] = event.loop_class
    if event.loop_id is not None:
        attributes["asyncio.loop.id"] = event.loop_id
    if event.kind == GET_EVENT_LOOP and event.result is not None:
        attributes["asyncio.policy.result"] = event.result
    elif event.kind == LOOP_LEAKED:
        attributes["asyncio.loop.leak.reason"] = event.result
        site = event.record.site if event.record is not None else None
        if site is not None:
            attributes["code.filepath"] = site.filename
            attributes["code.lineno"] = site.lineno
            attributes["code.function"] = site.function
    elif event.result is not None:
        attributes["asyncio.policy.action"] = event.result
    return attributes


class SpanHook:
    """Spans around the rare calls: started before the base runs, so nested calls nest.

    Until an SDK provider is set, the global API tracer hands out only non-recording spans:
    they are skipped, so tracing costs next to nothing before an SDK is there.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def _enabled(self) -> bool:
        # A global ProxyTracer answers with its NoOpTracer until an SDK provider is set.
        return not isinstance(getattr(self.tracer, "_tracer", self.tracer), trace.NoOpTracer)

    def start(self, operation: Operation) -> Any:
        if not self._enabled():
            return None
        span = self.tracer.start_span(
            SPAN_NAMES[(operation.recorder.origin, operation.kind)], kind=SpanKind.INTERNAL
        )
        if operation.kind != GET_EVENT_LOOP:
            return span, None  # a leaf: nothing nests under new or set
        # A get may create a loop implicitly; its new and set spans nest under it.
        return span, context.attach(trace.set_span_in_context(span))

    def span_context(self, handle: Any) -> Any:
        return handle[0].get_span_context() if isinstance(handle, tuple) else None

    def end(self, handle: Any, event: PolicyEvent | None) -> None:
        if handle is None:
            if event is None or not self._enabled():
                return
            # A leak is noticed wherever the process happens to be (in some request's span): it
            # is a root span of its own, linked to its loop's creation span.
            creation = event.record.span_context if event.record is not None else None
            span: Any = self.tracer.start_span(
                SPAN_NAMES[(event.origin, event.kind)],
                context=context.Context(),
                kind=SpanKind.INTERNAL,
                start_time=event.start_ns,
                links=[trace.Link(creation)] if creation is not None else None,
            )
            token = None
        else:
            span, token = handle
        try:
            if token is not None:
                context.detach(token)
            if event is not None and span.is_recording():
                span.set_attributes(span_attributes(event))
                if event.error is not None:
                    span.record_exception(event.error)
                    span.set_status(
                        Status(StatusCode.ERROR, f"{type(event.error).__name__}: {event.error}")
                    )
        finally:
            span.end(end_time=event.end_ns if event is not None else None)


def _observe(instruments: Instruments, metric: Metric) -> Callable[..., Any]:
    """A callback that reads ``metric`` while ``instruments`` are the active set."""

    def callback(options: CallbackOptions) -> Iterator[Observation]:
        if not instruments.active:
            return iter(())
        try:
            observations = [Observation(value, labels) for labels, value in samples(metric)]
        except Exception as failure:
            record_internal_error("meter", failure)
            return iter(())
        return iter(observations)

    return callback


class Instruments:
    """The tracedpolicy instruments of one meter."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.meter = meter
        #: Only the newest configured set reports, so a provider never sees stale duplicates.
        self.active = True
        make = {
            "counter": meter.create_observable_counter,
            "gauge": meter.create_observable_up_down_counter,
            "ratio": meter.create_observable_gauge,
        }
        for metric in ALL:
            if metric.kind in make:
                make[metric.kind](
                    metric.otel_name,
                    callbacks=[_observe(self, metric)],
                    unit=metric.unit,
                    description=metric.help,
                )
        # No observable histogram exists: these two are recorded as loops are made and close.
        self.creation = self._histogram(CREATION_DURATION, CREATION_SECONDS)
        self.lifetime = self._histogram(LOOP_LIFETIME, LIFETIME_SECONDS)
        self.delay = self._histogram(EVENTLOOP_DELAY, health.DELAY_SECONDS)

    def _histogram(self, metric: Metric, bounds: tuple[float, ...]) -> metrics.Histogram:
        return self.meter.create_histogram(
            metric.otel_name,
            unit=metric.unit,
            description=metric.help,
            explicit_bucket_boundaries_advisory=bounds,
        )

    def record(self, event: PolicyEvent) -> None:
        """Record the histograms of a loop made or closed (an observer of the recorder)."""
        if not self.active or event.duration is None or event.loop_class is None:
            return
        attributes = {
            "origin": event.origin,
            "creator": event.creator,
            "loop_class": event.loop_class,
        }
        try:
            if event.kind == NEW_EVENT_LOOP:
                self.creation.record(event.duration, attributes)
            elif event.kind == LOOP_CLOSED:
                self.lifetime.record(event.duration, attributes)
        except Exception as failure:
            record_internal_error("meter", failure)

    def record_delay(self, record: LoopRecord, delay: float) -> None:
        """Record one health probe's delay (a delay sink of :mod:`tracedpolicy.health.monitor`)."""
        if self.active:
            attributes = {
                "origin": record.origin,
                "creator": record.creator,
                "loop_class": record.loop_class,
            }
            self.delay.record(delay, attributes)


class HeldSpans:
    """A span for each time a loop is held past the blocking threshold: it starts when the
    probe was due, ends when the loop ran again, links to the loop's creation span, and has an
    event naming what the loop's thread was running when the watchdog looked."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    def held(self, watched: health.LoopHealth, seen: health.Sample | None) -> Any:
        if isinstance(getattr(self.tracer, "_tracer", self.tracer), trace.NoOpTracer):
            return None
        record, since = watched.record, watched.held_since or health.CLOCK()
        creation = record.span_context
        span = self.tracer.start_span(
            "asyncio.eventloop.blocked",
            context=context.Context(),
            kind=SpanKind.INTERNAL,
            start_time=_wall_ns(since),
            links=[trace.Link(creation)] if creation is not None else None,
            attributes={
                "asyncio.loop.origin": record.origin,
                "asyncio.loop.creator": record.creator,
                "asyncio.loop.class": record.loop_class,
                "asyncio.loop.id": record.loop_id,
                "thread.name": record.thread_name,
            },
        )
        event: dict[str, Any] = {"asyncio.eventloop.blocking_threshold": health.threshold()}
        if seen is not None:
            event["code.stacktrace"] = f"{seen.at}\n{seen.runs}"
            if seen.task is not None:
                event["asyncio.task"] = seen.task
            if seen.coroutines:
                event["asyncio.task.coroutines"] = seen.coroutines
            if seen.awaited_by:
                event["asyncio.task.awaited_by"] = seen.awaited_by
        span.add_event("blocked", event)
        return span

    def released(self, span: Any, caught_up: float) -> None:
        span.end(end_time=_wall_ns(caught_up))


def _wall_ns(instant: float) -> int:
    """A :data:`health.CLOCK` instant as span timestamps count (nanoseconds since the epoch)."""
    return time.time_ns() - int((health.CLOCK() - instant) * 1e9)


_instruments: dict[metrics.MeterProvider | None, Instruments] = {}
_active: Instruments | None = None


def configure_tracing(tracer_provider: trace.TracerProvider | None, spans: bool) -> None:
    """Send spans to ``tracer_provider`` (None: the global one), or make none.

    The global providers are API proxies until an SDK is set, and then they bind, so the
    default needs no reconfiguring.
    """
    if not spans:
        events.set_span_hook(None)
        health.set_span_maker(None)
        return
    tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider)
    events.set_span_hook(SpanHook(tracer))
    health.set_span_maker(HeldSpans(tracer))


def configure_metrics(meter_provider: metrics.MeterProvider | None) -> None:
    """Report to ``meter_provider`` (None: the global one); the previous one gets no more."""
    global _active
    instruments = _instruments.get(meter_provider)
    if instruments is None:
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider)
        instruments = _instruments[meter_provider] = Instruments(meter)
        events.add_sink(instruments.record)
        health.add_delay_sink(instruments.record_delay)
    if _active is not None and _active is not instruments:
        _active.active = False
    instruments.active = True
    _active = instruments
