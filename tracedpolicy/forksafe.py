"""Locks that work in a forked child, whatever another thread was doing at fork time.

A thread of the parent may hold one of tracedpolicy's locks at the moment another thread forks;
the child inherits that lock held, and no thread there will ever release it. Every lock
tracedpolicy takes comes from here, and the child re-makes each in place before any other fork
handler of tracedpolicy runs (``_at_fork_reinit``, as CPython's own threading, logging and
concurrent.futures do with theirs). Locks are made per module and per histogram, so their
number is bounded by the label values in use.
"""

from __future__ import annotations

import os
import threading
from typing import Any

_locks: list[Any] = []


def lock() -> threading.Lock:
    """A ``threading.Lock`` that is free again in a forked child."""
    made = threading.Lock()
    _locks.append(made)
    return made


def rlock() -> threading.RLock:
    """A ``threading.RLock`` that is free again in a forked child."""
    made = threading.RLock()
    _locks.append(made)
    return made


def _reinit_in_child() -> None:
    for held in _locks:
        reinit = getattr(held, "_at_fork_reinit", None)
        if reinit is not None:  # every CPython from 3.9 has it
            reinit()


if hasattr(os, "register_at_fork"):
    # Registered before any other handler of tracedpolicy's (stats imports this first), and
    # after-fork handlers run in registration order.
    os.register_at_fork(after_in_child=_reinit_in_child)
