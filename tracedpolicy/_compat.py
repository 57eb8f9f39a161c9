"""Every difference between Python versions' asyncio policy APIs, in one place.

The rest of tracedpolicy asks :data:`RUNNING` what the running Python has instead of testing
``sys.version_info`` itself. :func:`resolve` can also describe another version from another
(simulated) ``asyncio`` module, which is how the rules of 3.14 (policy names made private, no
implicit loop creation, no child watchers) and of 3.16 (no policies at all) are tested on the
Pythons that are installed.

Names are read with ``vars(module).get(name)``, never ``getattr``: on 3.14 the public policy
names live in a module ``__getattr__`` that emits a DeprecationWarning, and tracedpolicy must not
add warnings of its own.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Any, Callable

#: The modules whose frames the "There is no current event loop" warning skips, so that it points
#: at the user's line. asyncio skips its own; a traced policy adds a frame of ours in between.
_SKIPPED_MODULES = ("asyncio", "tracedpolicy")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


@dataclass(frozen=True)
class AsyncioPolicyApi:
    """What one Python's asyncio offers for event loop policies, and how it behaves."""

    version: tuple[int, int, int]
    is_windows: bool
    abstract_policy: type | None
    base_default_policy: type | None
    default_policy: type | None
    windows_selector_policy: type | None
    windows_proactor_policy: type | None
    default_loop_factory: LoopFactory | None
    get_policy: Callable[[], Any] | None
    set_policy: Callable[[Any], None] | None

    @property
    def has_policies(self) -> bool:
        """False where CPython removed the policy system (3.16 and CPython's main branch)."""
        return None not in (self.abstract_policy, self.get_policy, self.set_policy)

    @property
    def creates_loops_implicitly(self) -> bool:
        """Whether the default get_event_loop() makes a loop in the main thread (until 3.13)."""
        return self.version < (3, 14)

    @property
    def warns_on_implicit_creation(self) -> bool:
        """Whether that implicit creation emits "There is no current event loop"."""
        v = self.version
        return (
            (3, 10, 9) <= v < (3, 10, 10) or (3, 11, 1) <= v < (3, 11, 2) or (3, 12) <= v < (3, 14)
        )

    @property
    def has_child_watchers(self) -> bool:
        """Whether policies have get_child_watcher()/set_child_watcher() (removed in 3.14)."""
        return self.version < (3, 14) and not self.is_windows

    @property
    def tracks_set_called(self) -> bool:
        """Whether the default policy's thread state has ``_set_called`` (removed in 3.14)."""
        return self.version < (3, 14)


def _lookup(module: types.ModuleType | None, *names: str) -> Any:
    """Return the first of ``names`` that ``module`` defines, without running its __getattr__."""
    if module is None:
        return None
    namespace = vars(module)
    for name in names:
        if namespace.get(name) is not None:
            return namespace[name]
    return None


def resolve(
    version: tuple[int, int, int] | None = None,
    asyncio_module: types.ModuleType = asyncio,
    platform: str = sys.platform,
) -> AsyncioPolicyApi:
    """Describe the policy API of ``asyncio_module`` as Python ``version`` shapes it.

    Private (3.14) names are preferred and public ones are the fallback, so the same code finds
    ``events._AbstractEventLoopPolicy`` on 3.14 and ``events.AbstractEventLoopPolicy`` before.
    """
    if version is None:
        version = (sys.version_info[0], sys.version_info[1], sys.version_info[2])
    is_windows = platform == "win32"
    events = _lookup(asyncio_module, "events")
    platform_events = _lookup(asyncio_module, "windows_events" if is_windows else "unix_events")
    default_policy = _lookup(platform_events, "_DefaultEventLoopPolicy", "DefaultEventLoopPolicy")
    return AsyncioPolicyApi(
        version=version,
        is_windows=is_windows,
        abstract_policy=_lookup(events, "_AbstractEventLoopPolicy", "AbstractEventLoopPolicy"),
        base_default_policy=_lookup(
            events, "_BaseDefaultEventLoopPolicy", "BaseDefaultEventLoopPolicy"
        ),
        default_policy=default_policy,
        windows_selector_policy=_lookup(
            platform_events, "_WindowsSelectorEventLoopPolicy", "WindowsSelectorEventLoopPolicy"
        )
        if is_windows
        else None,
        windows_proactor_policy=_lookup(
            platform_events, "_WindowsProactorEventLoopPolicy", "WindowsProactorEventLoopPolicy"
        )
        if is_windows
        else None,
        default_loop_factory=_lookup(asyncio_module, "EventLoop")
        or getattr(default_policy, "_loop_factory", None)
        or _lookup(platform_events, "SelectorEventLoop"),
        get_policy=_lookup(events, "_get_event_loop_policy", "get_event_loop_policy"),
        set_policy=_lookup(events, "_set_event_loop_policy", "set_event_loop_policy"),
    )


#: The policy API of the running Python.
RUNNING = resolve()


def warn_no_current_event_loop() -> None:
    """Emit the default policy's "There is no current event loop" DeprecationWarning.

    Attributed as CPython's own walk attributes it (3.12/3.13 ``BaseDefaultEventLoopPolicy``):
    to the first frame outside asyncio, here also outside tracedpolicy. A frame whose globals
    lack ``__name__`` fails the walk with the same AttributeError as in CPython.
    """
    stacklevel = 1
    frame: types.FrameType | None = sys._getframe(0)
    while frame:
        module = frame.f_globals.get("__name__")
        if not any(module == name or module.startswith(name + ".") for name in _SKIPPED_MODULES):  # type: ignore[union-attr]
            break
        frame = frame.f_back
        stacklevel += 1
    warnings.warn("There is no current event loop", DeprecationWarning, stacklevel=stacklevel)


def no_current_event_loop_error() -> RuntimeError:
    """Build the RuntimeError every CPython raises when a thread has no event loop."""
    name = threading.current_thread().name
    return RuntimeError(f"There is no current event loop in thread {name!r}.")
