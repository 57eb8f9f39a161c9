"""The timed wait: how much of a loop's running time is spent waiting for I/O.

asyncio's selector and proactor loops wait for I/O in their selector's ``select``; timing that
call (only when it may wait) splits the loop's running time into *idle* and *active*, whose
share is its *utilization* (Node's definition). uvloop waits inside libuv, out of reach.

Nothing is set on a loop or its selector (on 3.11 and 3.12 an instance attribute alone makes
CPython give up the object's inline attribute values). The hooks are plain functions put once
on the class that defines the method (``run_forever``, ``select``), taken off exactly when
health goes off.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

from tracedpolicy.base import forksafe
from tracedpolicy.base.patching import Patch, replace
from tracedpolicy.health.probe import CLOCK, LoopHealth

_lock = forksafe.rlock()
_hooks: dict[tuple[type, str], Patch] = {}
"""The class hooks in place, by (class, name): one per class, until health goes off."""
_waits: dict[int, tuple[weakref.ReferenceType[Any], LoopHealth]] = {}
"""The timed selectors (or proactors), by ``id``: the selector, weakly, and its loop's health."""


def has_own(instance: Any, name: str) -> bool:
    """Whether ``instance`` has an attribute ``name`` of its own, which no class hook reaches.

    Asked without reading ``instance.__dict__`` (on 3.11 and 3.12 that alone makes CPython give
    up the instance's inline attribute values): is what the instance answers the class's, bound?
    """
    try:
        bound = getattr(instance, name)
        attribute = inspect.getattr_static(type(instance), name)
    except AttributeError:
        return False
    get = getattr(type(attribute), "__get__", None)
    return get is None or bool(bound != get(attribute, instance, type(instance)))


def hook_class(cls: type, name: str, make: Callable[[Any], Callable[..., Any]]) -> bool:
    """Put ``make(original)`` on the class that defines ``cls.name`` (on ``cls`` itself where
    that class cannot take it, an extension type); once. False if nothing can be hooked."""
    for owner in cls.__mro__:
        if name in vars(owner):
            break
    else:
        return False
    original = vars(owner)[name]
    if not callable(original) or not hasattr(type(original), "__get__"):
        return False  # a mock (no method: it does not bind) in place now: leave the class be
    with _lock:
        if (owner, name) in _hooks or (cls, name) in _hooks:
            return True
        for target in (owner, cls):
            hook = make(original)
            if target is not owner:  # named as the class that holds it now (pickle finds it)
                hook.__qualname__ = f"{target.__qualname__}.{name}"
                hook.__module__ = target.__module__
            try:
                _hooks[(target, name)] = replace(target, name, hook)
                return True
            except (TypeError, AttributeError):  # an extension type: immutable
                continue
    return False


def unhook() -> None:
    """Every class hook off, exactly as it was (a hook replaced since stays, passing through)."""
    with _lock:
        hooks = list(_hooks.values())
        _hooks.clear()
    for patch in reversed(hooks):
        patch.undo()


def _select_hook(select: Callable[..., Any]) -> Callable[..., Any]:
    """``select`` that times a watched loop's wait. A poll (timeout 0, every iteration of a
    busy loop) costs a comparison; a wait, a dict lookup."""

    @functools.wraps(select)
    def hook(self: Any, timeout: float | None = None) -> Any:
        if timeout == 0:
            return select(self, timeout)
        entry = _waits.get(id(self))
        if entry is None or entry[0]() is not self or not entry[1].running:
            return select(self, timeout)
        health = entry[1]
        health.wait_began = began = CLOCK()
        try:
            return select(self, timeout)
        finally:
            health.wait_began = None
            health.idle += CLOCK() - began

    return hook


def time_the_wait(loop: Any, health: LoopHealth) -> bool:
    """Time the selector's (or proactor's) ``select`` when it may wait; False if there is none."""
    waiter = getattr(loop, "_selector", None) or getattr(loop, "_proactor", None)
    if waiter is None or has_own(waiter, "select"):
        return False
    select = getattr(type(waiter), "select", None)
    try:
        parameters = list(inspect.signature(select).parameters) if callable(select) else []
    except (TypeError, ValueError):
        return False
    if parameters != ["self", "timeout"] or not hook_class(type(waiter), "select", _select_hook):
        return False
    key = id(waiter)
    _waits[key] = (weakref.ref(waiter, functools.partial(_wait_gone, key)), health)
    return True


def _wait_gone(
    key: int, ref: object, _unsettled: Callable[[], bool] = forksafe.in_unsettled_child
) -> None:
    """A timed selector was collected: its id may be another's soon."""
    if _unsettled():
        return  # a parent's selector (a forked child keeps its own copy), or the teardown
    entry = _waits.get(key)
    if entry is not None and entry[0] is ref:
        _waits.pop(key, None)


#: The parent's timed selectors, as each forking thread copied them (see probe's
#: ``_before_fork``).
_kept_at_fork: dict[int, dict[int, tuple[weakref.ReferenceType[Any], LoopHealth]]] = {}


def _before_fork() -> None:
    _kept_at_fork[threading.get_ident()] = _waits.copy()


def _after_fork_in_parent() -> None:
    _kept_at_fork.pop(threading.get_ident(), None)


def _after_fork_in_child() -> None:
    """The forking thread's copy, not the parent's dict (another thread may have held that one's
    lock at fork on a free-threaded build), less the selectors collected as the child started,
    which ``_wait_gone`` could not drop then."""
    global _waits, _kept_at_fork
    kept = forksafe.lookup(_kept_at_fork, threading.get_ident()) or {}
    _waits = {key: entry for key, entry in kept.items() if entry[0]() is not None}
    _kept_at_fork = {}


def forget() -> None:
    """No selector is timed any more (health went off)."""
    _waits.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
