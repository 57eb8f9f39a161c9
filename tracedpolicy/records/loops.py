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

import atexit
import collections
import contextlib
import functools
import gc
import itertools
import os
import threading
import time
import weakref
from typing import Any, Callable

from tracedpolicy.base import forksafe
from tracedpolicy.records.closehooks import hook_close, release_unused_close_hooks
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.record import (
    GC_UNCLOSED,
    OPEN_AT_EXIT,
    THREAD_EXIT,
    Expected,
    Loop,
    LoopRecord,
)
from tracedpolicy.records.sites import CreationSite, capture_site, class_name, current_thread_name
from tracedpolicy.records.threadloops import (
    Sentinel,
    loops_of_this_thread,
    state_of,
    thread_alive,
)


class LoopRegistry:
    """The live records, keyed by the loop's identity while it lives.

    Slotted: every thread reads its attributes on each make, set and close, and free-threaded
    3.13 reads an attribute kept in an instance's dict under the object's own lock.
    """

    __slots__ = (
        "_collecting",
        "_dying",
        "_end_locks",
        "_expected",
        "_ids",
        "_inherited",
        "_lock",
        "_pending",
        "_records",
        "_thread_ends",
        "_threads",
        "_unsettled",
        "closed_listeners",
        "inherited_listeners",
        "leaked_listeners",
        "stack_depth",
        "tracked_listeners",
    )

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._records: dict[int, LoopRecord] = {}
        self._lock = forksafe.rlock()
        self._end_locks = tuple(forksafe.rlock() for _ in range(16))
        self._threads = threading.local()
        #: Leaks seen where no Python work may run (a dying thread, a GC callback), for flush().
        self._pending: collections.deque[tuple[LoopRecord, str]] = collections.deque()
        #: Open loops whose weakref the running collection cleared, by id: the collection
        #: calls ``__del__`` methods after that, and an owner's may still close the loop.
        self._dying: dict[int, LoopRecord] = {}
        #: In a forked child, the records of each parent process before it, never read again.
        self._inherited: list[tuple[object, ...]] = []
        #: The weak references to threads' sentinels, each kept until its thread ends.
        self._thread_ends: dict[int, weakref.ref[Sentinel]] = {}
        self._collecting = False
        #: Bound here: weakref callbacks may run as the interpreter tears down the modules.
        self._unsettled = forksafe.in_unsettled_child
        #: Loops constructed inside a layer that has not recorded them yet, by id (the layer
        #: holds each one until it does, so the id stays its own).
        self._expected: dict[int, Expected] = {}
        #: How many frames above the creation site to keep (0: the site only).
        self.stack_depth = 0
        self.closed_listeners: list[Callable[[LoopRecord, float], None]] = []
        self.leaked_listeners: list[Callable[[LoopRecord, str], None]] = []
        self.inherited_listeners: list[Callable[[], None]] = []
        #: Told of each loop as it becomes tracked (loop health watches it from then on).
        self.tracked_listeners: list[Callable[[LoopRecord, Loop], None]] = []

    def record_for(
        self,
        loop: Loop,
        origin: str,
        creator: str,
        tracked: bool,
        expected: Expected | None = None,
    ) -> LoopRecord | None:
        """The loop's record, made on first sight; None for a loop that takes no weakref.

        ``expected``: when and where it was made, if not here and now (:meth:`expect`).
        """
        key = id(loop)
        record = forksafe.lookup(self._records, key)
        if record is not None and record.loop is loop:
            if tracked and not record.tracked:
                self._track(record, loop, origin, creator, expected)
            return record
        site: CreationSite | None
        stack: tuple[str, ...]
        if not tracked:
            site, stack = None, ()
        elif expected is not None:
            site, stack = expected.site, expected.stack
        else:
            site, stack = capture_site(self.stack_depth, loop)
        record = LoopRecord(
            loop_id=next(self._ids),
            origin=origin,
            creator=creator,
            loop_class=class_name(type(loop)),
            thread_id=threading.get_ident(),
            thread_name=current_thread_name(),
            created_at=time.time() if expected is None else expected.created_at,
            created_monotonic=time.monotonic() if expected is None else expected.created_monotonic,
            tracked=tracked,
            site=site,
            stack=stack,
        )
        try:
            # The callback holds no record: a record, its weakref and the callback would be a
            # reference cycle, garbage that only the next collection frees.
            record._ref = weakref.ref(loop, functools.partial(self._collected, key))
        except TypeError:
            return None
        # No lock: no other record of this key can come or go meanwhile (one of a loop that
        # died at this address was dropped by its weakref's callback, before the memory was
        # reused), and a lock every thread takes on every make is what free threading is not for.
        self._records[key] = record
        if tracked:
            record.close_hooked = hook_close(loop, self)
            if self.tracked_listeners:
                _notify(self.tracked_listeners, record, loop)
        return record

    def _track(
        self, record: LoopRecord, loop: Loop, origin: str, creator: str, expected: Expected | None
    ) -> None:
        """A loop first handed to tracedpolicy (set) turns out to be made by a traced layer."""
        record.origin, record.creator = origin, creator
        if expected is None:
            record.site, record.stack = capture_site(self.stack_depth, loop)
        else:
            record.site, record.stack = expected.site, expected.stack
            record.created_at = expected.created_at
            record.created_monotonic = expected.created_monotonic
        record.tracked = True
        record.close_hooked = hook_close(loop, self)
        if self.tracked_listeners:
            _notify(self.tracked_listeners, record, loop)

    def expect(self, loop: Loop) -> None:
        """``loop`` was just constructed inside a layer that records it only once it returns
        (a factory, a policy's ``new_event_loop``): note where, and see its close meanwhile."""
        self._expected[id(loop)] = Expected(*capture_site(self.stack_depth, loop))
        hook_close(loop, self)

    def settle(self, loop: Loop) -> Expected | None:
        """The layer that constructed ``loop`` returned: what :meth:`expect` noted, forgotten
        here (None if it was not expected)."""
        return self._expected.pop(id(loop), None)

    def last_id(self) -> int:
        """The id of the newest record: a loop seen after this call gets a larger one."""
        return int(repr(self._ids)[len("count(") : -1]) - 1

    def knows(self, loop: Loop) -> bool:
        """Whether ``loop`` has a record (it was made by or handed to tracedpolicy)."""
        record = forksafe.lookup(self._records, id(loop))
        return record is not None and record.loop is loop

    def tracks(self, loop: Loop) -> bool:
        """Whether ``loop`` was made through tracedpolicy (counted as created already)."""
        record = forksafe.lookup(self._records, id(loop))
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
        release_unused_close_hooks(self)

    def sweep(self) -> None:
        """Count queued leaks, and notice closes that no hook on ``close`` could see."""
        self.flush()
        for record in self.records():
            if record.tracked and not record.close_hooked and not record.closed:
                loop = record.loop
                if loop is not None and loop.is_closed():
                    self._closed(record, loop)

    def set_current(self, holder: object, record: LoopRecord | None) -> None:
        """A traced ``set_event_loop`` made ``record``'s loop this thread's loop of ``holder``.

        ``holder`` is the object that keeps the state (a wrapped policy's base), so two wrappers
        around one base share it.
        """
        threads = loops_of_this_thread(self._threads)
        ident = threading.get_ident()
        previous = threads.current.pop(id(holder), None)
        if previous is not None:
            previous[0].set_on.pop(ident, None)
        if record is None:
            return
        record.set_on[ident] = current_thread_name()
        threads.current[id(holder)] = (record, state_of(threads, holder))
        if threads.sentinel is None:
            # Thread-local storage is cleared when the thread ends, and the sentinel with it.
            # Not weakref.finalize: a forked child runs these callbacks before its fork handlers
            # (in_unsettled_child), where finalize's registry may be locked for good.
            sentinel = threads.sentinel = Sentinel()
            end = weakref.ref(
                sentinel, functools.partial(self._thread_ended, ident, threads.current)
            )
            self._thread_ends[id(end)] = end

    def closed(self, loop: Loop, at: float | None = None) -> None:
        """``loop.close()`` returned (at ``at``, a ``time.monotonic()``, if not now): mark its
        record closed, if it has one, or its expectation (:meth:`expect`)."""
        record = forksafe.lookup(self._records, id(loop))
        if record is not None and record.tracked and record.loop is loop:
            self._closed(record, loop, at)
            return
        expected = forksafe.lookup(self._expected, id(loop))
        if expected is not None and expected.closed_monotonic is None and loop.is_closed():
            expected.closed_monotonic = time.monotonic()
            return
        if self._dying:
            self._closed_while_dying(loop)

    def _closed_while_dying(self, loop: Loop) -> None:
        """A close from a ``__del__`` the collection runs after clearing the loop's weakref
        (an owner in a reference cycle): a close, not the leak already queued."""
        record = self._dying.pop(id(loop), None)
        if record is not None and record.loop_class == class_name(type(loop)):
            self._closed(record, loop)

    def abandoned(self, loop: Loop) -> None:
        """asyncio's finaliser closed ``loop``: a later close by an owner's ``__del__`` in the
        same collection comes too late to count."""
        if self._dying:
            self._dying.pop(id(loop), None)

    def collection_phase(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry: ids of dying loops mean something only during the
        collection that cleared them (afterwards the memory, and the id, may be reused)."""
        self._collecting = phase == "start"
        if self._dying:
            self._dying.clear()

    def leak_open_at_exit(self) -> list[LoopRecord]:
        """Count every loop still open as leaked ``open_at_exit``; return them."""
        leaked = [r for r in self.open_records() if not r.leaked]
        for record in leaked:
            self._leak(record, OPEN_AT_EXIT)
        return leaked

    def after_fork_in_child(self) -> None:
        """The parent's loops are not this process's: stop counting them here.

        Leaks the parent noticed but had not counted yet are the parent's too. Nothing the
        parent's threads used is read here, only replaced: on a free-threaded build a dict, a
        deque or a list has a lock of its own, and one another thread held, or was handed, at
        fork stays held in the child. The parent's records are kept aside, unread: a loop of
        theirs that closes or goes here finds no record of this process.
        """
        # Unread; dropped, they would run the teardown of their records and this thread's loops.
        self._inherited.append((self._records, self._threads, self._thread_ends))
        self._records = {}
        self._pending = collections.deque()
        self._dying = {}
        self._expected = {}  # a parent's thread was making them
        self._threads = threading.local()
        self._thread_ends = {}
        # The counts say which loops are open: a thread of the parent may have been between
        # making a record and counting its loop when the fork happened.
        _notify(self.inherited_listeners)

    def _closed(self, record: LoopRecord, loop: Loop, at: float | None = None) -> None:
        if not loop.is_closed():
            return  # close() returned but the loop is still open (a subclass's choice)
        with self._end_lock(record):
            if record.closed or record.leaked or record.inherited:
                return  # closing twice counts once; a leak stays a leak
            record.closed_monotonic = time.monotonic() if at is None else at
        _notify(self.closed_listeners, record, record.age())
        release_unused_close_hooks(self)

    def _leak(self, record: LoopRecord, reason: str) -> None:
        with self._end_lock(record):
            if not record.counts_as_open:
                return
            record.leaked = reason
        _notify(self.leaked_listeners, record, reason)

    def _collected(self, key: int, ref: object) -> None:
        if self._unsettled():
            return  # a parent's loop, dropped with its thread as the child starts
        # No lock, as in record_for: this key's record cannot change meanwhile (the loop is
        # dying, and its memory is reused only once this callback has returned).
        record = forksafe.lookup(self._records, key)
        if record is None or record._ref is not ref:
            return
        self._records.pop(key, None)
        if record.counts_as_open:
            if self._collecting:
                self._dying[key] = record
            ended = any(not thread_alive(ident) for ident in tuple(record.set_on))
            self._pending.append((record, THREAD_EXIT if ended else GC_UNCLOSED))

    def _end_lock(self, record: LoopRecord) -> threading.RLock:
        """The lock that makes a loop's end (closed or leaked) happen once: one of a few, by
        loop id, so that threads closing their own loops do not all wait on one lock."""
        return self._end_locks[record.loop_id % len(self._end_locks)]

    def _holds(self, record: LoopRecord, loop: Loop) -> bool:
        """Whether ``record`` is this process's (a forked child keeps its parent's aside)."""
        return forksafe.lookup(self._records, id(loop)) is record

    def _thread_ended(
        self,
        ident: int,
        current: dict[int, tuple[LoopRecord, dict[str, Any] | None]],
        end: weakref.ref[Sentinel],
    ) -> None:
        if self._unsettled():
            return  # a parent's thread, dropped as the child starts: its loops are the parent's
        self._thread_ends.pop(id(end), None)
        for record, state in list(current.values()):
            record.set_on.pop(ident, None)
            loop = record.loop
            if state is not None and state.get("_loop") is not loop:
                continue  # the policy's own state says it was no longer current there
            if record.counts_as_open and loop is not None and self._holds(record, loop):
                self._pending.append((record, THREAD_EXIT))


def _notify(listeners: list[Any], *args: Any) -> None:
    """Tell each listener; one that fails is counted and never reaches the caller."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception as failure:
            record_internal_error("registry", failure)


#: The process's registry: every traced policy and loop factory records here.
REGISTRY = LoopRegistry()


def _stop_watching_collections() -> None:
    """At exit, before the interpreter tears down: CPython 3.14 was seen to crash in its final
    collections with this callback still in ``gc.callbacks`` (a loop still set on the main
    thread)."""
    with contextlib.suppress(ValueError):
        gc.callbacks.remove(REGISTRY.collection_phase)


def _stop_watching_threads() -> None:
    """At exit: the main thread's loops are open_at_exit's business, and a callback run as the
    interpreter tears down would find the modules it reads gone."""
    REGISTRY._thread_ends.clear()


gc.callbacks.append(REGISTRY.collection_phase)
atexit.register(_stop_watching_collections)
atexit.register(_stop_watching_threads)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=REGISTRY.after_fork_in_child)
