"""The loop registry: exact closes, abandoned loops, bounded memory, ids never reused."""

from __future__ import annotations

import asyncio
import gc
import warnings
from typing import Any

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy._compat import RUNNING
from tracedpolicy.loops import REGISTRY, class_name

DefaultPolicy: Any = RUNNING.default_policy


def counts(label: str) -> dict[str, int]:
    snapshot = tracedpolicy.snapshot()[label]
    return {key: snapshot[key] for key in ("loops.created", "loops.closed", "loops.open")}


def test_a_close_is_seen_at_once_and_twice_counts_once() -> None:
    label = "tests.loops.close"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    loop = policy.new_event_loop()
    assert counts(label) == {"loops.created": 1, "loops.closed": 0, "loops.open": 1}
    loop.close()
    loop.close()
    assert counts(label) == {"loops.created": 1, "loops.closed": 1, "loops.open": 0}
    assert type(loop).close.__name__ == "close" and hasattr(type(loop).close, "__wrapped__")


def test_an_abandoned_loop_is_not_counted_as_closed() -> None:
    label = "tests.loops.abandoned"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    loop = policy.new_event_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio's "unclosed event loop"
        del loop  # BaseEventLoop.__del__ closes it; that is no close of the user's
        gc.collect()
    assert counts(label) == {"loops.created": 1, "loops.closed": 0, "loops.open": 0}
    stats = tracedpolicy.recorder.recorder_for(label).loop_classes()
    assert [s.leaked["gc_unclosed"].value for s in stats.values()] == [1]


class Immutable(type):
    """A class that refuses new attributes, as an extension type such as a C loop does."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise TypeError(f"cannot set {name!r} attribute of immutable type {cls.__name__!r}")


class ImmutableLoop(asyncio.AbstractEventLoop, metaclass=Immutable):
    """A loop whose close no hook can wrap (its class and its bases' are its own)."""

    def __init__(self) -> None:
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def is_closed(self) -> bool:
        return self._closed


def test_a_close_no_hook_can_see_is_found_when_metrics_are_collected(
    telemetry: Any,
) -> None:
    label = "tests.loops.unhookable"
    loop = tracedpolicy.loop_factory(ImmutableLoop, label=label)()
    record = REGISTRY.record_for(loop, label, tracked=True)
    assert record is not None and not record.close_hooked
    loop.close()
    assert counts(label)["loops.closed"] == 0  # nothing saw it yet
    telemetry.points("asyncio.loop.closed")  # an OpenTelemetry collection sweeps
    assert counts(label) == {"loops.created": 1, "loops.closed": 1, "loops.open": 0}


def test_many_loops_leave_no_records_behind() -> None:
    policy = TracedEventLoopPolicy(DefaultPolicy(), label="tests.loops.many")
    gc.collect()
    before = len(REGISTRY.records())
    for _ in range(2000):
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        policy.set_event_loop(None)
        loop.close()
    del loop
    gc.collect()
    assert len(REGISTRY.records()) == before
    assert counts("tests.loops.many") == {
        "loops.created": 2000,
        "loops.closed": 2000,
        "loops.open": 0,
    }


def test_records_describe_where_and_when_a_loop_was_made() -> None:
    policy = TracedEventLoopPolicy(DefaultPolicy(), label="tests.loops.record")
    loop = policy.new_event_loop()
    try:
        record = REGISTRY.record_for(loop, "ignored", tracked=False)
        assert record is not None
        assert (record.policy, record.loop_class, record.thread_name) == (
            "tests.loops.record",
            class_name(type(loop)),
            "MainThread",
        )
        assert record.tracked and not record.closed and record.age() >= 0
        assert record in REGISTRY.open_records()
    finally:
        loop.close()
    assert record not in REGISTRY.open_records()
    assert record.closed_monotonic is not None
