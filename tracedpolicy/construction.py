"""Loops made without a policy: hooks on the constructors every loop class runs.

Servers no longer ask the policy for loops: uvicorn hands ``asyncio.SelectorEventLoop`` or
``uvloop.new_event_loop`` to ``asyncio.run(loop_factory=...)``, and Python 3.16 has no policies
at all. Every loop still runs a constructor, and these are hooked, once per class:

* ``asyncio.base_events.BaseEventLoop.__init__``: every stdlib loop (selector, proactor,
  ``asyncio.EventLoop``) and every subclass that calls ``super().__init__()``, on every version;
* ``uvloop.Loop.__init__``: uvloop's loop is not asyncio's; hooked when uvloop is imported (a
  wrapt post-import hook), so processes that never import it do not load it.

A loop constructed inside a traced policy or factory is that layer's to record (see
:mod:`tracedpolicy.making`); one constructed anywhere else is recorded here, with origin
``constructor`` and the loop's class as creator.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import wrapt

from tracedpolicy.loops import class_name
from tracedpolicy.making import make_loop, note_constructed
from tracedpolicy.patching import Patch, wrap
from tracedpolicy.recorder import CONSTRUCTOR, recorder_for, thread_state

_lock = threading.Lock()
_patches: list[Patch] = []
_active = False
_uvloop_hook_registered = False


def _construct(
    wrapped: Callable[..., Any], loop: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A loop class's ``__init__``: recorded here unless an outer layer is making the loop."""
    if not _active or loop is None:
        return wrapped(*args, **kwargs)
    if thread_state.making is not None:
        result = wrapped(*args, **kwargs)
        note_constructed(loop)
        return result

    def construct() -> Any:
        wrapped(*args, **kwargs)
        return loop

    make_loop(construct, recorder_for(class_name(type(loop)), CONSTRUCTOR))
    return None


def _hook(owner: Any) -> None:
    with _lock:
        if _active and not any(patch.owner is owner for patch in _patches):
            _patches.append(wrap(owner, "__init__", _construct))


def _hook_uvloop(module: Any) -> None:
    """wrapt calls this when uvloop is imported (at once, if it already is)."""
    loop_class = getattr(module, "Loop", None)
    if isinstance(loop_class, type):
        _hook(loop_class)


def hook() -> None:
    """Record every loop constructed from now on (idempotent)."""
    global _active, _uvloop_hook_registered
    import asyncio.base_events

    with _lock:
        _active = True
        first = not _uvloop_hook_registered
        _uvloop_hook_registered = True
    _hook(asyncio.base_events.BaseEventLoop)
    if first:
        # Registered once per process; it does nothing while the hooks are off.
        wrapt.register_post_import_hook(_hook_uvloop, "uvloop")
    else:
        import sys

        if "uvloop" in sys.modules:
            _hook_uvloop(sys.modules["uvloop"])


def unhook() -> None:
    """Put every constructor back as it was (idempotent)."""
    global _active
    with _lock:
        _active = False
        patches = list(_patches)
        _patches.clear()
    for patch in reversed(patches):
        patch.undo()
