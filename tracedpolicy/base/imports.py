"""Run a function once a module is imported, without importing it ourselves.

What only a module's users need waits for them: tracedpolicy's Prometheus collector is
registered when the application imports ``prometheus_client`` (only code that did can scrape
its registry), so a process that never does is spared its ~30 ms of imports. A finder on
``sys.meta_path`` answers for the awaited names alone, hands the spec the other finders give
with a loader that calls back once the module has run, and goes when nothing is awaited.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any, Callable

from tracedpolicy.base import forksafe

Callback = Callable[[ModuleType], None]

_lock = forksafe.lock()
_awaited: dict[str, list[Callback]] = {}


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` now if ``name`` is imported, else as soon as it is."""
    with _lock:
        module = sys.modules.get(name)
        if module is None:
            _awaited.setdefault(name, []).append(callback)
            if _finder not in sys.meta_path:
                sys.meta_path.insert(0, _finder)
            return
    callback(module)


def awaited() -> list[str]:
    """The names whose import is still awaited."""
    with _lock:
        return sorted(_awaited)


def _imported(module: ModuleType) -> None:
    with _lock:
        callbacks = _awaited.pop(module.__name__, [])
        if not _awaited and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
    for callback in callbacks:
        callback(module)


class _CallingBack:
    """The module's own loader, which calls back once the module has run. It answers every
    other question as the real loader does, and the module names the real one."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _imported(module)


class _Finder:
    """Finds nothing itself: the other finders' spec, with a loader that calls back."""

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if fullname not in _awaited:
            return None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _CallingBack(spec.loader)
            return spec
        return None


_finder = _Finder()
