"""The traced stdlib classes, and the Windows ones built from stand-ins by the same code."""

from __future__ import annotations

import asyncio
import sys
import types
import warnings
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy.base._compat import RUNNING, resolve
from tracedpolicy.records.recorder import recorder_for
from tracedpolicy.sources.hierarchy import WINDOWS_NAMES, build_hierarchy
from tracedpolicy.sources.policy import is_traced

BaseDefault: type = RUNNING.base_default_policy  # type: ignore[assignment]


class ProactorEventLoop(asyncio.SelectorEventLoop):
    """Stands in for windows_events.ProactorEventLoop: a distinct loop class to be made."""


class WindowsSelectorEventLoopPolicy(BaseDefault):  # type: ignore[misc]
    _loop_factory = asyncio.SelectorEventLoop


class WindowsProactorEventLoopPolicy(BaseDefault):  # type: ignore[misc]
    _loop_factory = ProactorEventLoop


def windows_asyncio() -> types.ModuleType:
    """An ``asyncio`` shaped like 3.12's on Windows (no asyncio.EventLoop)."""
    windows_events = types.ModuleType("asyncio.windows_events")
    windows_events.WindowsSelectorEventLoopPolicy = WindowsSelectorEventLoopPolicy  # type: ignore[attr-defined]
    windows_events.WindowsProactorEventLoopPolicy = WindowsProactorEventLoopPolicy  # type: ignore[attr-defined]
    windows_events.DefaultEventLoopPolicy = WindowsProactorEventLoopPolicy  # type: ignore[attr-defined]
    package = types.ModuleType("asyncio")
    package.events = asyncio.events  # type: ignore[attr-defined]
    package.windows_events = windows_events  # type: ignore[attr-defined]
    return package


WINDOWS = resolve((3, 12, 1), windows_asyncio(), platform="win32")


def test_windows_api_finds_the_windows_policies_and_the_proactor_default() -> None:
    assert WINDOWS.default_policy is WindowsProactorEventLoopPolicy
    assert WINDOWS.windows_selector_policy is WindowsSelectorEventLoopPolicy
    assert WINDOWS.windows_proactor_policy is WindowsProactorEventLoopPolicy
    assert WINDOWS.default_loop_factory is ProactorEventLoop
    assert not WINDOWS.has_child_watchers


@pytest.mark.parametrize(
    ("name", "stdlib_class", "loop_class"),
    [
        ("TracedDefaultEventLoopPolicy", WindowsProactorEventLoopPolicy, ProactorEventLoop),
        ("TracedWindowsProactorEventLoopPolicy", WindowsProactorEventLoopPolicy, ProactorEventLoop),
        (
            "TracedWindowsSelectorEventLoopPolicy",
            WindowsSelectorEventLoopPolicy,
            asyncio.SelectorEventLoop,
        ),
        (
            "TracedSelectorEventLoopPolicy",
            WindowsSelectorEventLoopPolicy,
            asyncio.SelectorEventLoop,
        ),
    ],
)
def test_windows_classes_subclass_their_counterpart_and_trace_it(
    name: str, stdlib_class: type, loop_class: type, loops: list[Any]
) -> None:
    cls = build_hierarchy(WINDOWS)[name]
    assert cls.__name__ == name and cls.__module__ == "tracedpolicy"
    assert issubclass(cls, stdlib_class) and is_traced(cls)
    recorder = recorder_for(f"{__name__}.{stdlib_class.__qualname__}")
    made = recorder.snapshot().get("loops.created", 0)
    policy: Any = cls()
    loop = policy.new_event_loop()
    loops.append(loop)
    assert type(loop) is loop_class
    policy.set_event_loop(loop)
    assert policy.get_event_loop() is loop
    assert recorder.snapshot()["loops.created"] == made + 1


def test_this_platforms_classes_subclass_asyncios(loops: list[Any]) -> None:
    default = tracedpolicy.TracedDefaultEventLoopPolicy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the public names warn on 3.14+
        assert issubclass(default, asyncio.DefaultEventLoopPolicy)
        assert isinstance(default(), asyncio.AbstractEventLoopPolicy)
    selector_loop = tracedpolicy.TracedSelectorEventLoopPolicy().new_event_loop()
    loops.append(selector_loop)
    assert isinstance(selector_loop, asyncio.SelectorEventLoop)


@pytest.mark.skipif(sys.platform == "win32", reason="the Windows classes exist on Windows")
@pytest.mark.parametrize("name", WINDOWS_NAMES)
def test_windows_names_fail_elsewhere_as_asyncios_do(name: str) -> None:
    stdlib_name = name.replace("Traced", "", 1)
    with pytest.raises(AttributeError) as theirs:
        getattr(asyncio, stdlib_name)
    with pytest.raises(AttributeError) as ours:
        getattr(tracedpolicy, name)
    assert str(ours.value) == str(theirs.value).replace("asyncio", "tracedpolicy").replace(
        stdlib_name, name
    )
    with pytest.raises(ImportError):
        exec(f"from tracedpolicy import {name}", {})
    assert name not in tracedpolicy.__all__


def test_star_import_gives_every_public_name() -> None:
    namespace: dict[str, Any] = {}
    exec("from tracedpolicy import *", namespace)
    assert set(tracedpolicy.__all__) <= set(namespace)
    assert "TracedDefaultEventLoopPolicy" in namespace and "install" in namespace
    assert RUNNING.has_policies
