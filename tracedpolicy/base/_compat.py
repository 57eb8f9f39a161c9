"""Every difference between Python versions' asyncio policy APIs, in one place.

The rest of tracedpolicy asks :data:`RUNNING` what the running Python has instead of testing
``sys.version_info`` itself. Behaviour is read from the running asyncio wherever it can tell
(whether the default ``get_event_loop`` creates and warns, whether the thread state has
``_set_called``, whether child watchers exist), with the version number only as the fallback.
:func:`resolve` can also describe another (simulated) ``asyncio`` module, which is how the
3.16 shape (no policies at all) and other platforms are tested on the Pythons installed.

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
    """What one Python's asyncio offers for event loop policies, and how it behaves.

    Behaviour is read from that asyncio wherever it can tell (see :func:`resolve`), so a
    backport or a patched build behaves as its own asyncio does; the version number decides
    only what asyncio cannot tell.
    """

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
    stock_get_event_loop: Callable[[Any], Any] | None
    """CPython's own ``get_event_loop`` of the default policy, which a traced policy re-runs
    rather than calls; None if it is missing or was already replaced (patched) at import."""
    creates_loops_implicitly: bool
    """Whether the default get_event_loop() makes a loop in the main thread (until 3.13)."""
    warns_on_implicit_creation: bool
    """Whether that implicit creation emits "There is no current event loop"."""
    has_child_watchers: bool
    """Whether policies have get_child_watcher()/set_child_watcher() (removed in 3.14)."""
    tracks_set_called: bool
    """Whether the default policy's thread state has ``_set_called`` (removed in 3.14)."""

    @property
    def has_policies(self) -> bool:
        """False where CPython removed the policy system (3.16 and CPython's main branch)."""
        return None not in (self.abstract_policy, self.get_policy, self.set_policy)


def _lookup(module: types.ModuleType | None, *names: str) -> Any:
    """Return the first of ``names`` that ``module`` defines, without running its __getattr__."""
    if module is None:
        return None
    namespace = vars(module)
    for name in names:
        if namespace.get(name) is not None:
            return namespace[name]
    return None


def _stock_get_event_loop(base_default: type | None) -> Callable[[Any], Any] | None:
    """The default policy's own ``get_event_loop``, unless something replaced it already.

    A test may patch the method before tracedpolicy is imported; a patch is not CPython's
    code, and re-running CPython's code in its place would ignore it.
    """
    function = vars(base_default).get("get_event_loop") if base_default is not None else None
    if not isinstance(function, types.FunctionType):
        return None
    if function.__qualname__ != f"{base_default.__qualname__}.get_event_loop":  # type: ignore[union-attr]
        return None
    return function


def _version_rules(version: tuple[int, int, int]) -> dict[str, bool]:
    """The behaviour the reference facts give each version: the fallback when asyncio is silent."""
    return {
        "creates_loops_implicitly": version < (3, 14),
        "warns_on_implicit_creation": (
            (3, 10, 9) <= version < (3, 10, 10)
            or (3, 11, 1) <= version < (3, 11, 2)
            or (3, 12) <= version < (3, 14)
        ),
        "has_child_watchers": version < (3, 14),
        "tracks_set_called": version < (3, 14),
    }


def _behaviour(
    version: tuple[int, int, int],
    abstract: type | None,
    base_default: type | None,
    stock_get: Callable[[Any], Any] | None,
    is_windows: bool,
) -> dict[str, bool]:
    """Read each behaviour from asyncio's own classes; the version decides what they cannot.

    The default ``get_event_loop`` names ``new_event_loop`` only where it creates implicitly,
    and ``warn`` / ``DeprecationWarning`` only where that creation warns; ``_set_called`` is a
    class attribute of the thread state where it exists; child watchers are methods.
    """
    rules = _version_rules(version)
    if stock_get is not None:
        names = stock_get.__code__.co_names
        rules["creates_loops_implicitly"] = "new_event_loop" in names
        rules["warns_on_implicit_creation"] = "warn" in names and "DeprecationWarning" in names
    local = vars(base_default).get("_Local") if base_default is not None else None
    if isinstance(local, type):
        rules["tracks_set_called"] = hasattr(local, "_set_called")
    if abstract is not None:
        rules["has_child_watchers"] = hasattr(abstract, "get_child_watcher")
    rules["has_child_watchers"] = rules["has_child_watchers"] and not is_windows
    return rules


def resolve(
    version: tuple[int, int, int] | None = None,
    asyncio_module: types.ModuleType = asyncio,
    platform: str = sys.platform,
) -> AsyncioPolicyApi:
    """Describe the policy API of ``asyncio_module``, read from it; ``version`` fills the gaps.

    Private (3.14) names are preferred and public ones are the fallback, so the same code finds
    ``events._AbstractEventLoopPolicy`` on 3.14 and ``events.AbstractEventLoopPolicy`` before.
    """
    if version is None:
        version = (sys.version_info[0], sys.version_info[1], sys.version_info[2])
    is_windows = platform == "win32"
    events = _lookup(asyncio_module, "events")
    platform_events = _lookup(asyncio_module, "windows_events" if is_windows else "unix_events")
    default_policy = _lookup(platform_events, "_DefaultEventLoopPolicy", "DefaultEventLoopPolicy")
    abstract = _lookup(events, "_AbstractEventLoopPolicy", "AbstractEventLoopPolicy")
    base_default = _lookup(events, "_BaseDefaultEventLoopPolicy", "BaseDefaultEventLoopPolicy")
    stock_get = _stock_get_event_loop(base_default)
    return AsyncioPolicyApi(
        version=version,
        is_windows=is_windows,
        abstract_policy=abstract,
        base_default_policy=base_default,
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
        stock_get_event_loop=stock_get,
        **_behaviour(version, abstract, base_default, stock_get, is_windows),
    )


#: The policy API of the running Python.
RUNNING = resolve()


def peek_policy() -> Any:
    """The process-wide policy as asyncio holds it, None until one is made (never makes one).

    ``events._event_loop_policy`` on every version that has policies.
    """
    return vars(asyncio.events).get("_event_loop_policy")


def lazy_default_policy_class() -> Any:
    """The class asyncio's ``_init_event_loop_policy`` makes the default policy of, looked up as
    it looks it up, at the moment of the call (a test may have patched it): the package's
    ``DefaultEventLoopPolicy`` before 3.14, the platform module's ``_DefaultEventLoopPolicy``
    from 3.14."""
    if "_DefaultEventLoopPolicy" in _INIT_POLICY_NAMES:
        module = "windows_events" if sys.platform == "win32" else "unix_events"
        return vars(getattr(asyncio, module))["_DefaultEventLoopPolicy"]
    return asyncio.DefaultEventLoopPolicy  # type: ignore[attr-defined,unused-ignore]


_INIT_POLICY = vars(asyncio.events).get("_init_event_loop_policy")
#: The names asyncio's lazy default maker reads (empty if it has none).
_INIT_POLICY_NAMES: tuple[str, ...] = getattr(
    getattr(_INIT_POLICY, "__code__", None), "co_names", ()
)


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
