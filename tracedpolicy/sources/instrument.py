"""The whole-process mode: every loop in the process, whoever makes it.

:func:`install` traces the policy that is process-wide now; servers and applications make loops
in other ways too. :func:`instrument` adds, for as long as it is on:

* the process-wide policy, and every policy set later (``uvloop.install()``,
  ``asyncio.set_event_loop_policy(...)``) or made lazily after ``None``, traced in place: the
  very object, given a traced subclass of its class, so ``get_event_loop_policy() is p`` holds;
* the loop factories given to ``asyncio.Runner`` and so ``asyncio.run(loop_factory=...)``
  (uvicorn, ``uvloop.run()``, 3.11+);
* every loop constructed directly (``asyncio.SelectorEventLoop()``, ``asyncio.EventLoop()``,
  ``uvloop.new_event_loop()``, a policy's base making one), in any thread;
* on Pythons without policies (3.16), the last two, which see every loop there.

A loop that several of these see is recorded once, by the outermost. :func:`uninstrument` puts
back every function, class attribute and policy exactly, leaving a policy the application set
meanwhile in place, untraced. ``python -m tracedpolicy run`` and ``opentelemetry-instrument``
(through :class:`tracedpolicy.instrumentor.TracedPolicyInstrumentor`) turn it on.
"""

from __future__ import annotations

import asyncio.events
import logging
import os
import weakref
from typing import Any, Callable, cast

from tracedpolicy.base import _compat, forksafe
from tracedpolicy.base.options import Options
from tracedpolicy.base.patching import Patch, wrap
from tracedpolicy.exporters import telemetry
from tracedpolicy.health import probe as health
from tracedpolicy.records.closehooks import close_hooks_of_the_mode
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.sources import construction
from tracedpolicy.sources.factory import hook_runner, unhook_runner
from tracedpolicy.sources.install import unwatch_setter, watch_setter
from tracedpolicy.sources.policy import API, is_traced
from tracedpolicy.sources.subclass import (
    switch_off_in_place_classes,
    trace_in_place,
    untrace_in_place,
)

logger = logging.getLogger("tracedpolicy")

_lock = forksafe.rlock()
_on = False
#: Policies traced in place (their class swapped), which uninstrument() gives their class back,
#: by id: a policy may be unhashable or equal to another. Weakly held where it can be.
_traced_in_place: dict[int, Callable[[], Any]] = {}
#: The hook on asyncio's lazy creation of the default policy (after ``None`` was set).
_lazy_default: Patch | None = None
#: The metrics server instrument() started (metrics_port), which uninstrument() stops.
_server: Any | None = None
#: Loop health was off before instrument() turned it on: uninstrument() turns it off again.
_health_turned_on = False


def instrument(**options: Any) -> None:
    """Trace every loop of the process from now on; idempotent and thread-safe.

    ``options`` are the process-wide ones of :func:`tracedpolicy.install` (exporters, creation
    stack, report at exit), over the ``TRACEDPOLICY_*`` variables. A bad one raises before
    anything changes.
    """
    global _on, _lazy_default, _server, _health_turned_on
    if "label" in options:
        raise TypeError(
            "instrument() takes no label: each policy, factory and loop class is named by itself"
        )
    parsed = Options.parse("instrument()", options, refused=("label",))
    with _lock:
        server_before, health_before = telemetry.metrics_server(), health.enabled()
        telemetry.configure(parsed, options)
        if telemetry.metrics_server() is not server_before:
            _server = telemetry.metrics_server()  # started here: uninstrument() stops it
        _health_turned_on = _health_turned_on or (health.enabled() and not health_before)
        _on = True
        close_hooks_of_the_mode(True, REGISTRY)
        if API.has_policies:
            watch_setter(_trace_process_policy, first=True)
            if _lazy_default is None and "_init_event_loop_policy" in vars(asyncio.events):
                _lazy_default = wrap(asyncio.events, "_init_event_loop_policy", _made_lazily)
            _trace_process_policy()
        hook_runner()
        construction.hook()


def uninstrument() -> None:
    """Undo :func:`instrument`: every hook off, every patched object back; idempotent.

    The process-wide policy stays the one the application last chose, untraced.
    """
    global _on, _lazy_default, _server, _health_turned_on
    with _lock:
        _on = False
        server, _server = _server, None
        telemetry.stop_metrics_server(server)
        if _health_turned_on:
            _health_turned_on = False
            off = {"health": False}
            telemetry.configure(Options.parse("uninstrument()", off), off)
        telemetry.stop_copying()  # after a last copy; the next count to copy starts it again
        construction.unhook()
        unhook_runner()
        if API.has_policies:
            unwatch_setter(_trace_process_policy)
            if _lazy_default is not None:
                _lazy_default.undo()
                _lazy_default = None
            for kept in list(_traced_in_place.values()):
                policy = kept()
                if policy is not None:
                    untrace_in_place(policy)
            _traced_in_place.clear()
            switch_off_in_place_classes()
        close_hooks_of_the_mode(False, REGISTRY)


def instrumented() -> bool:
    """Whether the whole-process mode is on."""
    return _on


def _made_lazily(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """asyncio makes the default policy on first use (or after ``None``): trace it there.

    asyncio's own maker is done here as it does it (under its lock, the class looked up as it
    looks it up), with one step between making the policy and publishing it: tracing it. Traced
    after publishing, threads that asked meanwhile would use it untraced (their loops counted as
    constructed, their sets unseen). Any other maker (a patch of it) runs, then is traced.
    """
    if not _on or wrapped is not _STOCK_INIT or args or kwargs:  # (args: fail as it fails)
        result = wrapped(*args, **kwargs)
        if _on:
            _trace_process_policy()
        return result
    events: Any = asyncio.events
    with events._lock:
        if events._event_loop_policy is None:
            policy = _compat.lazy_default_policy_class()()
            _trace(policy)
            events._event_loop_policy = policy
    return None


#: asyncio's own lazy maker of the default policy, as asyncio defines it (names it reads:
#: ``_lock``, ``_event_loop_policy``); None where it has none or it was replaced already.
_STOCK_INIT = (
    _compat._INIT_POLICY
    if {"_lock", "_event_loop_policy"} <= set(_compat._INIT_POLICY_NAMES)
    else None
)


def _trace_process_policy() -> None:
    """Trace the process-wide policy in place (``None`` stays: asyncio makes it lazily).

    A policy whose class cannot be given a traced subclass (an extension type, a test's mock)
    stays as it is: its identity matters more, and the loops it makes are seen, constructed.
    """
    with _lock:
        current = _compat.peek_policy()
        if not _on or (current is not None and is_traced(current)):
            return
        if current is None:
            if _lazy_default is not None:
                return  # traced when asyncio makes it
            current = cast(Any, API.default_policy)()  # no lazy hook here: made now
            cast(Any, API.set_policy)(current)
        _trace(current)


def _trace(policy: Any) -> None:
    """Trace ``policy`` in place, and keep it for uninstrument()."""
    with _lock:
        _remember(policy)
        if not trace_in_place(policy):
            _traced_in_place.pop(id(policy), None)
            logger.info(
                "tracedpolicy cannot trace %s in place; its loops are seen as constructed",
                type(policy).__qualname__,
            )


def _remember(policy: Any) -> None:
    """Keep ``policy`` for uninstrument(), weakly where it takes a weak reference."""
    key = id(policy)
    try:
        _traced_in_place[key] = weakref.ref(policy, lambda _: _traced_in_place.pop(key, None))
    except TypeError:
        _traced_in_place[key] = lambda: policy


#: asyncio's lock, held by the forking thread from just before a fork to just after it.
_held_at_fork: list[Any] = []


def _before_fork() -> None:
    """While the mode makes the default policy lazily (under asyncio's lock, which CPython does
    not make anew in a child), a fork waits for it: the child gets the lock free, not held by
    a thread it does not have."""
    lock = getattr(asyncio.events, "_lock", None)
    if _lazy_default is not None and lock is not None and _STOCK_INIT is not None:
        lock.acquire()
        _held_at_fork.append(lock)


def _after_fork() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )
