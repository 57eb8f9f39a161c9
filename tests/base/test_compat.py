"""Version gates: the running Python is read right, and 3.14 / 3.16 are simulated."""

from __future__ import annotations

import asyncio
import sys
import threading
import types
import warnings
from typing import Any, Callable

import pytest

from tracedpolicy.base import _compat
from tracedpolicy.base._compat import RUNNING, resolve
from tracedpolicy.records.recorder import recorder_for
from tracedpolicy.sources.hierarchy import build_hierarchy
from tracedpolicy.sources.policy import TracedEventLoopPolicy
from tracedpolicy.sources.subclass import traced_subclass

from .. import simulated
from ..outcomes import observe
from ..processes import run_python

#: What the reference facts say of each version: (implicit creation, its warning, watchers).
FACTS = {
    (3, 9, 18): (True, False, True),
    (3, 10, 8): (True, False, True),
    (3, 10, 9): (True, True, True),
    (3, 10, 13): (True, False, True),
    (3, 11, 0): (True, False, True),
    (3, 11, 1): (True, True, True),
    (3, 11, 7): (True, False, True),
    (3, 12, 1): (True, True, True),
    (3, 13, 0): (True, True, True),
    (3, 14, 10): (False, False, False),
    (3, 15, 2): (False, False, False),
}


def _names(private: str, public: str) -> Any:
    """A name of asyncio.events, private (3.14+) or public, read without a warning."""
    return vars(asyncio.events).get(private) or vars(asyncio.events).get(public)


def test_running_api_is_this_pythons_asyncio() -> None:
    assert RUNNING.version == tuple(sys.version_info[:3])
    assert RUNNING.abstract_policy is _names("_AbstractEventLoopPolicy", "AbstractEventLoopPolicy")
    base_default = _names("_BaseDefaultEventLoopPolicy", "BaseDefaultEventLoopPolicy")
    assert RUNNING.base_default_policy is base_default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the public names warn on 3.14+
        assert RUNNING.default_policy is asyncio.DefaultEventLoopPolicy
    assert RUNNING.get_policy is _names("_get_event_loop_policy", "get_event_loop_policy")
    assert RUNNING.set_policy is _names("_set_event_loop_policy", "set_event_loop_policy")
    assert RUNNING.has_policies
    assert RUNNING.stock_get_event_loop is vars(base_default)["get_event_loop"]
    assert RUNNING.has_child_watchers == hasattr(RUNNING.default_policy(), "_watcher")
    assert RUNNING.tracks_set_called == hasattr(vars(base_default)["_Local"], "_set_called")


def test_running_behaviour_matches_the_reference_facts_for_this_version() -> None:
    facts = FACTS.get(RUNNING.version)
    if facts is None:  # another point release: only the major rules are known
        facts = FACTS[max(v for v in FACTS if v[:2] == RUNNING.version[:2])]
    implicit, warns, watchers = facts
    assert (RUNNING.creates_loops_implicitly, RUNNING.warns_on_implicit_creation) == (
        implicit,
        warns,
    )
    assert RUNNING.has_child_watchers == watchers
    assert RUNNING.tracks_set_called == implicit


@pytest.mark.parametrize("version", sorted(FACTS))
def test_version_rules_are_the_fallback_where_asyncio_cannot_tell(
    version: tuple[int, int, int],
) -> None:
    """An asyncio without a default policy to read gets the reference facts of its version."""
    implicit, warns, watchers = FACTS[version]
    api = resolve(version, types.ModuleType("asyncio"), platform="linux")
    assert (api.creates_loops_implicitly, api.warns_on_implicit_creation) == (implicit, warns)
    assert api.has_child_watchers == watchers
    assert api.tracks_set_called == (version < (3, 14))
    assert resolve(version, platform="win32").has_child_watchers is False


@pytest.mark.parametrize("version", [(3, 9, 18), (3, 13, 0), (3, 16, 0)])
def test_behaviour_is_read_from_asyncio_not_from_the_version(version: tuple[int, int, int]) -> None:
    """A backport or patched build behaves as its asyncio does, whatever its version says."""
    shaped_like_314 = resolve(version, simulated.asyncio_314(), platform="linux")
    assert not shaped_like_314.creates_loops_implicitly
    assert not shaped_like_314.warns_on_implicit_creation
    assert not shaped_like_314.tracks_set_called
    assert not shaped_like_314.has_child_watchers
    running = resolve(version, platform="linux")
    assert running.creates_loops_implicitly == RUNNING.creates_loops_implicitly
    assert running.warns_on_implicit_creation == RUNNING.warns_on_implicit_creation
    assert running.tracks_set_called == RUNNING.tracks_set_called


def test_a_get_event_loop_patched_before_import_is_not_taken_for_cpythons() -> None:
    base_default: Any = RUNNING.base_default_policy

    def patched(self: Any) -> Any:
        return None

    original = vars(base_default)["get_event_loop"]
    base_default.get_event_loop = patched
    try:
        assert resolve().stock_get_event_loop is None
    finally:
        base_default.get_event_loop = original
    assert resolve().stock_get_event_loop is original


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
    misses = recorder.snapshot().get("get_event_loop.miss", 0)
    policy = TRACED_314[tracing]()
    bare = simulated.UnixDefaultPolicy314()
    outcome = observe(policy.get_event_loop)
    assert outcome == observe(bare.get_event_loop)
    assert outcome.error == (
        "RuntimeError",
        "There is no current event loop in thread 'MainThread'.",
    )
    assert outcome.warnings == []
    assert recorder.snapshot()["get_event_loop.miss"] == misses + 1


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


#: Every public entry point once, with every DeprecationWarning an error.
EVERY_ENTRY_POINT = """
import asyncio, sys
import tracedpolicy
policy = tracedpolicy.install()
loop = policy.new_event_loop()
policy.set_event_loop(loop)
assert policy.get_event_loop() is loop and asyncio.get_event_loop() is loop
policy.set_event_loop(None)
loop.close()
hierarchy = tracedpolicy.TracedDefaultEventLoopPolicy()
hierarchy.new_event_loop().close()
tracedpolicy.traced(type(policy.base))
asyncio.run(asyncio.sleep(0))
if sys.version_info >= (3, 12):
    asyncio.run(asyncio.sleep(0), loop_factory=tracedpolicy.loop_factory())
tracedpolicy.snapshot()
tracedpolicy.leak_report()
tracedpolicy.uninstall()
print("ok")
"""


def test_tracedpolicy_adds_no_deprecation_warning_of_its_own() -> None:
    """On 3.14+ the public policy names warn; tracedpolicy reads only the private ones."""
    run = run_python(EVERY_ENTRY_POINT, flags=("-W", "error::DeprecationWarning"))
    assert (run.returncode, run.stdout, run.stderr) == (0, "ok\n", "")
