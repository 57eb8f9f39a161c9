"""What the registry keeps per thread: the loop each policy made current there, the policies'
per-thread states, and the sentinel whose end says the thread ended.

A loop set through a traced policy is this thread's current loop of that policy's state holder
until a clear, or until the thread ends: then, unless the policy's own state says another loop
(or none) is current there, it leaked as ``thread_exit``. All of it lives in a plain
``threading.local`` (see :func:`tracedpolicy.records.events.thread_state` for why not a
subclass of it), so it goes with the thread.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any, Callable

from tracedpolicy.base import forksafe
from tracedpolicy.records.record import LoopRecord
from tracedpolicy.records.sites import thread_state_of


class ThreadLoops:
    """This thread's current loop per policy state holder (with that holder's own state for
    this thread, where it has one), and the sentinel that outlives nothing.

    Kept in a plain ``threading.local`` (see :func:`tracedpolicy.records.events.thread_state`
    for why not a subclass of it).
    """

    __slots__ = ("current", "sentinel", "states")

    def __init__(self) -> None:
        self.current: dict[int, tuple[LoopRecord, dict[str, Any] | None]] = {}
        self.sentinel: object | None = None
        #: This thread's state dicts of the policies' ``threading.local`` objects, by the
        #: local's id, each with a weak reference to its local (the entry goes with it).
        self.states: dict[int, tuple[weakref.ref[threading.local], dict[str, Any]]] = {}


def loops_of_this_thread(storage: threading.local) -> ThreadLoops:
    """This thread's :class:`ThreadLoops` in ``storage``, made on first use."""
    try:
        return storage.loops  # type: ignore[no-any-return]
    except AttributeError:
        loops = storage.loops = ThreadLoops()
        return loops


def thread_alive(ident: int) -> bool:
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


class Sentinel:
    """An object whose only job is to be dropped when its thread ends."""


def state_of(threads: ThreadLoops, holder: object) -> dict[str, Any] | None:
    """:func:`thread_state_of`, remembered per thread and policy: on free-threaded 3.13 each
    read of a ``threading.local`` subclass's dict (asyncio's ``_Local``) takes the interpreter's
    global type lock, and a thread sets loops through the same policy again and again."""
    local = getattr(holder, "_local", None)
    if not isinstance(local, threading.local):
        return None
    key = id(local)
    states = threads.states
    known = forksafe.lookup(states, key)
    if known is not None and known[0]() is local:
        return known[1]
    state = thread_state_of(holder)
    if state is not None:
        if len(states) >= _STATES_KEPT:
            states.pop(next(iter(states)), None)
        forget = functools.partial(_forget_state, states, key, forksafe.in_unsettled_child)
        states[key] = (weakref.ref(local, forget), state)
    return state


#: How many policies' states a thread remembers (a thread uses one or two).
_STATES_KEPT = 8


def _forget_state(
    states: dict[int, tuple[weakref.ref[threading.local], dict[str, Any]]],
    key: int,
    unsettled: Callable[[], bool],
    ref: weakref.ref[threading.local],
) -> None:
    """A policy's local went: so does this thread's memory of its state (its loop with it)."""
    if unsettled():
        return  # a parent's, dropped as a forked child starts
    # No module global here: this may run as the interpreter tears the modules down.
    known = states.get(key)
    if known is not None and known[0] is ref:
        states.pop(key, None)
