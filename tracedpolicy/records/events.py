"""What a recorded call is, and who hears of it.

An :class:`Operation` is one of the rare calls (loop creation, set, implicit creation, a miss):
a span hook (OpenTelemetry) can wrap it in a span, and observers hear of it as a
:class:`PolicyEvent` once its effects are complete (inside another traced call, events wait for
the outermost). Calls an observer makes are counted and traced, not told to them. Nothing here
may change a policy call: every failure of a hook or observer is counted and logged once.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol

from tracedpolicy.base import forksafe
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.record import Expected, LoopRecord

if TYPE_CHECKING:
    from tracedpolicy.records.recorder import Recorder

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


def heard() -> bool:
    """Whether anything hears of events (a span hook, a sink, an observer): when nothing does,
    a recorded call only counts, and no event is made."""
    return _span_hook is not None or bool(_sinks) or bool(_observers)


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


class ThreadState:
    """Per thread: how many loops were made (to spot one made during an opaque get), the outer
    layer making one now, and the traced calls in progress with the events they await."""

    __slots__ = (
        "creations",
        "deferred",
        "depth",
        "leaks_seen_observing",
        "making",
        "observing",
    )

    def __init__(self) -> None:
        self.creations = 0
        self.making: Making | None = None
        #: Traced operations in progress: observers hear of them once the outermost is done.
        self.depth = 0
        self.deferred: list[PolicyEvent] | None = None
        #: Observers are running: calls they make are counted, but not told to them again.
        self.observing = False
        #: Leaks of other loops that an observer's read flushed: told once observers are done.
        self.leaks_seen_observing: list[PolicyEvent] | None = None


#: A plain ``threading.local``, not a subclass of it, holding one object per thread: on
#: free-threaded 3.13 each attribute access of a *subclass's* instance takes the interpreter's
#: type lock (to find the ``_thread`` module up the subclass's MRO), which every thread of the
#: process then waits on; a plain one's does not.
_per_thread = threading.local()


def thread_state() -> ThreadState:
    """This thread's state, made on its first traced call."""
    try:
        return _per_thread.state  # type: ignore[no-any-return]
    except AttributeError:
        state = _per_thread.state = ThreadState()
        return state


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
        state = thread_state()
        state.depth += 1
        if _span_hook is None:
            return self  # timed from __init__ on, just now
        try:
            self._start_span()
            # The base's call is timed, not the span's start.
            self.start_ns = time.time_ns()
            self.start = time.perf_counter()
        except BaseException:
            # A Ctrl-C (or a hook's BaseException) here: no __exit__ will undo the depth.
            state.depth -= 1
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
        thread_state().depth -= 1
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
    state = thread_state()
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


def _deliver_deferred(state: ThreadState) -> None:
    """Tell observers the events that waited for the outermost call, once it is done."""
    if state.depth > 0 or not state.deferred or state.observing:
        return
    events, state.deferred = state.deferred, None
    _deliver(state, events)


def _hold_leak(state: ThreadState, event: PolicyEvent) -> None:
    """A leak an observer's read flushed is no call of the observer's: keep it for them."""
    if state.leaks_seen_observing is None:
        state.leaks_seen_observing = []
    state.leaks_seen_observing.append(event)


def _deliver(state: ThreadState, events: Iterable[PolicyEvent]) -> None:
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
