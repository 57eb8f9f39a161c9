"""Stand-in asyncio modules for Pythons that are not installed here: 3.14 and 3.16.

The 3.14 classes follow CPython 3.14.0's ``asyncio/events.py``: private names, public names
only through a warning module ``__getattr__``, no implicit loop creation, no ``_set_called``,
no child watchers.
"""

from __future__ import annotations

import asyncio
import threading
import types
import warnings
from typing import Any


class AbstractPolicy314:
    """Stands in for 3.14's ``events._AbstractEventLoopPolicy``."""

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        raise NotImplementedError

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError


class BaseDefaultPolicy314(AbstractPolicy314):
    """Stands in for 3.14's ``events._BaseDefaultEventLoopPolicy``."""

    _loop_factory: Any = asyncio.SelectorEventLoop

    class _Local(threading.local):
        _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self) -> None:
        self._local = self._Local()

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        if self._local._loop is None:
            raise RuntimeError(
                f"There is no current event loop in thread {threading.current_thread().name!r}."
            )
        return self._local._loop

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is not None and not isinstance(loop, asyncio.AbstractEventLoop):
            raise TypeError(
                "loop must be an instance of AbstractEventLoop or None, "
                f"not '{type(loop).__name__}'"
            )
        self._local._loop = loop

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop = self._loop_factory()
        return loop


class UnixDefaultPolicy314(BaseDefaultPolicy314):
    """Stands in for 3.14's ``unix_events._UnixDefaultEventLoopPolicy``."""


def _deprecated_getattr(module: str, names: dict[str, Any]) -> Any:
    def __getattr__(name: str) -> Any:
        if name in names:
            warnings.warn(
                f"'{module}.{name}' is deprecated and slated for removal in Python 3.16",
                DeprecationWarning,
                stacklevel=2,
            )
            return names[name]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def asyncio_314() -> types.ModuleType:
    """An ``asyncio`` package shaped like 3.14's on Unix."""
    events = types.ModuleType("asyncio.events")
    events._AbstractEventLoopPolicy = AbstractPolicy314  # type: ignore[attr-defined]
    events._BaseDefaultEventLoopPolicy = BaseDefaultPolicy314  # type: ignore[attr-defined]
    state: dict[str, Any] = {"policy": None}

    def _get_event_loop_policy() -> Any:
        if state["policy"] is None:
            state["policy"] = UnixDefaultPolicy314()
        return state["policy"]

    def _set_event_loop_policy(policy: Any) -> None:
        state["policy"] = policy

    events._get_event_loop_policy = _get_event_loop_policy  # type: ignore[attr-defined]
    events._set_event_loop_policy = _set_event_loop_policy  # type: ignore[attr-defined]
    unix_events = types.ModuleType("asyncio.unix_events")
    unix_events._UnixDefaultEventLoopPolicy = UnixDefaultPolicy314  # type: ignore[attr-defined]
    unix_events._DefaultEventLoopPolicy = UnixDefaultPolicy314  # type: ignore[attr-defined]
    unix_events.SelectorEventLoop = asyncio.SelectorEventLoop  # type: ignore[attr-defined]
    package = types.ModuleType("asyncio")
    package.events = events  # type: ignore[attr-defined]
    package.unix_events = unix_events  # type: ignore[attr-defined]
    package.EventLoop = asyncio.SelectorEventLoop  # type: ignore[attr-defined]
    package.__getattr__ = _deprecated_getattr(  # type: ignore[method-assign]
        "asyncio",
        {
            "AbstractEventLoopPolicy": AbstractPolicy314,
            "DefaultEventLoopPolicy": UnixDefaultPolicy314,
        },
    )
    return package


def asyncio_316() -> types.ModuleType:
    """An ``asyncio`` package shaped like CPython main's (3.16): no policies at all."""
    events = types.ModuleType("asyncio.events")
    unix_events = types.ModuleType("asyncio.unix_events")
    unix_events.SelectorEventLoop = asyncio.SelectorEventLoop  # type: ignore[attr-defined]
    package = types.ModuleType("asyncio")
    package.events = events  # type: ignore[attr-defined]
    package.unix_events = unix_events  # type: ignore[attr-defined]
    package.EventLoop = asyncio.SelectorEventLoop  # type: ignore[attr-defined]
    return package


#: Run first in a fresh interpreter, hides the policy system the way CPython main (3.16) has
#: removed it (a script then imports tracedpolicy and carries on).
HIDE_POLICIES = """
import asyncio, asyncio.events, sys
platform_events = asyncio.windows_events if sys.platform == "win32" else asyncio.unix_events
for module, names in [
    (asyncio, ["AbstractEventLoopPolicy", "DefaultEventLoopPolicy",
               "get_event_loop_policy", "set_event_loop_policy"]),
    (asyncio.events, ["AbstractEventLoopPolicy", "BaseDefaultEventLoopPolicy",
                      "get_event_loop_policy", "set_event_loop_policy",
                      "_AbstractEventLoopPolicy", "_BaseDefaultEventLoopPolicy",
                      "_get_event_loop_policy", "_set_event_loop_policy"]),
    (platform_events, ["DefaultEventLoopPolicy", "_DefaultEventLoopPolicy",
                       "_UnixDefaultEventLoopPolicy"]),
]:
    for name in names:
        module.__dict__.pop(name, None)
"""
