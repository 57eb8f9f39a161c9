"""Version gates: the running Python is read right, and 3.14 / 3.16 are simulated."""

from __future__ import annotations

import asyncio
import sys
import threading
import warnings
from typing import Any, Callable

import pytest

from tracedpolicy import _compat
from tracedpolicy._compat import RUNNING, resolve
from tracedpolicy.hierarchy import build_hierarchy
from tracedpolicy.policy import TracedEventLoopPolicy, traced_subclass
from tracedpolicy.recorder import recorder_for

from . import simulated
from .outcomes import observe


def test_running_api_is_this_pythons_asyncio() -> None:
    assert RUNNING.version == tuple(sys.version_info[:3])
    assert RUNNING.abstract_policy is asyncio.AbstractEventLoopPolicy
    assert RUNNING.base_default_policy is asyncio.events.BaseDefaultEventLoopPolicy
    assert RUNNING.default_policy is asyncio.DefaultEventLoopPolicy
    assert RUNNING.get_policy is asyncio.get_event_loop_policy
    assert RUNNING.set_policy is asyncio.set_event_loop_policy
    assert RUNNING.has_policies
    assert RUNNING.has_child_watchers == hasattr(asyncio.DefaultEventLoopPolicy(), "_watcher")
    local_class: Any = vars(asyncio.events.BaseDefaultEventLoopPolicy)["_Local"]
    assert RUNNING.tracks_set_called == hasattr(local_class, "_set_called")


@pytest.mark.parametrize(
    ("version", "implicit", "warns", "watchers"),
    [
        ((3, 9, 18), True, False, True),
        ((3, 10, 8), True, False, True),
        ((3, 10, 9), True, True, True),
        ((3, 10, 13), True, False, True),
        ((3, 11, 0), True, False, True),
        ((3, 11, 1), True, True, True),
        ((3, 11, 7), True, False, True),
        ((3, 12, 1), True, True, True),
        ((3, 13, 0), True, True, True),
        ((3, 14, 0), False, False, False),
    ],
)
def test_version_gates_follow_the_reference_facts(
    version: tuple[int, int, int], implicit: bool, warns: bool, watchers: bool
) -> None:
    api = resolve(version, platform="linux")
    assert (api.creates_loops_implicitly, api.warns_on_implicit_creation) == (implicit, warns)
    assert api.has_child_watchers == watchers
    assert api.tracks_set_called == (version < (3, 14))
    assert resolve(version, platform="win32").has_child_watchers is False


def test_314_names_resolve_to_the_private_ones_without_a_warning() -> None:
    module = simulated.asyncio_314()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api = resolve((3, 14, 0), module, platform="linux")
    assert api.abstract_policy is simulated.AbstractPolicy314
    assert api.base_default_policy is simulated.BaseDefaultPolicy314
    assert api.default_policy is simulated.UnixDefaultPolicy314
    assert api.get_policy is vars(module.events)["_get_event_loop_policy"]
    assert api.set_policy is vars(module.events)["_set_event_loop_policy"]
    assert api.has_policies
    # The stand-in really warns on the public names, so the check above could fail.
    with pytest.warns(DeprecationWarning, match=r"slated for removal in Python 3\.16"):
        assert module.DefaultEventLoopPolicy is simulated.UnixDefaultPolicy314


def test_316_has_no_policies_but_a_default_loop_factory() -> None:
    api = resolve((3, 16, 0), simulated.asyncio_316(), platform="linux")
    assert not api.has_policies
    assert api.default_loop_factory is asyncio.SelectorEventLoop
    assert build_hierarchy(api) == {}
    with pytest.raises(RuntimeError, match="loop_factory"):
        TracedEventLoopPolicy(_api=api)


API_314 = resolve((3, 14, 0), simulated.asyncio_314(), platform="linux")
TRACED_314: dict[str, Callable[[], Any]] = {
    "wrapper": lambda: TracedEventLoopPolicy(simulated.UnixDefaultPolicy314(), _api=API_314),
    "subclass": lambda: traced_subclass(simulated.UnixDefaultPolicy314, api=API_314)(),
    "hierarchy": lambda: build_hierarchy(API_314)["TracedDefaultEventLoopPolicy"](),
}


@pytest.mark.parametrize("tracing", TRACED_314)
def test_314_main_thread_get_raises_instead_of_creating(tracing: str) -> None:
    recorder = recorder_for(f"{simulated.__name__}.UnixDefaultPolicy314")
    misses = recorder.snapshot().get("get_event_loop.miss.main", 0)
    policy = TRACED_314[tracing]()
    bare = simulated.UnixDefaultPolicy314()
    outcome = observe(policy.get_event_loop)
    assert outcome == observe(bare.get_event_loop)
    assert outcome.error == (
        "RuntimeError",
        "There is no current event loop in thread 'MainThread'.",
    )
    assert outcome.warnings == []
    assert recorder.snapshot()["get_event_loop.miss.main"] == misses + 1


@pytest.mark.parametrize("tracing", TRACED_314)
def test_314_policies_have_no_child_watchers_and_keep_set_and_get(
    tracing: str, loops: list[Any]
) -> None:
    policy = TRACED_314[tracing]()
    assert not hasattr(policy, "get_child_watcher")
    assert not hasattr(policy, "set_child_watcher")
    assert not hasattr(policy._local, "_set_called")
    loop = policy.new_event_loop()
    loops.append(loop)
    policy.set_event_loop(loop)
    assert policy.get_event_loop() is loop
    assert observe(lambda: policy.set_event_loop(object())).error == (
        "TypeError",
        "loop must be an instance of AbstractEventLoop or None, not 'object'",
    )


def test_314_hierarchy_subclasses_the_private_classes() -> None:
    classes = build_hierarchy(API_314)
    assert issubclass(classes["TracedDefaultEventLoopPolicy"], simulated.UnixDefaultPolicy314)
    assert issubclass(classes["TracedSelectorEventLoopPolicy"], simulated.UnixDefaultPolicy314)
    assert set(classes) == {"TracedDefaultEventLoopPolicy", "TracedSelectorEventLoopPolicy"}


def test_warning_walk_skips_asyncio_and_tracedpolicy_frames_only() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        _compat.warn_no_current_event_loop()
    assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]


def test_no_current_event_loop_error_names_the_thread() -> None:
    box: list[RuntimeError] = []
    thread = threading.Thread(target=lambda: box.append(_compat.no_current_event_loop_error()))
    thread.name = "named-thread"
    thread.start()
    thread.join()
    assert str(box[0]) == "There is no current event loop in thread 'named-thread'."
