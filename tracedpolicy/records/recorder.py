"""The one place every traced policy call and every traced loop creation is recorded.

A :class:`Recorder` exists per *origin* (how loops were made: by a ``policy``, a
``loop_factory``, or a ``constructor`` called directly) and *creator* (what was called: the
policy's class, the factory, the loop class; or a name the user chose), so label cardinality is
bounded by the classes and factories in use, not by policies, loops or threads. It keeps
exact aggregates (:mod:`tracedpolicy.records.stats`) that exporters read when they
collect. A get that finds a loop (a "hit", the hot path) only bumps a counter; the rare calls
(loop creation, set, implicit creation, a miss) run as an :class:`Operation`, which a span hook
(OpenTelemetry) can wrap in a span and which observers hear about as a :class:`PolicyEvent`.

Nothing here may change a policy call: every failure of a hook or observer is counted in
:func:`tracedpolicy.errors.internal_errors` and logged once per kind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Callable, NamedTuple, Protocol

from tracedpolicy.base import forksafe
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.record import LEAK_REASONS, Expected, LoopRecord
from tracedpolicy.records.sites import class_name, current_thread_name, printable
from tracedpolicy.records.stats import CREATION_SECONDS, LIFETIME_SECONDS, Counter, Histogram

Loop = asyncio.AbstractEventLoop

#: Where a loop came from: the ``origin`` label. A loop seen by several layers (a factory that
#: calls a policy that calls a constructor) is recorded once, by the outermost.
POLICY = "policy"
LOOP_FACTORY = "loop_factory"
CONSTRUCTOR = "constructor"
ORIGINS = (POLICY, LOOP_FACTORY, CONSTRUCTOR)

#: ``PolicyEvent.kind`` values.
NEW_EVENT_LOOP = "new_event_loop"
SET_EVENT_LOOP = "set_event_loop"
GET_EVENT_LOOP = "get_event_loop"
LOOP_CLOSED = "loop_closed"
LOOP_LEAKED = "loop_leaked"

leaks_logger = logging.getLogger("tracedpolicy.leaks")


class PolicyEvent(NamedTuple):
    """Something a traced policy, loop factory or loop constructor did, as observers see it."""

    kind: str
    """``new_event_loop``, ``set_event_loop``, ``get_event_loop``, ``loop_closed`` or
    ``loop_leaked`` (``result`` is the reason: gc_unclosed, thread_exit, open_at_exit)."""
    origin: str
    """``policy``, ``loop_factory`` or ``constructor``: how the loop was made."""
    creator: str
    """What made it: the policy's class, the factory or the loop class (or a chosen label)."""
    result: str | None
    """get: ``hit``, ``created`` or ``miss``; set: ``set`` or ``clear``; else None."""
    loop: Loop | None
    loop_id: int | None
    loop_class: str | None
    thread_id: int
    thread_name: str
    is_main_thread: bool
    start_ns: int
    end_ns: int
    duration: float | None
    """Seconds: the base's creation time (new_event_loop), the loop's lifetime (loop_closed)."""
    error: BaseException | None
    record: LoopRecord | None = None
    """The loop's record (loop_leaked events: the creating thread and site are there)."""


Observer = Callable[[PolicyEvent], None]


class SpanHook(Protocol):
    """Turns operations into spans; :mod:`tracedpolicy.exporters.otel` provides the real one."""

    def start(self, operation: Operation) -> Any:
        """Start a span around a call that is about to run; return a handle for :meth:`end`."""

    def span_context(self, handle: Any) -> Any:
        """The context of the span ``handle`` stands for (None if there is none)."""

    def end(self, handle: Any, event: PolicyEvent | None) -> None:
        """End the span (``handle`` None: make one for an event that already happened).

        ``event`` is None only if recording failed; the started span must still end.
        """


#: The handle of an operation whose span could not start: do not try again at its end.
_NO_SPAN = object()

_observers: tuple[Observer, ...] = ()
#: tracedpolicy's own listeners (OpenTelemetry's histograms): every event, at once.
_sinks: tuple[Observer, ...] = ()
_span_hook: SpanHook | None = None
#: Reentrant: a collection during an allocation under it may run a ``__del__`` that closes a
#: loop, whose observers may read the recorders in the same thread.
_lock = forksafe.rlock()


def add_observer(observer: Observer) -> None:
    """Call ``observer`` with every :class:`PolicyEvent` from now on."""
    global _observers
    if not callable(observer):
        raise TypeError(
            f"observer must be a callable taking a PolicyEvent, not {type(observer).__name__!r}"
        )
    with _lock:
        _observers = (*_observers, observer)


def remove_observer(observer: Observer) -> None:
    """Stop calling ``observer``; unknown observers are ignored."""
    global _observers
    with _lock:
        # ==, not is: ``events.append`` makes a new, equal bound method on every access.
        _observers = tuple(o for o in _observers if o != observer)


def add_sink(sink: Observer) -> None:
    """Call ``sink`` with every event as it happens (tracedpolicy's own exporters)."""
    global _sinks
    with _lock:
        _sinks = (*_sinks, sink)


def set_span_hook(hook: SpanHook | None) -> None:
    """Use ``hook`` for spans from now on (None: no spans)."""
    global _span_hook
    _span_hook = hook


class _MainThread:
    """The main thread's ident, refreshed in a forked child (whose main thread is the forker)."""

    ident = threading.main_thread().ident

    @classmethod
    def refresh(cls) -> None:
        cls.ident = threading.main_thread().ident


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_MainThread.refresh)


def is_main_thread() -> bool:
    """Cheaper than ``current_thread() is main_thread()``, which matters on the hot path."""
    return threading.get_ident() == _MainThread.ident


class Making:
    """An outer layer (a traced policy or factory) making a loop in this thread right now.

    Inner layers (a policy the factory calls, the loop's constructor) leave the loop to it, so
    a loop is recorded once, with the outermost origin. Loops constructed meanwhile are noted:
    one the outer layer does not hand back is recorded as constructed.
    """

    __slots__ = ("constructed",)

    def __init__(self) -> None:
        self.constructed: list[Loop] | None = None


class _ThreadState(threading.local):
    """Per thread: how many loops were made (to spot one made during an opaque get), the outer
    layer making one now, and the traced calls in progress with the events they await."""

    creations = 0
    making: Making | None = None
    #: Traced operations in progress: observers hear of them once the outermost is done.
    depth = 0
    deferred: list[PolicyEvent] | None = None
    #: Observers are running: calls they make are counted, but not told to them again.
    observing = False
    #: Leaks of other loops that an observer's read flushed: told once observers are done.
    leaks_seen_observing: list[PolicyEvent] | None = None


thread_state = _ThreadState()


class LoopClassStats:
    """The loop aggregates of one (policy, loop class) pair."""

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


class Operation:
    """One recorded call; a context manager around the base's work, or finished directly."""

    __slots__ = (
        "error",
        "expected",
        "handle",
        "kind",
        "loop",
        "measured",
        "owner",
        "recorder",
        "result",
        "start",
        "start_ns",
    )

    def __init__(self, recorder: Recorder, kind: str) -> None:
        self.recorder = recorder
        self.kind = kind
        self.loop: Loop | None = None
        self.result: str | None = None
        self.error: BaseException | None = None
        self.handle: Any = None
        #: False for a loop creation seen only afterwards: its duration is unknown.
        self.measured = True
        #: The object that keeps the policy's state (a wrapper's base): a thread's current loop
        #: is tracked per such object.
        self.owner: Any = None
        #: When and where a loop seen only afterwards was constructed, if that is known.
        self.expected: Expected | None = None
        self.start_ns = time.time_ns()
        self.start = time.perf_counter()

    def __enter__(self) -> Operation:
        thread_state.depth += 1
        try:
            self._start_span()
            self.start_ns = time.time_ns()
            self.start = time.perf_counter()
        except BaseException:
            # A Ctrl-C (or a hook's BaseException) here: no __exit__ will undo the depth.
            thread_state.depth -= 1
            self._end_span_unrecorded()
            raise
        return self

    def _start_span(self) -> None:
        hook = _span_hook
        if hook is not None:
            try:
                self.handle = hook.start(self)
            except Exception as failure:
                record_internal_error("tracer", failure)
                self.handle = _NO_SPAN  # one failure per call is enough

    def _end_span_unrecorded(self) -> None:
        """End a span started for a call that will not run: a started span must end."""
        hook = _span_hook
        if hook is not None and self.handle is not None and self.handle is not _NO_SPAN:
            try:
                hook.end(self.handle, None)
            except Exception as failure:
                record_internal_error("tracer", failure)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        thread_state.depth -= 1
        self.finish(exc)

    def finish(self, error: BaseException | None = None) -> None:
        """Count, end the span and tell observers; never raises."""
        duration = time.perf_counter() - self.start
        self.error = error
        event: PolicyEvent | None = None
        try:
            event = self.recorder._finish(self, duration)
        except Exception as failure:
            record_internal_error("recorder", failure)
        _dispatch(event, self.handle)


class Recorder:
    """Aggregates and event dispatch for every traced policy, factory or constructor sharing
    one (origin, creator) pair."""

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
            with _lock:
                stats = self._loop_classes.setdefault(loop_class, LoopClassStats())
        return stats

    def loop_classes(self) -> dict[str, LoopClassStats]:
        REGISTRY.flush()
        with _lock:
            return dict(self._loop_classes)

    def call_count(self, key: str) -> int:
        """A call count by key, such as ``get_event_loop.miss`` or ``set_event_loop.set``."""
        if key == "get_event_loop.hit":
            return self.hits.value
        return self._by_key[key].value

    def _finish(self, op: Operation, duration: float) -> PolicyEvent:
        REGISTRY.flush()  # leaks noticed in dying threads are logged from a living one
        main = is_main_thread()
        loop, loop_record, loop_class = op.loop, None, None
        if isinstance(loop, asyncio.AbstractEventLoop):  # a factory may hand back a stand-in
            # A loop handed out again (a factory returning an old one) was made only once.
            created = op.kind == NEW_EVENT_LOOP and op.error is None and not REGISTRY.tracks(loop)
            loop_record = REGISTRY.record_for(loop, self.origin, self.creator, created, op.expected)
            loop_class = loop_record.loop_class if loop_record else class_name(type(loop))
            if created:
                thread_state.creations += 1
                if loop_record is not None and op.handle is not None and _span_hook is not None:
                    loop_record.span_context = _span_hook.span_context(op.handle)
                stats = self.loop_class_stats(loop_class)
                next(stats.created.tick)
                if op.measured:
                    stats.creation_seconds.observe(duration)
        if op.kind == SET_EVENT_LOOP and op.error is None:
            op.result = "clear" if loop is None else "set"
            next(self._by_key[f"set_event_loop.{op.result}"].tick)
            REGISTRY.set_current(op.owner, loop_record)
        elif op.kind == GET_EVENT_LOOP and op.result in ("created", "miss"):
            next(self._by_key[f"get_event_loop.{op.result}"].tick)
            if op.result == "created" and not op.measured:
                # An opaque base set it itself, unseen.
                REGISTRY.set_current(op.owner, loop_record)
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
            main,
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


def _dispatch(event: PolicyEvent | None, handle: Any) -> None:
    """End the span (always, if one was started) and tell observers about ``event``.

    Observers hear of a call once its effects are complete: inside another traced call (a
    policy's implicit creation makes and sets a loop within a get), events wait for the
    outermost to finish. Calls an observer makes are counted and traced, not told to them.
    """
    hook = _span_hook
    if handle is _NO_SPAN:
        hook = None
    if hook is not None and (handle is not None or (event and event.kind != LOOP_CLOSED)):
        try:
            hook.end(handle, event)
        except Exception as failure:
            record_internal_error("tracer", failure)
    if event is not None:
        for sink in _sinks:
            try:
                sink(event)
            except Exception as failure:
                record_internal_error("meter", failure)
    state = thread_state
    if event is not None and state.observing and event.kind == LOOP_LEAKED and _observers:
        _hold_leak(state, event)
        return
    if event is None or not _observers or state.observing:
        _deliver_deferred(state)
        return
    if state.depth > 0:
        if state.deferred is None:
            state.deferred = []
        state.deferred.append(event)
        return
    _deliver_deferred(state)
    _deliver(state, (event,))


def _deliver_deferred(state: _ThreadState) -> None:
    """Tell observers the events that waited for the outermost call, once it is done."""
    if state.depth > 0 or not state.deferred or state.observing:
        return
    events, state.deferred = state.deferred, None
    _deliver(state, events)


def _hold_leak(state: _ThreadState, event: PolicyEvent) -> None:
    """A leak an observer's read flushed is no call of the observer's: keep it for them."""
    if state.leaks_seen_observing is None:
        state.leaks_seen_observing = []
    state.leaks_seen_observing.append(event)


def _deliver(state: _ThreadState, events: Iterable[PolicyEvent]) -> None:
    state.observing = True
    try:
        for event in events:
            for observer in _observers:
                try:
                    observer(event)
                except Exception as failure:
                    record_internal_error("observer", failure)
    finally:
        state.observing = False
    held = state.leaks_seen_observing
    if held:
        state.leaks_seen_observing = None
        _deliver(state, held)


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
        with _lock:
            recorder = _recorders.setdefault(key, Recorder(creator, origin))
    return recorder


def recorders() -> list[Recorder]:
    """Every recorder made so far, in creation order."""
    with _lock:
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
    with _lock:
        counter = _replaced.setdefault(policy, Counter())
    next(counter.tick)


def policy_replacements() -> dict[str, int]:
    """How often the traced process-wide policy was replaced, by the new policy's class."""
    with _lock:
        return {policy: counter.value for policy, counter in _replaced.items()}


def snapshot() -> dict[str, dict[str, int]]:
    """Every recorder's counts, by label (``origin creator``)."""
    return {recorder.label: recorder.snapshot() for recorder in recorders()}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)
