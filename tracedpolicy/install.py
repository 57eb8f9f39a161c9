"""Install a traced policy as the process-wide policy, and put the previous one back."""

from __future__ import annotations

import threading
from typing import Any, cast

from tracedpolicy import telemetry
from tracedpolicy.options import Options
from tracedpolicy.policy import (
    API,
    TracedEventLoopPolicy,
    _check_policy_instance,
    _require_policies,
    is_traced,
)

_lock = threading.Lock()
_installed: Any | None = None
_previous: Any | None = None


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
        if policy is current:
            return policy
        set_policy(policy)
        if current is not _installed:
            _previous = current
        _installed = policy
        return policy


def _wrapped_by(policy: Any) -> Any:
    return policy.base if type(policy) is TracedEventLoopPolicy else None


def uninstall() -> None:
    """Put back the policy that the first :func:`install` replaced; a no-op if none did.

    If someone replaced our policy since, theirs is left in place and only forgotten here.
    """
    global _installed, _previous
    with _lock:
        if _installed is None:
            return
        get_policy, set_policy = cast(Any, API.get_policy), cast(Any, API.set_policy)
        if get_policy() is _installed:
            set_policy(_previous)
        _installed = _previous = None


def installed() -> Any | None:
    """The traced policy :func:`install` made process-wide, or None."""
    return _installed
