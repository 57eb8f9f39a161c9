"""The metrics, defined once: names, units, help, labels, and how each is read from the recorders.

Both exporters take everything from here, so OpenTelemetry and Prometheus cannot drift apart:
:mod:`tracedpolicy.exporters.otel` turns :func:`samples` into observations,
:mod:`tracedpolicy.exporters.prometheus` into metric families. Prometheus names follow from the
OpenTelemetry ones by the standard rules (dots to underscores, ``_seconds`` for unit ``s``,
``_total`` added to counters on exposition).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tracedpolicy.health import monitor as health
from tracedpolicy.records.errors import internal_errors
from tracedpolicy.records.events import POLICY
from tracedpolicy.records.loops import REGISTRY as LOOPS
from tracedpolicy.records.record import LEAK_REASONS
from tracedpolicy.records.recorder import policy_replacements, recorders
from tracedpolicy.records.stats import CREATION_SECONDS, LIFETIME_SECONDS

#: Where each loop came from (origin: policy, loop_factory or constructor; creator: the policy's
#: class, the factory or the loop class) and what it is.
LOOP_LABELS = ("origin", "creator", "loop_class")


@dataclass(frozen=True)
class Metric:
    """One metric, as both exporters show it."""

    otel_name: str
    prometheus_name: str
    """The family name; a counter's samples end in ``_total``."""
    kind: str
    """``counter``, ``gauge`` (an OpenTelemetry up-down counter), ``ratio`` (an OpenTelemetry
    gauge: a share from 0 to 1) or ``histogram``."""
    unit: str
    help: str
    labels: tuple[str, ...]
    multiprocess_mode: str = "livesum"
    """How prometheus_client's multi-process mode merges a gauge's processes."""


LOOPS_CREATED = Metric(
    "asyncio.loop.created",
    "asyncio_loop_created",
    "counter",
    "{loop}",
    "Event loops made through traced policies, loop factories and loop constructors.",
    LOOP_LABELS,
)
LOOPS_CLOSED = Metric(
    "asyncio.loop.closed",
    "asyncio_loop_closed",
    "counter",
    "{loop}",
    "Traced event loops that were closed.",
    LOOP_LABELS,
)
LOOPS_OPEN = Metric(
    "asyncio.loop.open",
    "asyncio_loop_open",
    "gauge",
    "{loop}",
    "Traced event loops neither closed nor leaked.",
    LOOP_LABELS,
)
LOOPS_LEAKED = Metric(
    "asyncio.loop.leaked",
    "asyncio_loop_leaked",
    "counter",
    "{loop}",
    "Traced event loops leaked: gc_unclosed, thread_exit or open_at_exit.",
    (*LOOP_LABELS, "reason"),
)
LOOP_LIFETIME = Metric(
    "asyncio.loop.lifetime",
    "asyncio_loop_lifetime_seconds",
    "histogram",
    "s",
    "How long traced event loops lived, recorded when they close.",
    LOOP_LABELS,
)
GET_CALLS = Metric(
    "asyncio.policy.get_event_loop.calls",
    "asyncio_policy_get_event_loop_calls",
    "counter",
    "{call}",
    "get_event_loop() calls by result: hit, created (implicitly) or miss.",
    ("policy", "result"),
)
SET_CALLS = Metric(
    "asyncio.policy.set_event_loop.calls",
    "asyncio_policy_set_event_loop_calls",
    "counter",
    "{call}",
    "set_event_loop() calls by action: set a loop, or clear (None).",
    ("policy", "action"),
)
CREATION_DURATION = Metric(
    "asyncio.policy.new_event_loop.duration",
    "asyncio_policy_new_event_loop_duration_seconds",
    "histogram",
    "s",
    "How long the base policy, factory or constructor took to make an event loop.",
    LOOP_LABELS,
)
INTERNAL_ERRORS = Metric(
    "tracedpolicy.internal_errors",
    "tracedpolicy_internal_errors",
    "counter",
    "{error}",
    "Failures of tracedpolicy's own telemetry; policy calls were unaffected.",
    ("kind",),
)

POLICY_REPLACED = Metric(
    "tracedpolicy.policy.replaced",
    "tracedpolicy_policy_replaced",
    "counter",
    "{policy}",
    "Times the traced process-wide policy was replaced (outside the whole-process mode).",
    ("policy",),
)

# Loop health (opt-in): OpenTelemetry's Node.js event loop conventions (nodejs.eventloop.*)
# translated to asyncio, with the loop labels above.

EVENTLOOP_DELAY = Metric(
    "asyncio.eventloop.delay",
    "asyncio_eventloop_delay_seconds",
    "histogram",
    "s",
    "How late each running loop ran its health probe: how long a due callback waits.",
    LOOP_LABELS,
)
EVENTLOOP_UTILIZATION = Metric(
    "asyncio.eventloop.utilization",
    "asyncio_eventloop_utilization_ratio",
    "ratio",
    "1",
    "Share of the last second the running loops spent outside their wait for I/O (mean).",
    LOOP_LABELS,
    multiprocess_mode="liveall",
)
EVENTLOOP_TIME = Metric(
    "asyncio.eventloop.time",
    "asyncio_eventloop_time_seconds",
    "counter",
    "s",
    "Time loops spent running (active) and waiting for I/O (idle), where the wait is timed.",
    (*LOOP_LABELS, "state"),
)
EVENTLOOP_BLOCKED = Metric(
    "asyncio.eventloop.blocked",
    "asyncio_eventloop_blocked",
    "counter",
    "{callback}",
    "Callbacks or task steps that held a loop longer than the blocking threshold.",
    LOOP_LABELS,
)
EVENTLOOP_HELD = Metric(
    "asyncio.eventloop.held",
    "asyncio_eventloop_held",
    "gauge",
    "{loop}",
    "Loops held past the blocking threshold right now.",
    LOOP_LABELS,
)
EVENTLOOP_TASKS = Metric(
    "asyncio.eventloop.tasks",
    "asyncio_eventloop_tasks",
    "gauge",
    "{task}",
    "Tasks not done on the watched loops still open (each loop counted at most every 10 s).",
    LOOP_LABELS,
)
EVENTLOOP_PENDING_AGE = Metric(
    "asyncio.eventloop.pending.age",
    "asyncio_eventloop_pending_age_seconds",
    "gauge",
    "s",
    "How long the oldest callback due on a held loop has waited to run (0: none is held).",
    LOOP_LABELS,
    multiprocess_mode="livemax",
)

#: The buckets of each histogram, the same for every exporter.
BUCKETS = {
    CREATION_DURATION: CREATION_SECONDS,
    LOOP_LIFETIME: LIFETIME_SECONDS,
    EVENTLOOP_DELAY: health.DELAY_SECONDS,
}

ALL = (
    LOOPS_CREATED,
    LOOPS_CLOSED,
    LOOPS_OPEN,
    LOOPS_LEAKED,
    LOOP_LIFETIME,
    GET_CALLS,
    SET_CALLS,
    CREATION_DURATION,
    INTERNAL_ERRORS,
    POLICY_REPLACED,
    EVENTLOOP_DELAY,
    EVENTLOOP_UTILIZATION,
    EVENTLOOP_TIME,
    EVENTLOOP_BLOCKED,
    EVENTLOOP_HELD,
    EVENTLOOP_TASKS,
    EVENTLOOP_PENDING_AGE,
)
HEALTH = ALL[-7:]


def samples(metric: Metric) -> Iterator[tuple[dict[str, str], Any]]:
    """Each label set of ``metric`` and its value now (a HistogramSnapshot for histograms)."""
    if metric is INTERNAL_ERRORS:
        for kind, value in internal_errors().items():
            yield {"kind": kind}, value
        return
    if metric is POLICY_REPLACED:
        for policy, value in policy_replacements().items():
            yield {"policy": policy}, value
        return
    if metric in HEALTH:
        yield from _health_samples(metric)
        return
    if metric in (LOOPS_CLOSED, LOOPS_OPEN, LOOPS_LEAKED):
        LOOPS.sweep()  # closes no hook could see, and leaks queued since the last look
    for recorder in recorders():
        if metric in (GET_CALLS, SET_CALLS):
            if recorder.origin != POLICY:
                continue  # only policies are called for loops
            policy = recorder.creator
            if metric is GET_CALLS:
                for result in ("hit", "created", "miss"):
                    value = recorder.call_count(f"get_event_loop.{result}")
                    yield {"policy": policy, "result": result}, value
            else:
                for action in ("set", "clear"):
                    value = recorder.call_count(f"set_event_loop.{action}")
                    yield {"policy": policy, "action": action}, value
            continue
        for loop_class, stats in recorder.loop_classes().items():
            labels = {
                "origin": recorder.origin,
                "creator": recorder.creator,
                "loop_class": loop_class,
            }
            if metric is LOOPS_LEAKED:
                for reason in LEAK_REASONS:
                    yield {**labels, "reason": reason}, stats.leaked[reason].value
            elif metric is LOOPS_CREATED:
                yield labels, stats.created.value
            elif metric is LOOPS_CLOSED:
                yield labels, stats.closed.value
            elif metric is LOOPS_OPEN:
                yield labels, stats.open
            elif metric is LOOP_LIFETIME:
                yield labels, stats.lifetime_seconds.snapshot()
            elif metric is CREATION_DURATION:
                yield labels, stats.creation_seconds.snapshot()


def _health_samples(metric: Metric) -> Iterator[tuple[dict[str, str], Any]]:
    """Loop health's label sets and values (none at all until health was turned on)."""
    if metric is EVENTLOOP_TIME:
        for labels, active, idle in health.time_spent():
            yield {**_named(labels), "state": "active"}, active
            yield {**_named(labels), "state": "idle"}, idle
        return
    readers = {
        EVENTLOOP_UTILIZATION: health.utilization,
        EVENTLOOP_HELD: health.held,
        EVENTLOOP_TASKS: health.tasks,
        EVENTLOOP_PENDING_AGE: health.pending_age,
    }
    if metric in readers:
        for labels, value in readers[metric]():
            yield _named(labels), value
        return
    for labels, totals in health.totals().items():
        if metric is EVENTLOOP_DELAY:
            yield _named(labels), totals.delay.snapshot()
        elif metric is EVENTLOOP_BLOCKED:
            yield _named(labels), totals.blocked


def _named(labels: health.Labels) -> dict[str, str]:
    return dict(zip(LOOP_LABELS, labels))
