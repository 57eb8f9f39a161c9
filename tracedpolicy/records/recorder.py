"""The one place every traced policy call and every traced loop creation is counted.

A :class:`Recorder` exists per *origin* (how loops were made: by a ``policy``, a
``loop_factory``, or a ``constructor`` called directly) and *creator* (what was called: the
policy's class, the factory, the loop class; or a name the user chose), so label cardinality is
bounded by the classes and factories in use, not by policies, loops or threads. It keeps
exact aggregates (:mod:`tracedpolicy.records.stats`) that exporters read when they
collect. A get that finds a loop (a "hit", the hot path) only bumps a counter; the rare calls
run as an :class:`~tracedpolicy.records.events.Operation` (spans, observers: see
:mod:`tracedpolicy.records.events`).

Nothing here may change a policy call: every failure of a hook or observer is counted in
:func:`tracedpolicy.internal_errors` and logged once per kind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

from tracedpolicy.base import forksafe
from tracedpolicy.records import events
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.events import (
    GET_EVENT_LOOP,
    LOOP_CLOSED,
    LOOP_LEAKED,
    NEW_EVENT_LOOP,
    POLICY,
    SET_EVENT_LOOP,
    Loop,
    Operation,
    PolicyEvent,
    _dispatch,
    _MainThread,
    is_main_thread,
    thread_state,
)
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.record import LEAK_REASONS, Expected, LoopRecord
from tracedpolicy.records.sites import class_name, current_thread_name, printable
from tracedpolicy.records.stats import CREATION_SECONDS, LIFETIME_SECONDS, Counter, Histogram

leaks_logger = logging.getLogger("tracedpolicy.leaks")


class LoopClassStats:
    """The loop aggregates of one (policy, loop class) pair."""

    __slots__ = (
        "closed",
        "created",
        "creation_seconds",
        "inherited",
        "leaked",
        "lifetime_seconds",
    )

    def __init__(self) -> None:
        self.created = Counter()
        self.closed = Counter()
        self.leaked = {reason: Counter() for reason in LEAK_REASONS}
        #: Loops of a parent process, open when it forked this one (set only in the child,
        #: by the fork handler, while no other thread exists: a plain number will do).
        self.inherited = 0
        self.creation_seconds = Histogram(CREATION_SECONDS)
        self.lifetime_seconds = Histogram(LIFETIME_SECONDS)

    @property
    def open(self) -> int:
        """Loops made and neither closed, leaked nor inherited from a parent process."""
        gone = self.closed.value + self.inherited
        return self.created.value - gone - sum(c.value for c in self.leaked.values())


class Recorder:
    """Aggregates and event dispatch for every traced policy, factory or constructor sharing
    one (origin, creator) pair. Slotted, as the registry is (its docstring says why)."""

    __slots__ = (
        "_by_key",
        "_clears",
        "_loop_classes",
        "_sets",
        "creator",
        "hits",
        "label",
        "origin",
    )

    def __init__(self, creator: str, origin: str = POLICY) -> None:
        self.origin = origin
        self.creator = creator
        #: How people read the pair: ``policy asyncio.unix_events._UnixDefaultEventLoopPolicy``.
        self.label = f"{origin} {creator}"
        # Bumped inline by the traced get_event_loop fast path, hence public and flat. Hits are
        # not told apart by thread: asking which thread runs costs more than the hit itself.
        self.hits = Counter()
        self._by_key: dict[str, Counter] = {
            key: Counter()
            for key in (
                "get_event_loop.created",
                "get_event_loop.miss",
                "set_event_loop.set",
                "set_event_loop.clear",
            )
        }
        self._loop_classes: dict[str, LoopClassStats] = {}
        self._sets = self._by_key["set_event_loop.set"].tick
        self._clears = self._by_key["set_event_loop.clear"].tick

    def operation(self, kind: str) -> Operation:
        return Operation(self, kind)

    def record_after(
        self,
        kind: str,
        result: str | None = None,
        loop: Loop | None = None,
        start_ns: int | None = None,
        error: BaseException | None = None,
        owner: Any = None,
        expected: Expected | None = None,
    ) -> None:
        """Record a call that already happened (no span could be open around it)."""
        try:
            op = self.operation(kind)
            op.result, op.loop, op.measured = result, loop, False
            if start_ns is not None:
                op.start_ns = start_ns
            op.owner, op.expected = owner, expected
        except Exception as failure:
            record_internal_error("recorder", failure)
            return
        op.finish(error)

    def count_hit(self) -> None:
        next(self.hits.tick)

    def loop_class_stats(self, loop_class: str) -> LoopClassStats:
        stats = forksafe.lookup(self._loop_classes, loop_class)
        if stats is None:
            with events._lock:
                stats = self._loop_classes.setdefault(loop_class, LoopClassStats())
        return stats

    def loop_classes(self) -> dict[str, LoopClassStats]:
        REGISTRY.flush()
        with events._lock:
            return dict(self._loop_classes)

    def call_count(self, key: str) -> int:
        """A call count by key, such as ``get_event_loop.miss`` or ``set_event_loop.set``."""
        if key == "get_event_loop.hit":
            return self.hits.value
        return self._by_key[key].value

    def count_set(self, loop: Loop | None, owner: Any) -> None:
        """A set that returned, where nothing hears of events (no span, no observer): counted
        without an :class:`Operation`, which costs ten times as much as the set itself."""
        try:
            REGISTRY.flush()
            record = None
            if isinstance(loop, asyncio.AbstractEventLoop):
                record = REGISTRY.record_for(loop, self.origin, self.creator, False)
            self._count_set(loop, owner, record)
        except Exception as failure:
            record_internal_error("recorder", failure)

    def _count_set(self, loop: Loop | None, owner: Any, record: LoopRecord | None) -> None:
        next(self._clears if loop is None else self._sets)
        REGISTRY.set_current(owner, record)

    def _finish(self, op: Operation, duration: float) -> PolicyEvent | None:
        """Count the call; the event to tell, if anything hears of events."""
        REGISTRY.flush()  # leaks noticed in dying threads are logged from a living one
        loop, loop_record, loop_class = op.loop, None, None
        if isinstance(loop, asyncio.AbstractEventLoop):  # a factory may hand back a stand-in
            # A loop handed out again (a factory returning an old one) was made only once.
            created = op.kind == NEW_EVENT_LOOP and op.error is None and not REGISTRY.tracks(loop)
            loop_record = REGISTRY.record_for(loop, self.origin, self.creator, created, op.expected)
            loop_class = loop_record.loop_class if loop_record else class_name(type(loop))
            if created:
                thread_state().creations += 1
                if (
                    loop_record is not None
                    and op.handle is not None
                    and events._span_hook is not None
                ):
                    loop_record.span_context = events._span_hook.span_context(op.handle)
                stats = self.loop_class_stats(loop_class)
                next(stats.created.tick)
                if op.measured:
                    stats.creation_seconds.observe(duration)
        if op.kind == SET_EVENT_LOOP and op.error is None:
            op.result = "clear" if loop is None else "set"
            self._count_set(loop, op.owner, loop_record)
        elif op.kind == GET_EVENT_LOOP and op.result in ("created", "miss"):
            next(self._by_key[f"get_event_loop.{op.result}"].tick)
            if op.result == "created" and not op.measured:
                # An opaque base set it itself, unseen.
                REGISTRY.set_current(op.owner, loop_record)
        if not events.heard():
            return None
        # Positional: a 14-field NamedTuple made from keywords costs three times as much.
        return PolicyEvent(
            op.kind,
            self.origin,
            self.creator,
            op.result,
            loop,
            loop_record.loop_id if loop_record else None,
            loop_class,
            threading.get_ident(),
            current_thread_name(),
            is_main_thread(),
            op.start_ns,
            time.time_ns(),
            duration if op.kind == NEW_EVENT_LOOP and op.measured else None,
            op.error,
        )

    def snapshot(self) -> dict[str, int]:
        """Every call count (policies only) and loop count of this pair, by key."""
        counts: dict[str, int] = {}
        if self.origin == POLICY:
            for key in CALL_KEYS:
                counts[key] = self.call_count(key)
        loop_classes = self.loop_classes().values()
        counts["loops.created"] = sum(s.created.value for s in loop_classes)
        counts["loops.closed"] = sum(s.closed.value for s in loop_classes)
        counts["loops.open"] = sum(s.open for s in loop_classes)
        return counts


#: The call counts of a policy, in the order snapshots list them.
CALL_KEYS = (
    "get_event_loop.hit",
    "get_event_loop.created",
    "get_event_loop.miss",
    "set_event_loop.set",
    "set_event_loop.clear",
)


def _loop_closed(record: LoopRecord, lifetime: float) -> None:
    stats = recorder_for(record.creator, record.origin).loop_class_stats(record.loop_class)
    next(stats.closed.tick)
    stats.lifetime_seconds.observe(lifetime)
    if not events.heard():
        return
    now = time.time_ns()
    event = PolicyEvent(  # positional, as in _finish
        LOOP_CLOSED,
        record.origin,
        record.creator,
        None,
        record.loop,
        record.loop_id,
        record.loop_class,
        threading.get_ident(),
        current_thread_name(),
        is_main_thread(),
        now,
        now,
        lifetime,
        None,
    )
    _dispatch(event, None)


def _loop_leaked(record: LoopRecord, reason: str) -> None:
    stats = recorder_for(record.creator, record.origin).loop_class_stats(record.loop_class)
    next(stats.leaked[reason].tick)
    leaks_logger.warning(
        "event loop leaked (%s): %s #%d made at %s in thread %r (%s), %.3fs old",
        reason,
        printable(record.loop_class),
        record.loop_id,
        record.site or "an unknown site",
        record.thread_name,  # shown with %r, which escapes control characters
        printable(record.made_by),
        record.age(),
    )
    if not events.heard():
        return
    now = time.time_ns()
    event = PolicyEvent(  # positional, as in _finish; the thread is the creating thread
        LOOP_LEAKED,
        record.origin,
        record.creator,
        reason,
        record.loop,
        record.loop_id,
        record.loop_class,
        record.thread_id,
        record.thread_name,
        record.thread_id == _MainThread.ident,
        now,
        now,
        record.age(),
        None,
        record,
    )
    _dispatch(event, None)


def _loops_inherited() -> None:
    """In a forked child: every loop the parent counted open is the parent's, not open here."""
    for recorder in recorders():
        for stats in recorder.loop_classes().values():
            stats.inherited += stats.open


REGISTRY.closed_listeners.append(_loop_closed)
REGISTRY.leaked_listeners.append(_loop_leaked)
REGISTRY.inherited_listeners.append(_loops_inherited)

_recorders: dict[tuple[str, str], Recorder] = {}


def recorder_for(creator: str, origin: str = POLICY) -> Recorder:
    """The recorder shared by everything that makes loops as ``origin``, named ``creator``."""
    key = (origin, creator)
    recorder = forksafe.lookup(_recorders, key)
    if recorder is None:
        with events._lock:
            recorder = _recorders.setdefault(key, Recorder(creator, origin))
    return recorder


def recorders() -> list[Recorder]:
    """Every recorder made so far, in creation order."""
    with events._lock:
        return list(_recorders.values())


def _counted() -> tuple[int, int, int]:
    made = closed = leaked = 0
    for recorder in recorders():
        for stats in recorder.loop_classes().values():
            made += stats.created.value
            closed += stats.closed.value
            leaked += sum(counter.value for counter in stats.leaked.values())
    return made, closed, leaked


#: What the parent process had counted when it forked this one: the parent's, not ours.
_counted_by_parent = (0, 0, 0)


def _forked() -> None:
    global _counted_by_parent
    _counted_by_parent = _counted()


def loop_totals() -> tuple[int, int, int]:
    """Loops this process made, closed and leaked, over every origin and creator.

    A forked child counts its own: the counters still hold what the parent counted before the
    fork (its loops are inherited, never closed or leaked in the child), which is left out.
    The baseline is taken here, where the counters are, as the child starts: the report is
    loaded only when first asked for, maybe after the fork.
    """
    now = _counted()
    return (
        now[0] - _counted_by_parent[0],
        now[1] - _counted_by_parent[1],
        now[2] - _counted_by_parent[2],
    )


_replaced: dict[str, Counter] = {}


def count_policy_replaced(policy: str) -> None:
    """The traced process-wide policy was replaced by ``policy`` (a class label)."""
    with events._lock:
        counter = _replaced.setdefault(policy, Counter())
    next(counter.tick)


def policy_replacements() -> dict[str, int]:
    """How often the traced process-wide policy was replaced, by the new policy's class."""
    with events._lock:
        return {policy: counter.value for policy, counter in _replaced.items()}


def snapshot() -> dict[str, dict[str, int]]:
    """Every recorder's counts, by label (``origin creator``)."""
    return {recorder.label: recorder.snapshot() for recorder in recorders()}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
