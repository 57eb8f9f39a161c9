"""The hook on each loop class's ``close``: the registry learns of a close the moment it
returns. Put once on the class, it keeps nothing per loop; the whole-process mode takes its
own hooks off again as it ends, each once no open loop's ``close`` goes through it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import Any, Callable, Protocol

from tracedpolicy.base import forksafe
from tracedpolicy.records.record import Loop, LoopRecord


class Registry(Protocol):
    """What a close hook tells (:class:`tracedpolicy.records.loops.LoopRegistry`)."""

    def closed(self, loop: Any) -> None: ...

    def abandoned(self, loop: Any) -> None: ...

    def records(self) -> Iterable[LoopRecord]: ...


def _finalizer_code() -> Any:
    """The code of asyncio's own finalizer, ``BaseEventLoop.__del__``: the one close that is no
    close of the user's (None if it has none). uvloop's finalizer closes nothing; a user's
    ``__del__`` is theirs. Compared by identity: a set's ``in`` takes the set's lock on
    free-threaded 3.13, on every close."""
    import asyncio.base_events

    finalizer = vars(asyncio.base_events.BaseEventLoop).get("__del__")
    return getattr(finalizer, "__code__", None)


_FINALIZER = _finalizer_code()
_MISSING = object()
#: Reentrant: a collection during an allocation under it may run a ``__del__`` that closes or
#: makes a loop, which takes it again in the same thread.
_hook_lock = forksafe.rlock()
#: Each hooked class: what its own ``close`` was (``_MISSING`` if inherited), and the hook.
_close_hooks: dict[type, tuple[Any, Callable[[Any], None]]] = {}
#: Hooks made while the whole-process mode was on, which it takes off when it ends...
_hooks_of_the_mode: set[type] = set()
_mode_on = False
#: ...as soon as no open loop made through them is left.
_hooks_to_release: set[type] = set()


def _called_by_finalizer() -> bool:
    """Whether the ``close`` hook (the caller) was called by asyncio's finalizer.

    A close called straight from C (``atexit.register(loop.close)``, a thread started with
    ``_thread.start_new_thread(loop.close, ())``) has no Python caller: a close of the user's.
    """
    try:
        caller = sys._getframe(2)
    except ValueError:  # call stack is not deep enough
        return False
    return _FINALIZER is not None and caller.f_code is _FINALIZER


def _has_own(instance: object, name: str) -> bool:
    """Whether ``instance`` has an attribute ``name`` of its own, shadowing its class's method.

    Asked without reading ``instance.__dict__``: on 3.11 and 3.12 that makes CPython turn the
    instance's inline attribute values into a real dict for good, and every later attribute
    access of the loop (its whole run) 20-30% slower.
    """
    try:
        bound = getattr(instance, name)
    except AttributeError:
        return False
    return getattr(bound, "__func__", None) is not getattr(type(instance), name, None)


def hook_close(loop: Loop, registry: Registry) -> bool:
    """Make ``loop.close()`` tell the registry after it ran; False if it cannot.

    The hook goes on the loop's class, once, and keeps nothing per loop; for loops without a
    record it only costs a dict lookup. A close that asyncio's ``__del__`` makes for an
    abandoned loop is not counted: that loop was garbage-collected unclosed. A loop with its
    own instance ``close`` is left to :meth:`LoopRegistry.sweep`.
    """
    if _has_own(loop, "close"):
        return False
    cls = type(loop)
    if cls in _close_hooks and not _hooks_to_release:
        return True  # hooked already, and no hook waits to go: no lock for every loop made
    with _hook_lock:
        if cls in _hooks_to_release:
            # A hook of an earlier mode, waiting for its last loop: in use again, and the
            # mode's to take off again if the mode is back on.
            _hooks_to_release.discard(cls)
            if _mode_on:
                _hooks_of_the_mode.add(cls)
        if cls in _close_hooks:
            return True
        original: Callable[[Any], None] = cls.close

        @functools.wraps(original)
        def close(self: Any) -> None:
            original(self)
            if _called_by_finalizer():
                registry.abandoned(self)
            else:
                registry.closed(self)

        own = vars(cls).get("close", _MISSING)
        try:
            cls.close = close  # type: ignore[method-assign]
        except (AttributeError, TypeError):  # an extension type: immutable
            return False
        _close_hooks[cls] = (own, close)
        if _mode_on:
            _hooks_of_the_mode.add(cls)
        return True


def close_hooks_of_the_mode(on: bool, registry: Registry) -> None:
    """The whole-process mode starts (its hooks are noted) or ends (they are taken off, each
    once no open loop depends on it: their closes must still be counted)."""
    global _mode_on
    with _hook_lock:
        _mode_on = on
        if on:
            return
        _hooks_to_release.update(_hooks_of_the_mode)
        _hooks_of_the_mode.clear()
    release_unused_close_hooks(registry)


def release_unused_close_hooks(registry: Registry) -> None:
    """Take off the hooks waiting to go that no open loop's ``close`` goes through any more."""
    if not _hooks_to_release:
        return
    in_use = {
        type(loop).close
        for record in registry.records()
        if record.counts_as_open and (loop := record.loop) is not None
    }
    with _hook_lock:
        for cls in list(_hooks_to_release):
            entry = _close_hooks.get(cls)
            if cls not in _hooks_to_release or entry is None:
                continue  # released meanwhile, by a collection's close in this very loop
            own, hook = entry
            if hook in in_use:
                continue
            _hooks_to_release.discard(cls)
            del _close_hooks[cls]
            if vars(cls).get("close") is not hook:
                continue  # replaced since by someone else: theirs stays
            if own is _MISSING:
                delattr(cls, "close")
            else:
                cls.close = own  # type: ignore[attr-defined]
