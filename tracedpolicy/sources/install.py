"""The process-wide policy: install a traced one, put the previous one back, watch the setter.

While :func:`install` has a traced policy in place, a policy set later by the application
(``uvloop.install()``, ``asyncio.set_event_loop_policy(...)``) replaces it, and tracedpolicy
says so once: a warning on the ``tracedpolicy`` logger naming the new policy and the mode that
would keep tracing it (:func:`tracedpolicy.instrument`), and ``tracedpolicy_policy_replaced``.

:func:`watch_setter` is how both learn of a new policy: asyncio's setter is wrapped (the private
one on 3.14+, which the public one calls by name, so asyncio's own DeprecationWarning still points
at the caller; before, the public function in both modules that hold it) and each listener runs
after it, once the policy is set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, cast

from tracedpolicy.base import _compat, forksafe
from tracedpolicy.base.options import Options
from tracedpolicy.base.patching import Patch, wrap_everywhere
from tracedpolicy.exporters import telemetry
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.recorder import count_policy_replaced
from tracedpolicy.sources.policy import (
    API,
    TracedEventLoopPolicy,
    _check_policy_instance,
    _require_policies,
    is_traced,
    label_of,
)

logger = logging.getLogger("tracedpolicy")

_lock = forksafe.rlock()
_installed: Any | None = None
"""The traced policy :func:`install` made process-wide."""
_previous: Any | None = None
"""The policy it replaced, which :func:`uninstall` puts back."""
_warned = False
_server: Any | None = None
"""The metrics server :func:`install` started, which :func:`uninstall` stops."""
_listeners: list[Callable[[], None]] = []
_setter_patches: list[Patch] = []


def install(base: Any = None, **options: Any) -> Any:
    """Trace the process-wide policy (or ``base``) and make the traced one process-wide.

    Idempotent: while our policy is still installed, ``install()`` returns it. The first
    install remembers the policy it replaced, which :func:`uninstall` restores.
    """
    global _installed, _previous
    _require_policies(API)
    parsed = Options.parse("install()", options)
    if base is not None:
        _check_policy_instance("install()", base, API)
    server_before = telemetry.metrics_server()
    telemetry.configure(parsed, options)
    get_policy, set_policy = cast(Any, API.get_policy), cast(Any, API.set_policy)
    with _lock:
        _note_server(server_before)
        current = get_policy()
        if base is None:
            base = current
        elif _installed is not None and _wrapped_by(_installed) is base:
            base = _installed
        # The exporters were configured above; the policy takes only its own options.
        own = {k: v for k, v in options.items() if k not in telemetry.PROCESS_OPTIONS}
        policy = base if is_traced(base) else TracedEventLoopPolicy(base, **own)
        watch_setter(_notice_replacement)
        if policy is current:
            return policy
        set_policy(policy)
        if current is not _installed:
            _previous = current
        _installed = policy
        return policy


def _wrapped_by(policy: Any) -> Any:
    return policy.base if type(policy) is TracedEventLoopPolicy else None


def _note_server(before: Any) -> None:
    """Remember the metrics server this install started, for uninstall() to stop."""
    global _server
    now = telemetry.metrics_server()
    if now is not None and now is not before:
        _server = now


def uninstall() -> None:
    """Put back the policy that the first :func:`install` replaced; a no-op if none did.

    If someone replaced our policy since, theirs is left in place and only forgotten here. A
    metrics server that :func:`install` started (``metrics_port``) is stopped.
    """
    global _installed, _previous, _warned, _server
    with _lock:
        server, _server = _server, None
        telemetry.stop_metrics_server(server)
        if _installed is None:
            return
        unwatch_setter(_notice_replacement)
        if _compat.peek_policy() is _installed:
            cast(Any, API.set_policy)(_previous)
        _installed = _previous = None
        _warned = False


def installed() -> Any | None:
    """The traced policy :func:`install` made process-wide, or None."""
    return _installed


def _notice_replacement() -> None:
    """Say once that the installed policy was replaced by one tracedpolicy does not see."""
    global _warned
    current = _compat.peek_policy()
    if _installed is None or current is _installed or (current and is_traced(current)):
        return
    new = label_of(type(current)) if current is not None else "a new default policy"
    count_policy_replaced(new)
    with _lock:
        first, _warned = not _warned, True
    if first:
        logger.warning(
            "the process-wide event loop policy was replaced by %s: tracedpolicy does not see the"
            " loops it makes; tracedpolicy.instrument() (or python -m tracedpolicy run) keeps"
            " tracing policies set later",
            new,
        )


def watch_setter(listener: Callable[[], None], first: bool = False) -> None:
    """Call ``listener`` after every policy set, from now on (``first``: before the others)."""
    with _lock:
        if listener in _listeners:
            return
        if first:
            _listeners.insert(0, listener)
        else:
            _listeners.append(listener)
        if _setter_patches:
            return
        setter = cast(Callable[..., Any], API.set_policy)
        name = setter.__name__
        if vars(asyncio.events).get(name) is setter:
            _setter_patches.extend(wrap_everywhere([asyncio.events, asyncio], name, _set_policy))


def unwatch_setter(listener: Callable[[], None]) -> None:
    """Stop calling ``listener``; the setter is put back when nobody listens."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)
        if _listeners:
            return
        patches = list(reversed(_setter_patches))
        _setter_patches.clear()
    for patch in patches:
        patch.undo()


def _set_policy(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """asyncio's policy setter: it runs as it is (checks, errors), then the listeners look."""
    result = wrapped(*args, **kwargs)
    for listener in tuple(_listeners):
        try:
            listener()
        except Exception as failure:  # a policy set must not fail over tracedpolicy
            record_internal_error("policy_setter", failure)
    return result
