"""The metrics, defined once: names, units, help, labels, and how each is read from the recorders.

Both exporters take everything from here, so OpenTelemetry and Prometheus cannot drift apart:
:mod:`tracedpolicy.otel` turns :func:`samples` into observations, :mod:`tracedpolicy.prometheus`
into metric families. Prometheus names follow from the OpenTelemetry ones by the standard rules
(dots to underscores, ``_seconds`` for unit ``s``, ``_total`` added to counters on exposition).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tracedpolicy.errors import internal_errors
from tracedpolicy.loops import LEAK_REASONS
from tracedpolicy.loops import REGISTRY as LOOPS
from tracedpolicy.recorder import POLICY, policy_replacements, recorders
from tracedpolicy.stats import CREATION_SECONDS, LIFETIME_SECONDS

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
    """``counter``, ``gauge`` (an OpenTelemetry up-down counter) or ``histogram``."""
    unit: str
    help: str
    labels: tuple[str, ...]


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

#: The buckets of each histogram, the same for every exporter.
BUCKETS = {CREATION_DURATION: CREATION_SECONDS, LOOP_LIFETIME: LIFETIME_SECONDS}

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
)


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
