"""The one place every traced policy call and every traced loop creation is recorded.

A :class:`PolicyRecorder` exists per policy label (the base policy's class, or a name the user
chose), so label cardinality is bounded by the number of policy classes, not by policies, loops
or threads. It keeps exact counters that are cheap to bump and are read only when someone asks
(:meth:`PolicyRecorder.snapshot`), and it tells observers about the rare events: loop creation,
set, implicit creation and misses. A get that finds a loop (a "hit") only bumps a counter.

Observers are plain callables taking a :class:`PolicyEvent`. One that raises never breaks the
policy call: the failure is counted in :func:`internal_errors` and logged once per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import threading
import weakref
from typing import Callable, NamedTuple

logger = logging.getLogger("tracedpolicy")


class PolicyEvent(NamedTuple):
    """Something a traced policy or loop factory did, as observers see it."""

    kind: str
    """``new_event_loop``, ``set_event_loop``, ``get_event_loop`` (a loop was created for the
    caller) or ``get_event_loop_miss`` (the RuntimeError for a thread without a loop)."""
    policy: str
    loop: asyncio.AbstractEventLoop | None
    thread_id: int
    thread_name: str
    is_main_thread: bool
    duration: float | None = None
    """Seconds the base took to make the loop (``new_event_loop`` events only)."""
    error: BaseException | None = None


Observer = Callable[[PolicyEvent], None]

_observers: tuple[Observer, ...] = ()
_lock = threading.Lock()


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
        _observers = tuple(o for o in _observers if o is not observer)


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


class Counter:
    """An exact, thread-safe counter: ``next(counter.tick)`` is atomic under the GIL."""

    __slots__ = ("tick",)

    def __init__(self) -> None:
        self.tick = itertools.count()

    @property
    def value(self) -> int:
        """How many times ``next(self.tick)`` ran (itertools.count shows that in its repr)."""
        return int(repr(self.tick)[len("count(") : -1])


_internal_errors: dict[str, Counter] = {}
_logged_error_kinds: set[str] = set()


def record_internal_error(kind: str, error: BaseException) -> None:
    """Count a failure of tracedpolicy's own machinery and log it the first time per kind."""
    with _lock:
        counter = _internal_errors.setdefault(kind, Counter())
        first = kind not in _logged_error_kinds
        _logged_error_kinds.add(kind)
    next(counter.tick)
    if first:
        logger.error(
            "tracedpolicy %s failed; the policy call went on unaffected "
            "(further %s failures are counted, not logged)",
            kind,
            kind,
            exc_info=error,
        )


def internal_errors() -> dict[str, int]:
    """How often each kind of internal failure happened in this process."""
    with _lock:
        return {kind: counter.value for kind, counter in _internal_errors.items()}


class PolicyRecorder:
    """Counters and observer dispatch for every traced policy sharing one label."""

    def __init__(self, label: str) -> None:
        self.label = label
        # Bumped inline by the traced get_event_loop fast path, hence public and flat.
        self.hits_main = Counter()
        self.hits_other = Counter()
        self._counters: dict[str, Counter] = {}
        #: Loops this label's policies made or were handed, to classify an opaque base's result.
        self.known_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    def loop_created(self, loop: asyncio.AbstractEventLoop, duration: float | None) -> None:
        """A loop was made through a traced ``new_event_loop`` or loop factory."""
        self.remember(loop)
        self._emit("new_event_loop", loop, duration=duration)

    def loop_set(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """``set_event_loop(loop)`` succeeded; ``None`` clears the thread's loop."""
        if loop is not None:
            self.remember(loop)
        self._emit("set_event_loop", loop)

    def loop_got_created(self, loop: asyncio.AbstractEventLoop) -> None:
        """``get_event_loop()`` returned a loop the base had to create for the caller."""
        self._emit("get_event_loop", loop)

    def loop_missed(self, error: RuntimeError) -> None:
        """``get_event_loop()`` raised the RuntimeError for a thread without a loop."""
        self._emit("get_event_loop_miss", None, error=error)

    def remember(self, loop: asyncio.AbstractEventLoop) -> None:
        with contextlib.suppress(TypeError):  # a loop class without __weakref__ stays unknown
            self.known_loops.add(loop)

    def _emit(
        self,
        kind: str,
        loop: asyncio.AbstractEventLoop | None,
        duration: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        main = is_main_thread()
        counter = self._counter(_count_key(kind, loop, main))
        next(counter.tick)
        observers = _observers
        if not observers:
            return
        thread = threading.current_thread()
        event = PolicyEvent(
            kind, self.label, loop, threading.get_ident(), thread.name, main, duration, error
        )
        for observer in observers:
            try:
                observer(event)
            except Exception as failure:
                record_internal_error("observer", failure)

    def _counter(self, key: str) -> Counter:
        counter = self._counters.get(key)
        if counter is None:
            with _lock:
                counter = self._counters.setdefault(key, Counter())
        return counter

    def snapshot(self) -> dict[str, int]:
        """Every count of this label, keyed ``get_event_loop.hit.main`` and the like."""
        counts = {
            "get_event_loop.hit.main": self.hits_main.value,
            "get_event_loop.hit.other": self.hits_other.value,
        }
        with _lock:
            counters = dict(self._counters)
        counts.update((key, counter.value) for key, counter in counters.items())
        return counts


def _count_key(kind: str, loop: asyncio.AbstractEventLoop | None, main: bool) -> str:
    thread = "main" if main else "other"
    if kind == "set_event_loop":
        return "set_event_loop.clear" if loop is None else "set_event_loop.set"
    if kind == "get_event_loop":
        return f"get_event_loop.created.{thread}"
    if kind == "get_event_loop_miss":
        return f"get_event_loop.miss.{thread}"
    return kind


_recorders: dict[str, PolicyRecorder] = {}


def recorder_for(label: str) -> PolicyRecorder:
    """The recorder shared by every traced policy and loop factory labelled ``label``."""
    recorder = _recorders.get(label)
    if recorder is None:
        with _lock:
            recorder = _recorders.setdefault(label, PolicyRecorder(label))
    return recorder


def recorders() -> list[PolicyRecorder]:
    """Every recorder made so far, in creation order."""
    with _lock:
        return list(_recorders.values())


def snapshot() -> dict[str, dict[str, int]]:
    """Every recorder's counts, by policy label."""
    return {recorder.label: recorder.snapshot() for recorder in recorders()}
