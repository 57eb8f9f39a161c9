"""Locks, and exit callbacks, that work in a forked child.

Locks: whatever another thread was doing at fork time.

A thread of the parent may hold one of tracedpolicy's locks at the moment another thread forks;
the child inherits that lock held, and no thread there will ever release it. Every lock
tracedpolicy takes comes from here, and the child re-makes each in place before any other fork
handler of tracedpolicy runs (``_at_fork_reinit``, as CPython's own threading, logging and
concurrent.futures do with theirs). Locks are made per module and per histogram, so their
number is bounded by the label values in use.

Exit callbacks (:func:`at_exit`): atexit, and also multiprocessing's forked workers, which
clear atexit and multiprocessing's own finalizers as they start and leave with ``os._exit``;
there the callbacks run among the finalizers multiprocessing runs last.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, Callable, TypeVar

K = TypeVar("K")
V = TypeVar("V")

_locks: list[Any] = []
#: Serialises additions to ``_locks``: on a free-threaded build, threads appending to one list
#: at once contend on its own lock, which a fork could then leave held in the child.
_adding = threading.Lock()


def lock() -> threading.Lock:
    """A ``threading.Lock`` that is free again in a forked child."""
    made = threading.Lock()
    with _adding:
        _locks.append(made)
    return made


def rlock() -> threading.RLock:
    """A ``threading.RLock`` that is free again in a forked child."""
    made = threading.RLock()
    with _adding:
        _locks.append(made)
    return made


#: The process whose fork handlers ran last (see :func:`in_unsettled_child`).
_settled_pid = os.getpid()


def in_unsettled_child(_getpid: Callable[[], int] = os.getpid) -> bool:
    """Whether this is a forked child whose fork handlers have not run yet.

    As a child starts, CPython drops the states of the parent's other threads before any fork
    handler runs, and what they held (thread-local loops, sentinels) may run weakref callbacks
    there. A lock, or on a free-threaded build a dict or deque, that another thread held at
    fork is still held then: such a callback must return before it touches anything shared.
    What it would have noted is the parent's, which the child sets aside anyway.

    Also true as the interpreter tears down, once this module's globals are gone (callbacks
    bind this function early, and ``os`` is bound here): there is nothing left to note then.
    """
    return _getpid() != _settled_pid


def _reinit_in_child() -> None:
    global _settled_pid
    _settled_pid = os.getpid()
    _adding._at_fork_reinit()  # type: ignore[attr-defined]
    for held in _locks:
        reinit = getattr(held, "_at_fork_reinit", None)
        if reinit is not None:  # every CPython from 3.9 has it
            reinit()


def lookup(mapping: Mapping[K, V], key: K) -> V | None:
    """``mapping.get(key)``, without the lock a free-threaded build's ``dict.get`` takes.

    There ``dict.get`` takes the dict's own per-object lock (a subscript reads without one):
    threads that look up one shared dict at once contend on it, and a lock that another thread
    held, or was handed, as the process forked stays held in the child for good.
    """
    try:
        return mapping[key]
    except KeyError:
        return None


class _Callbacks(list):  # type: ignore[type-arg]
    """The exit callbacks: a list multiprocessing can keep a weak reference to."""


_exit_callbacks: list[Callable[[], None]] = _Callbacks()
_after_fork_registered = False


def at_exit(callback: Callable[[], None]) -> None:
    """Call ``callback`` as this process exits, and as each forked child exits, even one of
    multiprocessing's. It must be harmless to call twice (atexit and multiprocessing both may)."""
    if not _exit_callbacks:
        atexit.register(_run_exit_callbacks)
    _exit_callbacks.append(callback)


def _run_exit_callbacks() -> None:
    for callback in list(_exit_callbacks):
        callback()


def _before_fork() -> None:
    """If multiprocessing is in use, have its forked workers run the exit callbacks."""
    global _after_fork_registered
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _exit_callbacks and not _after_fork_registered:
        _after_fork_registered = True
        util.register_after_fork(_exit_callbacks, _finalize_in_worker)


def _finalize_in_worker(_: object) -> None:
    util = sys.modules["multiprocessing.util"]
    util.Finalize(None, _run_exit_callbacks, exitpriority=0)


if hasattr(os, "register_at_fork"):
    # Registered before any other handler of tracedpolicy's (stats imports this first), and
    # after-fork handlers run in registration order.
    os.register_at_fork(before=_before_fork, after_in_child=_reinit_in_child)
