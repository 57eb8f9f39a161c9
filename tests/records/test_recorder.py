"""The recorder: exact counts across threads, observers, and failures that change nothing."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import PolicyEvent, TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records.errors import internal_errors
from tracedpolicy.records.recorder import Recorder, recorder_for, recorders
from tracedpolicy.records.stats import Counter

from ..collecting import InACycle, finishes_with_a_collection_at
from ..outcomes import in_thread

DefaultPolicy: Any = RUNNING.default_policy


def fresh_policy(label: str) -> Any:
    return TracedEventLoopPolicy(DefaultPolicy(), label=label)


def test_counts_are_exact_under_concurrent_hits() -> None:
    policy = fresh_policy("tests.concurrent-hits")
    threads, hits_each = 8, 5_000

    def hit() -> None:
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        for _ in range(hits_each):
            policy.get_event_loop()
        policy.set_event_loop(None)
        loop.close()

    workers = [threading.Thread(target=hit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert recorder_for("tests.concurrent-hits").snapshot() == {
        "get_event_loop.hit": threads * hits_each,
        "get_event_loop.created": 0,
        "get_event_loop.miss": 0,
        "set_event_loop.set": threads,
        "set_event_loop.clear": threads,
        "loops.created": threads,
        "loops.closed": threads,
        "loops.open": 0,
    }


def test_a_scripted_sequence_is_counted_by_result(loops: list[Any]) -> None:
    policy = fresh_policy("tests.scripted")
    implicit = RUNNING.creates_loops_implicitly
    if implicit:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            loops.append(policy.get_event_loop())  # no loop yet: made implicitly
    else:  # 3.14+: the main thread has no loop until one is set
        with pytest.raises(RuntimeError):
            policy.get_event_loop()
        loops.append(policy.new_event_loop())
        policy.set_event_loop(loops[-1])
    policy.get_event_loop()
    policy.set_event_loop(None)
    with pytest.raises(RuntimeError):
        policy.get_event_loop()
    with pytest.raises(RuntimeError):
        in_thread(policy.get_event_loop)
    counts = recorder_for("tests.scripted").snapshot()
    assert counts["get_event_loop.created"] == (1 if implicit else 0)
    assert counts["get_event_loop.hit"] == 1
    assert counts["get_event_loop.miss"] == (2 if implicit else 3)
    assert counts["set_event_loop.set"] == 1 and counts["set_event_loop.clear"] == 1
    assert counts["loops.created"] == 1


def test_observers_get_every_rare_event_with_its_thread(loops: list[Any]) -> None:
    events: list[PolicyEvent] = []
    tracedpolicy.add_observer(events.append)
    try:
        policy = fresh_policy("tests.observed")
        loop = policy.new_event_loop()
        loops.append(loop)
        policy.set_event_loop(loop)
        policy.get_event_loop()  # a hit: counted, not an event
        policy.set_event_loop(None)
        with pytest.raises(RuntimeError):
            in_thread(policy.get_event_loop, name="observed-worker")
    finally:
        tracedpolicy.remove_observer(events.append)
    assert [(e.kind, e.result, e.loop, e.thread_name, e.is_main_thread) for e in events] == [
        ("new_event_loop", None, loop, "MainThread", True),
        ("set_event_loop", "set", loop, "MainThread", True),
        ("set_event_loop", "clear", None, "MainThread", True),
        ("get_event_loop", "miss", None, "observed-worker", False),
    ]
    assert all((e.origin, e.creator) == ("policy", "tests.observed") for e in events)
    assert isinstance(events[-1].error, RuntimeError)
    assert events[-1].thread_id != threading.get_ident() == events[0].thread_id


def test_a_failing_observer_changes_nothing_and_is_counted_and_logged_once(
    caplog: pytest.LogCaptureFixture, loops: list[Any]
) -> None:
    def broken(event: PolicyEvent) -> None:
        raise ValueError("exporter down")

    before = internal_errors().get("observer", 0)
    tracedpolicy.add_observer(broken)
    try:
        policy = fresh_policy("tests.broken-observer")
        with caplog.at_level(logging.ERROR, logger="tracedpolicy"):
            loop = policy.new_event_loop()
            loops.append(loop)
            policy.set_event_loop(loop)
            assert policy.get_event_loop() is loop
            policy.set_event_loop(None)
            with pytest.raises(RuntimeError, match="no current event loop") as miss:
                policy.get_event_loop()
    finally:
        tracedpolicy.remove_observer(broken)
    assert isinstance(miss.value, RuntimeError)
    assert internal_errors()["observer"] == before + 4
    logged = [r for r in caplog.records if "observer failed" in r.getMessage()]
    assert len(logged) == (1 if before == 0 else 0)


def test_add_observer_rejects_a_non_callable() -> None:
    with pytest.raises(TypeError, match="observer must be a callable taking a PolicyEvent"):
        tracedpolicy.add_observer(42)  # type: ignore[arg-type]


def test_counter_reads_back_what_was_counted() -> None:
    counter = Counter()
    for _ in range(1234):
        next(counter.tick)
    assert counter.value == 1234


def test_snapshot_lists_every_label() -> None:
    fresh_policy("tests.snapshot").new_event_loop().close()
    assert tracedpolicy.snapshot()["policy tests.snapshot"]["loops.created"] == 1


def test_a_bound_method_observer_can_be_removed(loops: list[Any]) -> None:
    events: list[PolicyEvent] = []
    tracedpolicy.add_observer(events.append)
    tracedpolicy.remove_observer(events.append)  # a new, equal bound method object
    loops.append(fresh_policy("tests.removed-observer").new_event_loop())
    assert events == []


def test_an_observer_that_asks_for_the_loop_hears_of_calls_once_they_are_done(
    loops: list[Any],
) -> None:
    """Observers hear of a creation after the loop is set, and their own calls recurse not."""
    policy = fresh_policy("tests.observer-calls")
    RUNNING.set_policy(policy)  # type: ignore[misc]
    seen: list[tuple[str, Any]] = []

    def asks(event: PolicyEvent) -> None:
        if event.kind == "new_event_loop":
            try:
                seen.append((event.kind, asyncio.get_event_loop()))
            except RuntimeError as error:
                seen.append((event.kind, type(error).__name__))

    tracedpolicy.add_observer(asks)
    try:
        if RUNNING.creates_loops_implicitly:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                loop = asyncio.get_event_loop()  # made and set implicitly, inside the get
        else:
            loop = policy.new_event_loop()
            policy.set_event_loop(loop)
        loops.append(loop)
    finally:
        tracedpolicy.remove_observer(asks)
    counts = recorder_for("tests.observer-calls").snapshot()
    if RUNNING.creates_loops_implicitly:  # heard once the get that made and set it was done
        assert seen == [("new_event_loop", loop)]
        assert counts["get_event_loop.hit"] == 1
    else:  # new and set are the caller's two calls: heard after the first, as they happen
        assert seen == [("new_event_loop", "RuntimeError")]
        assert counts["get_event_loop.miss"] == 1
    assert counts["loops.created"] == 1


def test_a_thread_threading_does_not_know_gets_no_dummy_thread_from_us(
    loops: list[Any],
) -> None:
    """A bare set or new_event_loop leaves threading.enumerate() alone; a traced one too."""
    import _thread

    policy = fresh_policy("tests.foreign-thread")
    done = threading.Event()
    found: list[int] = []

    def foreign() -> None:
        try:
            before = len(threading.enumerate())
            loop = policy.new_event_loop()
            policy.set_event_loop(loop)
            policy.set_event_loop(None)
            loops.append(loop)
            found.append(len(threading.enumerate()) - before)
        finally:
            done.set()

    _thread.start_new_thread(foreign, ())
    assert done.wait(30)
    assert found == [0]


def test_a_collection_while_a_loop_class_is_first_counted_may_read_the_recorders() -> None:
    """A ``__del__`` that closes a loop runs observers, which may read every count."""
    recorder = recorder_for("tests.recorder.collect-in-lock")
    read: list[int] = []
    assert finishes_with_a_collection_at(
        Recorder.loop_class_stats,
        "self._loop_classes.setdefault(loop_class, LoopClassStats())",
        lambda: recorder.loop_class_stats("tests.FirstSeen"),
        lambda: InACycle(lambda: read.append(len(recorders()))),
    )
    assert read and "tests.FirstSeen" in recorder.loop_classes()


def test_leaks_an_observer_flushes_by_reading_the_counts_are_still_told() -> None:
    """An observer that reads the counts on each close flushes the leaks a collection queued:
    those are no calls of its own, and every observer must still hear of them."""
    label = "tests.recorder.flushed-while-observing"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    told: list[tuple[str, str | None]] = []

    def reads_the_counts(event: PolicyEvent) -> None:
        if event.creator == label and event.kind == "loop_closed":
            tracedpolicy.open_loops()

    def listens(event: PolicyEvent) -> None:
        if event.creator == label:
            told.append((event.kind, event.result))

    tracedpolicy.add_observer(reads_the_counts)
    tracedpolicy.add_observer(listens)
    try:
        other = policy.new_event_loop()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            policy.new_event_loop()  # dropped unclosed: a leak the collection queues
            gc.collect()
        other.close()
    finally:
        tracedpolicy.remove_observer(reads_the_counts)
        tracedpolicy.remove_observer(listens)
    assert told[-2:] == [("loop_closed", None), ("loop_leaked", "gc_unclosed")]
