"""Loops made without a policy: hooks on the constructors every loop class runs.

Servers no longer ask the policy for loops: uvicorn hands ``asyncio.SelectorEventLoop`` or
``uvloop.new_event_loop`` to ``asyncio.run(loop_factory=...)``, and Python 3.16 has no policies
at all. Every loop still runs a constructor, and these are hooked, once per class:

* ``asyncio.base_events.BaseEventLoop.__init__``: every stdlib loop (selector, proactor,
  ``asyncio.EventLoop``) and every subclass that calls ``super().__init__()``, on every version;
* ``uvloop.Loop.__init__``: uvloop's loop is not asyncio's; hooked as uvloop is imported (a
  finder on ``sys.meta_path`` that answers for uvloop alone and goes again with
  :func:`unhook`), so processes that never import uvloop do not load it.

A loop constructed inside a traced policy or factory is that layer's to record (see
:mod:`tracedpolicy.records.making`); one constructed anywhere else is recorded here, with origin
``constructor`` and the loop's class as creator.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any, Callable

from tracedpolicy.base import forksafe
from tracedpolicy.base.patching import Patch, wrap
from tracedpolicy.records.events import CONSTRUCTOR, thread_state
from tracedpolicy.records.making import make_loop, note_constructed
from tracedpolicy.records.recorder import recorder_for
from tracedpolicy.records.sites import class_name

_lock = forksafe.lock()
_patches: list[Patch] = []
_active = False


def _construct(
    wrapped: Callable[..., Any], loop: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A loop class's ``__init__``: recorded here unless an outer layer is making the loop."""
    if not _active or loop is None:
        return wrapped(*args, **kwargs)
    if thread_state().making is not None:
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
    """uvloop was imported: hook its loop class."""
    loop_class = getattr(module, "Loop", None)
    if isinstance(loop_class, type):
        _hook(loop_class)


class _UvloopFinder:
    """Finds nothing itself: when uvloop is imported, it lets the other finders find it and
    hooks ``uvloop.Loop`` once the module has run. Other imports pass it by."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname != "uvloop" or not _active:
            return None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _hooking_loader_class()(spec.loader)
                return spec
        return None


@functools.cache
def _hooking_loader_class() -> Any:
    """The real loader, with the hook after its ``exec_module`` (wrapt's proxy, imported only
    as uvloop is: see :mod:`tracedpolicy.base.patching`)."""
    import wrapt

    class _HookingLoader(wrapt.ObjectProxy):  # type: ignore[type-arg]
        """The module then names the real loader. Everything else (``is_package``,
        ``get_code``, ``get_filename``, ``path``, ``isinstance`` checks, ...) is the real
        loader's: asked before uvloop is imported, through
        ``importlib.util.find_spec("uvloop").loader``, it answers as it would bare."""

        def exec_module(self, module: Any) -> None:
            loader = self.__wrapped__
            module.__loader__ = module.__spec__.loader = loader
            loader.exec_module(module)
            _hook_uvloop(module)

    return _HookingLoader


_finder = _UvloopFinder()


def hook() -> None:
    """Record every loop constructed from now on (idempotent)."""
    global _active
    import asyncio.base_events

    with _lock:
        _active = True
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
    _hook(asyncio.base_events.BaseEventLoop)
    if "uvloop" in sys.modules:
        _hook_uvloop(sys.modules["uvloop"])


def unhook() -> None:
    """Put every constructor back as it was, and the import system too (idempotent)."""
    global _active
    with _lock:
        _active = False
        patches = list(_patches)
        _patches.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
    for patch in reversed(patches):
        patch.undo()
