"""Every loop tracedpolicy made or was handed: an id never reused, its life, and its leaks.

Records hold only a weak reference to their loop, and a record goes away with its loop, so
memory stays bounded however many loops come and go. A loop made through tracedpolicy is
*tracked*: where it was made (the first frame outside tracedpolicy, asyncio and uvloop), by
which thread, which threads it is set on, and how it ended:

* closed: its ``close()`` returned (hooked once on the loop's class, so the moment is exact;
  where a class cannot take the hook, :meth:`LoopRegistry.sweep` notices at collection time);
* leaked, for one reason each: ``gc_unclosed`` (garbage-collected without ``close()``),
  ``thread_exit`` (the current loop of a thread that ended, not closed), ``open_at_exit``
  (still open when the interpreter exits, counted when :meth:`LoopRegistry.leak_open_at_exit`
  runs). A closed loop is never a leak; a leak is counted once.
* inherited: in a forked child, the parent's loops are the parent's business.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
import os
import sys
import threading
import time
import weakref
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from tracedpolicy.errors import record_internal_error

Loop = asyncio.AbstractEventLoop

GC_UNCLOSED = "gc_unclosed"
THREAD_EXIT = "thread_exit"
OPEN_AT_EXIT = "open_at_exit"
LEAK_REASONS = (GC_UNCLOSED, THREAD_EXIT, OPEN_AT_EXIT)

#: Frames of these packages are not a creation site: the user's call into them is. (wrapt
#: carries the construction hooks; its frames exist only without its C extension.)
SKIPPED_PACKAGES = ("tracedpolicy", "asyncio", "uvloop", "wrapt")


def qualified_name(thing: Any) -> str:
    """A class's or function's module and qualified name: a bounded label value.

    Scopes a name was defined in (``__getattr__.<locals>.`` where uvloop and tornado build
    their policy classes on first use) are left out: ``uvloop.EventLoopPolicy``.
    """
    module = getattr(thing, "__module__", None) or "builtins"
    qualname = getattr(thing, "__qualname__", None) or type(thing).__qualname__
    return f"{module}.{qualname.rpartition('<locals>.')[2]}"


def class_name(cls: type) -> str:
    """A class's qualified name with its module: the bounded ``loop_class`` label value."""
    return qualified_name(cls)


class CreationSite(NamedTuple):
    """Where a loop was made: a file, a line and the function around it."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"


#: Modules of ours that play the user's part: their frames are creation sites.
USER_MODULES = ("tracedpolicy.demo",)


def _skipped(frame: Any) -> bool:
    module = frame.f_globals.get("__name__") or ""
    return module not in USER_MODULES and module.partition(".")[0] in SKIPPED_PACKAGES


def _constructing(frame: Any, loop: object) -> bool:
    """Whether ``frame`` is an ``__init__`` of ``loop`` itself (a loop subclass's own)."""
    code = frame.f_code
    return (
        code.co_name == "__init__"
        and code.co_argcount > 0
        and frame.f_locals.get(code.co_varnames[0]) is loop
    )


def capture_site(
    depth: int = 0, loop: object = None
) -> tuple[CreationSite | None, tuple[str, ...]]:
    """The caller's creation site, and up to ``depth`` more frames above it (outermost last).

    With ``loop``, the ``__init__`` frames of that loop are skipped too: a user's loop subclass
    is made where it is called, not where its ``__init__`` calls ``super().__init__()``.
    """
    frame: Any = sys._getframe(1)
    while frame is not None and (
        _skipped(frame) or (loop is not None and _constructing(frame, loop))
    ):
        frame = frame.f_back
    if frame is None:
        return None, ()
    code = frame.f_code
    site = CreationSite(code.co_filename, frame.f_lineno, code.co_name)
    stack: list[str] = []
    outer = frame.f_back
    while outer is not None and len(stack) < depth:
        stack.append(f"{outer.f_code.co_filename}:{outer.f_lineno} in {outer.f_code.co_name}")
        outer = outer.f_back
    return site, tuple(stack)


@dataclass(eq=False)
class LoopRecord:
    """What is known about one loop."""

    loop_id: int
    origin: str
    """``policy``, ``loop_factory`` or ``constructor``: how it was made."""
    creator: str
    """What made it: the policy's class, the factory, the loop class (or a chosen label)."""
    loop_class: str
    thread_id: int
    """The thread that made it (or first handed it to tracedpolicy)."""
    thread_name: str
    created_at: float
    """Wall-clock time (``time.time()``) when the record was made."""
    created_monotonic: float
    tracked: bool
    """Made through tracedpolicy, so counted as created, closed, leaked and open."""
    site: CreationSite | None = None
    stack: tuple[str, ...] = ()
    """Frames above the site, outermost last, when a deeper stack was asked for."""
    set_on: dict[int, str] = field(default_factory=dict)
    """The threads (ident: name) it is the current loop of, through a traced policy."""
    close_hooked: bool = False
    closed_monotonic: float | None = None
    leaked: str | None = None
    """The leak reason, once it leaked."""
    inherited: bool = False
    """Made before this process forked from its parent."""
    span_context: Any = None
    """The creation span's context, so a leak span can link to it."""
    _ref: weakref.ReferenceType[Loop] | None = field(default=None, repr=False)

    @property
    def closed(self) -> bool:
        return self.closed_monotonic is not None

    @property
    def made_by(self) -> str:
        """Origin and creator, as leak lines and reports show them."""
        return f"{self.origin} {self.creator}"

    @property
    def loop(self) -> Loop | None:
        """The loop, or None once it was garbage-collected."""
        return self._ref() if self._ref is not None else None

    @property
    def counts_as_open(self) -> bool:
        """Made here, and neither closed, leaked nor inherited: ``asyncio_loop_open``."""
        return self.tracked and not (self.closed or self.leaked or self.inherited)

    def age(self, now: float | None = None) -> float:
        """Seconds since creation, up to the close if it closed."""
        end = self.closed_monotonic or (time.monotonic() if now is None else now)
        return end - self.created_monotonic


class _ThreadLoops(threading.local):
    """This thread's current loop per policy label, and the sentinel that outlives nothing."""

    def __init__(self) -> None:
        self.current: dict[Hashable, LoopRecord] = {}
        self.sentinel: object | None = None


class LoopRegistry:
    """The live records, keyed by the loop's identity while it lives."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._records: dict[int, LoopRecord] = {}
        self._lock = threading.RLock()
        self._threads = _ThreadLoops()
        #: Leaks seen where no Python work may run (a dying thread, a GC callback), for flush().
        self._pending: collections.deque[tuple[LoopRecord, str]] = collections.deque()
        #: How many frames above the creation site to keep (0: the site only).
        self.stack_depth = 0
        self.closed_listeners: list[Callable[[LoopRecord, float], None]] = []
        self.leaked_listeners: list[Callable[[LoopRecord, str], None]] = []
        self.inherited_listeners: list[Callable[[LoopRecord], None]] = []

    def record_for(self, loop: Loop, origin: str, creator: str, tracked: bool) -> LoopRecord | None:
        """The loop's record, made on first sight; None for a loop that takes no weakref."""
        key = id(loop)
        record = self._records.get(key)
        if record is not None and record.loop is loop:
            if tracked and not record.tracked:
                self._track(record, loop, origin, creator)
            return record
        site, stack = capture_site(self.stack_depth, loop) if tracked else (None, ())
        record = LoopRecord(
            loop_id=next(self._ids),
            origin=origin,
            creator=creator,
            loop_class=class_name(type(loop)),
            thread_id=threading.get_ident(),
            thread_name=threading.current_thread().name,
            created_at=time.time(),
            created_monotonic=time.monotonic(),
            tracked=tracked,
            site=site,
            stack=stack,
        )
        try:
            record._ref = weakref.ref(loop, functools.partial(self._collected, key, record))
        except TypeError:
            return None
        with self._lock:
            self._records[key] = record
        if tracked:
            record.close_hooked = _hook_close(loop)
        return record

    def _track(self, record: LoopRecord, loop: Loop, origin: str, creator: str) -> None:
        """A loop first handed to tracedpolicy (set) turns out to be made by a traced layer."""
        record.origin, record.creator = origin, creator
        record.site, record.stack = capture_site(self.stack_depth, loop)
        record.tracked = True
        record.close_hooked = _hook_close(loop)

    def last_id(self) -> int:
        """The id of the newest record: a loop seen after this call gets a larger one."""
        return int(repr(self._ids)[len("count(") : -1]) - 1

    def knows(self, loop: Loop) -> bool:
        """Whether ``loop`` has a record (it was made by or handed to tracedpolicy)."""
        record = self._records.get(id(loop))
        return record is not None and record.loop is loop

    def tracks(self, loop: Loop) -> bool:
        """Whether ``loop`` was made through tracedpolicy (counted as created already)."""
        record = self._records.get(id(loop))
        return record is not None and record.tracked and record.loop is loop

    def records(self) -> list[LoopRecord]:
        with self._lock:
            return list(self._records.values())

    def open_records(self) -> list[LoopRecord]:
        """Loops made here that are alive and not closed (leaked ones too), oldest first."""
        self.sweep()
        return [
            r
            for r in self.records()
            if r.tracked and not r.closed and not r.inherited and r.loop is not None
        ]

    def flush(self) -> None:
        """Count the leaks noticed since the last flush; every reader of the counts calls this.

        A thread's end and a garbage collection are noticed in callbacks that may run while
        the interpreter tears a thread down, where logging or tracing would create a dummy
        thread; so they only queue what they saw, and the work happens here.
        """
        while self._pending:
            try:
                record, reason = self._pending.popleft()
            except IndexError:  # another thread flushed it meanwhile
                return
            if reason == THREAD_EXIT and record.loop is not None and record.loop.is_closed():
                continue  # closed after its thread ended, before we looked: not a leak
            self._leak(record, reason)

    def sweep(self) -> None:
        """Count queued leaks, and notice closes that no hook on ``close`` could see."""
        self.flush()
        for record in self.records():
            if record.tracked and not record.close_hooked and not record.closed:
                loop = record.loop
                if loop is not None and loop.is_closed():
                    self._closed(record, loop)

    def set_current(self, policy: Hashable, record: LoopRecord | None) -> None:
        """A traced ``set_event_loop`` on ``policy`` made ``record``'s loop this thread's."""
        threads = self._threads
        ident = threading.get_ident()
        previous = threads.current.pop(policy, None)
        if previous is not None:
            previous.set_on.pop(ident, None)
        if record is None:
            return
        record.set_on[ident] = threading.current_thread().name
        threads.current[policy] = record
        if threads.sentinel is None:
            # Thread-local storage is cleared when the thread ends, and the sentinel with it.
            sentinel = threads.sentinel = _Sentinel()
            end = weakref.finalize(sentinel, self._thread_ended, ident, threads.current)
            end.atexit = False  # the main thread's loops are open_at_exit's business

    def closed(self, loop: Loop) -> None:
        """``loop.close()`` returned: mark its record closed, if it has one."""
        record = self._records.get(id(loop))
        if record is not None and record.tracked and record._ref is not None:
            self._closed(record, loop)

    def leak_open_at_exit(self) -> list[LoopRecord]:
        """Count every loop still open as leaked ``open_at_exit``; return them."""
        leaked = [r for r in self.open_records() if not r.leaked]
        for record in leaked:
            self._leak(record, OPEN_AT_EXIT)
        return leaked

    def after_fork_in_child(self) -> None:
        """The parent's loops are not this process's: stop counting them here."""
        self._lock = threading.RLock()  # the parent's may have been held by another thread
        self._threads = _ThreadLoops()
        for record in self.records():
            if record.inherited:
                continue
            was_open = record.counts_as_open
            record.inherited = True
            record.set_on.clear()
            if was_open:
                _notify(self.inherited_listeners, record)

    def _closed(self, record: LoopRecord, loop: Loop) -> None:
        if not loop.is_closed():
            return  # close() returned but the loop is still open (a subclass's choice)
        with self._lock:
            if record.closed or record.leaked or record.inherited:
                return  # closing twice counts once; a leak stays a leak
            record.closed_monotonic = time.monotonic()
        _notify(self.closed_listeners, record, record.age())

    def _leak(self, record: LoopRecord, reason: str) -> None:
        with self._lock:
            if not record.counts_as_open:
                return
            record.leaked = reason
        _notify(self.leaked_listeners, record, reason)

    def _collected(self, key: int, record: LoopRecord, _ref: object) -> None:
        with self._lock:
            if self._records.get(key) is record:
                del self._records[key]
        if record.counts_as_open:
            ended = any(not _thread_alive(ident) for ident in tuple(record.set_on))
            self._pending.append((record, THREAD_EXIT if ended else GC_UNCLOSED))

    def _thread_ended(self, ident: int, current: dict[Hashable, LoopRecord]) -> None:
        for record in list(current.values()):
            record.set_on.pop(ident, None)
            if record.counts_as_open and record.loop is not None:
                self._pending.append((record, THREAD_EXIT))


def _thread_alive(ident: int) -> bool:
    """Whether a thread still runs, without taking threading's lock.

    This runs in weakref callbacks, which the garbage collector may call while this very
    thread holds ``threading._active_limbo_lock`` (a plain Lock): ``threading.enumerate()``
    would deadlock there. A dict lookup needs no lock; a thread leaves ``_active`` as its
    ``run()`` returns, before its thread-local storage (and the loop in it) is dropped.
    """
    active = getattr(threading, "_active", None)
    if isinstance(active, dict):
        return ident in active
    return True  # an unknown threading module: call it gc_unclosed rather than guess


class _Sentinel:
    """An object whose only job is to be dropped when its thread ends."""


def _notify(listeners: list[Any], *args: Any) -> None:
    """Tell each listener; one that fails is counted and never reaches the caller."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception as failure:
            record_internal_error("registry", failure)


_hooked_classes: set[type] = set()
_hook_lock = threading.Lock()


def _hook_close(loop: Loop) -> bool:
    """Make ``loop.close()`` tell the registry after it ran; False if it cannot.

    The hook goes on the loop's class, once, and keeps nothing per loop; for loops without a
    record it only costs a dict lookup. A close that ``__del__`` makes for an abandoned loop is
    not counted: that loop was garbage-collected unclosed. A loop with its own instance
    ``close`` is left to :meth:`LoopRegistry.sweep`.
    """
    if "close" in getattr(loop, "__dict__", {}):
        return False
    cls = type(loop)
    with _hook_lock:
        if cls in _hooked_classes:
            return True
        original: Callable[[Any], None] = cls.close

        @functools.wraps(original)
        def close(self: Any) -> None:
            original(self)
            if sys._getframe(1).f_code.co_name != "__del__":
                REGISTRY.closed(self)

        try:
            cls.close = close  # type: ignore[method-assign]
        except (AttributeError, TypeError):  # an extension type: immutable
            return False
        _hooked_classes.add(cls)
        return True


#: The process's registry: every traced policy and loop factory records here.
REGISTRY = LoopRegistry()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=REGISTRY.after_fork_in_child)
