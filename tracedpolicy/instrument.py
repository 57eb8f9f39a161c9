"""The whole-process mode: every loop in the process, whoever makes it.

:func:`install` traces the policy that is process-wide now; servers and applications make loops
in other ways too. :func:`instrument` adds, for as long as it is on:

* the process-wide policy, and every policy set later (``uvloop.install()``,
  ``asyncio.set_event_loop_policy(...)``, ``None``), traced in place;
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

import threading
from typing import Any

from tracedpolicy import construction, telemetry
from tracedpolicy.factory import hook_runner, unhook_runner
from tracedpolicy.install import follow, install, uninstall
from tracedpolicy.options import Options
from tracedpolicy.policy import API

_lock = threading.Lock()
_on = False


def instrument(**options: Any) -> None:
    """Trace every loop of the process from now on; idempotent and thread-safe.

    ``options`` are those of :func:`tracedpolicy.install`, over the ``TRACEDPOLICY_*``
    variables. A bad one raises before anything changes.
    """
    global _on
    parsed = Options.parse("instrument()", options)
    if "label" in options:
        raise TypeError(
            "instrument() takes no label: each policy, factory and loop class is named by itself"
        )
    with _lock:
        telemetry.configure(parsed, options)
        if API.has_policies:
            install(**options)
            follow(True)
        hook_runner()
        construction.hook()
        _on = True


def uninstrument() -> None:
    """Undo :func:`instrument`: every hook off, every patched object back; idempotent."""
    global _on
    with _lock:
        construction.unhook()
        unhook_runner()
        if API.has_policies:
            follow(False)
            uninstall()
        _on = False


def instrumented() -> bool:
    """Whether the whole-process mode is on."""
    return _on
