"""The process-wide policy: install a traced one, put the previous one back, watch the setter.

While :func:`install` has a traced policy in place, asyncio's policy setter is watched, so a
policy set later by the application (``uvloop.install()``, ``asyncio.set_event_loop_policy``)
does not slip by unnoticed:

* when following (the whole-process mode, :func:`tracedpolicy.instrument`), a traced form of
  the new policy is put in its place (``None``, which means a new default, gets a traced new
  default);
* otherwise the replacement is reported once: a warning on the ``tracedpolicy`` logger naming
  the new policy and the mode that would keep tracing it, and
  ``tracedpolicy_policy_replaced_total``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Callable, cast

from tracedpolicy import _compat, telemetry
from tracedpolicy.options import Options
from tracedpolicy.patching import Patch, wrap
from tracedpolicy.policy import (
    API,
    TracedEventLoopPolicy,
    _check_policy_instance,
    _require_policies,
    is_traced,
    label_of,
)
from tracedpolicy.recorder import count_policy_replaced

logger = logging.getLogger("tracedpolicy")

_lock = threading.RLock()
_installed: Any | None = None
"""The traced policy :func:`install` made process-wide."""
_previous: Any | None = None
"""The policy it replaced, which :func:`uninstall` puts back."""
_options: dict[str, Any] = {}
"""The policy options of the install, for the policies traced when following."""
_following = False
_followed: Any | None = None
"""The traced policy put in place of the application's later choice, while following."""
_warned = False
_setter_patches: list[Patch] = []


def install(base: Any = None, **options: Any) -> Any:
    """Trace the process-wide policy (or ``base``) and make the traced one process-wide.

    Idempotent: while our policy is still installed, ``install()`` returns it. The first
    install remembers the policy it replaced, which :func:`uninstall` restores.
    """
    global _installed, _previous, _options
    _require_policies(API)
    parsed = Options.parse("install()", options)
    if base is not None:
        _check_policy_instance("install()", base, API)
    telemetry.configure(parsed, options)
    get_policy, set_policy = cast(Any, API.get_policy), cast(Any, API.set_policy)
    with _lock:
        current = get_policy()
        if base is None:
            base = current
        elif _installed is not None and _wrapped_by(_installed) is base:
            base = _installed
        # The exporters were configured above; the policy takes only its own options.
        own = {k: v for k, v in options.items() if k not in telemetry.PROCESS_OPTIONS}
        policy = base if is_traced(base) else TracedEventLoopPolicy(base, **own)
        _watch_setter()
        if policy is current:
            return policy
        set_policy(policy)
        if current is not _installed and current is not _followed:
            _previous = current
        _installed = policy
        _options = own
        return policy


def _wrapped_by(policy: Any) -> Any:
    return policy.base if type(policy) is TracedEventLoopPolicy else None


def uninstall() -> None:
    """Put back the policy that the first :func:`install` replaced; a no-op if none did.

    If the application set a policy of its own since, that one stays: untraced, if tracedpolicy
    was following and traced it, as it is otherwise.
    """
    global _installed, _previous, _followed, _following, _warned
    with _lock:
        if _installed is None:
            return
        set_policy = cast(Any, API.set_policy)
        current = _compat.peek_policy()
        _unwatch_setter()
        if current is _installed:
            set_policy(_previous)
        elif _followed is not None and current is _followed:
            set_policy(_followed.base)
        _installed = _previous = _followed = None
        _following = _warned = False


def installed() -> Any | None:
    """The traced policy :func:`install` made process-wide, or None."""
    return _installed


def follow(on: bool) -> None:
    """Trace policies set later (the whole-process mode), or only report them."""
    global _following
    with _lock:
        _following = on
        if on:
            _policy_was_set(cast(Any, API.set_policy))


def _set_policy(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """asyncio's policy setter: it runs as it is (checks, errors), then tracedpolicy looks."""
    result = wrapped(*args, **kwargs)
    _policy_was_set(wrapped)
    return result


def _policy_was_set(set_policy: Callable[[Any], None]) -> None:
    global _followed, _warned
    with _lock:
        current = _compat.peek_policy()
        if (
            _installed is None
            or current is _installed
            or (current is not None and current is _followed)
        ):
            return
        if not _following:
            new = label_of(type(current)) if current is not None else "a new default policy"
            count_policy_replaced(new)
            if not _warned:
                _warned = True
                logger.warning(
                    "the process-wide event loop policy was replaced by %s: tracedpolicy does not"
                    " see the loops it makes; tracedpolicy.instrument() (or python -m"
                    " tracedpolicy run) keeps tracing policies set later",
                    new,
                )
            return
        traced = current if current is not None and is_traced(current) else None
        if traced is None:
            traced = TracedEventLoopPolicy(current, **_options)  # None: a new default
            _followed = traced
        set_policy(traced)


def _watch_setter() -> None:
    """Wrap asyncio's policy setter where asyncio keeps it (idempotent; under _lock).

    3.14+: the private setter, which the public one calls by name, so asyncio's own
    DeprecationWarning still points at the caller. Until 3.13: the public function, in both
    modules that hold it.
    """
    if _setter_patches:
        return
    setter = cast(Callable[..., Any], API.set_policy)
    name = setter.__name__
    for module in (asyncio.events, asyncio):
        if vars(module).get(name) is setter:
            _setter_patches.append(wrap(module, name, _set_policy))


def _unwatch_setter() -> None:
    for patch in reversed(_setter_patches):
        patch.undo()
    _setter_patches.clear()
