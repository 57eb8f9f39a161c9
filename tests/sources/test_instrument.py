"""The whole-process mode: every loop, whoever makes it, and exact undo."""

from __future__ import annotations

import asyncio
import asyncio.base_events
import gc
import logging
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import tracedpolicy
from tracedpolicy.base._compat import RUNNING, peek_policy
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.record import LoopRecord
from tracedpolicy.records.recorder import policy_replacements
from tracedpolicy.records.sites import class_name

from ..conftest import Telemetry
from ..outcomes import in_thread
from ..processes import run_python
from ..simulated import HIDE_POLICIES

DefaultPolicy: Any = RUNNING.default_policy
BaseEventLoop: Any = asyncio.base_events.BaseEventLoop


@pytest.fixture
def whole_process() -> Iterator[None]:
    tracedpolicy.instrument()
    yield
    tracedpolicy.uninstrument()


def records_of(loop: Any) -> list[LoopRecord]:
    """Every record tracedpolicy holds for ``loop`` (exactly one when it was seen once)."""
    return [r for r in REGISTRY.records() if r.loop is loop]


def only_record(loop: Any) -> LoopRecord:
    (record,) = records_of(loop)
    assert record.tracked
    return record


def made_here(record: LoopRecord, line: int) -> bool:
    return record.site is not None and (record.site.filename, record.site.lineno) == (
        __file__,
        line,
    )


class MyPolicy(DefaultPolicy):  # type: ignore[misc]
    """An application's own policy, set at startup."""


class StandInProactorLoop(asyncio.SelectorEventLoop):
    """Stands in for Windows' ProactorEventLoop: another BaseEventLoop subclass."""


class OwnInitLoop(asyncio.SelectorEventLoop):
    """A user's loop class with an __init__ of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = True


# -- 1. a policy set later stays traced ------------------------------------------------------


def policies_an_app_may_set() -> dict[str, Callable[[], Any]]:
    makers: dict[str, Callable[[], Any]] = {"user subclass": MyPolicy, "default": DefaultPolicy}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        makers["uvloop"] = lambda: uvloop.EventLoopPolicy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from tornado.platform.asyncio import AnyThreadEventLoopPolicy
    makers["tornado"] = AnyThreadEventLoopPolicy
    return makers


POLICIES = policies_an_app_may_set()


@pytest.mark.parametrize("name", POLICIES)
def test_a_policy_set_later_is_traced_in_its_place(
    name: str, whole_process: None, loops: list[Any]
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.14+, and tornado's class
        chosen = POLICIES[name]()
        chosen_class = type(chosen)
        asyncio.set_event_loop_policy(chosen)
        current = asyncio.get_event_loop_policy()
    # Traced in place: the very object the application set, of a traced subclass of its class.
    assert current is chosen and tracedpolicy.is_traced(current)
    assert isinstance(current, chosen_class) and type(current).__name__ == chosen_class.__name__
    line = sys._getframe().f_lineno + 1
    loop = asyncio.new_event_loop()
    loops.append(loop)
    record = only_record(loop)
    assert (record.origin, record.creator) == ("policy", tracedpolicy.policy.label_of(chosen_class))
    assert made_here(record, line)


def test_none_means_a_traced_new_default(whole_process: None, loops: list[Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(None)
        current = asyncio.get_event_loop_policy()
    assert tracedpolicy.is_traced(current) and type(current).__bases__ == (DefaultPolicy,)
    loops.append(asyncio.new_event_loop())
    assert only_record(loops[0]).origin == "policy"


def test_uvloop_install_is_traced(whole_process: None, loops: list[Any]) -> None:
    uvloop = pytest.importorskip("uvloop")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # uvloop.install() warns on 3.12+
        uvloop.install()
    loops.append(asyncio.new_event_loop())
    record = only_record(loops[0])
    assert (record.origin, record.creator, record.loop_class) == (
        "policy",
        "uvloop.EventLoopPolicy",
        "uvloop.Loop",
    )


@pytest.mark.skipif(RUNNING.version < (3, 14), reason="the private setter exists from 3.14")
def test_the_private_setter_of_314_is_covered(whole_process: None) -> None:
    chosen = MyPolicy()
    asyncio.events._set_event_loop_policy(chosen)  # type: ignore[attr-defined]
    assert peek_policy() is chosen and tracedpolicy.is_traced(chosen)


def test_a_bad_policy_fails_as_bare_and_changes_nothing(whole_process: None) -> None:
    before = peek_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises((TypeError, AssertionError)) as traced_error:
            asyncio.set_event_loop_policy(object())  # type: ignore[arg-type]
    tracedpolicy.uninstrument()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises((TypeError, AssertionError)) as bare_error:
            asyncio.set_event_loop_policy(object())  # type: ignore[arg-type]
    assert (type(traced_error.value), str(traced_error.value)) == (
        type(bare_error.value),
        str(bare_error.value),
    )
    assert peek_policy() is before


# -- 2. loops made without the policy are seen ------------------------------------------------


def constructions() -> dict[str, Callable[[], Any]]:
    made: dict[str, Callable[[], Any]] = {
        "SelectorEventLoop()": asyncio.SelectorEventLoop,
        "stand-in ProactorEventLoop()": StandInProactorLoop,
        "a user's loop class": OwnInitLoop,
    }
    if hasattr(asyncio, "EventLoop"):
        made["EventLoop()"] = asyncio.EventLoop
    try:
        import uvloop
    except ImportError:
        pass
    else:
        made["uvloop.new_event_loop()"] = uvloop.new_event_loop
        made["uvloop.Loop()"] = uvloop.Loop
    return made


CONSTRUCTIONS = constructions()


@pytest.mark.parametrize("thread", ["main", "worker"])
@pytest.mark.parametrize("name", CONSTRUCTIONS)
def test_a_loop_constructed_directly_is_recorded_once_where_it_was_made(
    name: str, thread: str, whole_process: None, loops: list[Any]
) -> None:
    make = CONSTRUCTIONS[name]
    line = sys._getframe().f_lineno + 1
    loop = make() if thread == "main" else in_thread(lambda: make())
    loops.append(loop)
    record = only_record(loop)
    assert (record.origin, record.creator) == ("constructor", class_name(type(loop)))
    assert made_here(record, line), record.site
    assert record.counts_as_open
    loop.close()
    assert record.closed


def test_a_dropped_unclosed_constructed_loop_is_a_gc_leak(whole_process: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        loop = asyncio.SelectorEventLoop()
        record = only_record(loop)
        del loop
        gc.collect()
    REGISTRY.flush()
    assert record.leaked == "gc_unclosed"


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


@pytest.mark.skipif(RUNNING.version < (3, 11), reason="asyncio.Runner exists from 3.11")
def test_a_runners_loop_factory_is_traced_as_a_loop_factory(whole_process: None) -> None:
    runner = getattr(asyncio, "Runner")(loop_factory=asyncio.SelectorEventLoop)  # noqa: B009
    with runner:
        loop = runner.run(running_loop())
        record = only_record(loop)
    assert runner._loop_factory is asyncio.SelectorEventLoop
    assert (record.origin, record.creator) == (
        "loop_factory",
        class_name(asyncio.SelectorEventLoop),
    )
    assert record.closed and not record.leaked


@pytest.mark.skipif(RUNNING.version < (3, 12), reason="asyncio.run takes loop_factory from 3.12")
def test_asyncio_run_with_a_loop_factory_is_traced(
    whole_process: None, telemetry: Telemetry
) -> None:
    run: Any = asyncio.run
    loop = run(running_loop(), loop_factory=asyncio.SelectorEventLoop)
    record = only_record(loop)
    assert record.origin == "loop_factory" and record.closed
    creator = class_name(asyncio.SelectorEventLoop)
    (span,) = [s for s in telemetry.spans(creator) if s.name.endswith("new_event_loop")]
    assert span.name == "asyncio.loop_factory.new_event_loop"


@pytest.mark.skipif(RUNNING.version < (3, 11), reason="uvloop.run uses asyncio.Runner from 3.11")
def test_uvloop_run_is_seen(whole_process: None) -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.run(running_loop())
    record = only_record(loop)
    assert (record.origin, record.creator, record.loop_class) == (
        "loop_factory",
        "uvloop.new_event_loop",
        "uvloop.Loop",
    )
    assert record.closed


def test_a_constructed_loop_gets_a_span_and_metrics(
    whole_process: None, telemetry: Telemetry, loops: list[Any]
) -> None:
    creator = class_name(StandInProactorLoop)
    on_loop = (("creator", creator), ("loop_class", creator), ("origin", "constructor"))
    before = telemetry.points("asyncio.loop.created", creator).get(on_loop, 0)
    loops.append(StandInProactorLoop())
    (span,) = telemetry.spans(creator)
    assert span.name == "asyncio.loop.create"
    assert dict(span.attributes or {})["asyncio.loop.origin"] == "constructor"
    assert telemetry.points("asyncio.loop.created", creator) == {on_loop: before + 1}


# -- layers: one loop, one record ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["install", "instrument"])
def test_a_factory_that_asks_the_policy_counts_its_loop_once(mode: str, loops: list[Any]) -> None:
    getattr(tracedpolicy, mode)()
    policy_label = f"policy {tracedpolicy.policy.label_of(DefaultPolicy)}"
    policy_made = tracedpolicy.snapshot()[policy_label]["loops.created"]
    factory = tracedpolicy.loop_factory(asyncio.new_event_loop, label=f"tests.layers.{mode}")
    loop = factory()
    loops.append(loop)
    record = only_record(loop)
    assert (record.origin, record.creator) == ("loop_factory", f"tests.layers.{mode}")
    counts = tracedpolicy.snapshot()
    assert counts[f"loop_factory tests.layers.{mode}"]["loops.created"] == 1
    assert counts[policy_label]["loops.created"] == policy_made
    loop.close()
    assert tracedpolicy.snapshot()[f"loop_factory tests.layers.{mode}"]["loops.open"] == 0


def test_a_factory_that_makes_two_loops_and_returns_one_records_both(
    whole_process: None, loops: list[Any]
) -> None:
    def two() -> asyncio.AbstractEventLoop:
        loops.append(asyncio.SelectorEventLoop())  # made and kept aside
        return asyncio.SelectorEventLoop()

    loops.append(tracedpolicy.loop_factory(two, label="tests.layers.two")())
    aside, returned = loops
    assert only_record(returned).origin == "loop_factory"
    assert only_record(aside).origin == "constructor"


# -- 3. no policy system (3.16) ----------------------------------------------------------------

WITHOUT_POLICIES = (
    HIDE_POLICIES
    + """
import tracedpolicy
tracedpolicy.instrument()

async def main():
    return asyncio.get_running_loop()

loop = asyncio.SelectorEventLoop()
loop.close()
if sys.version_info >= (3, 11):
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        runner.run(main())
threading_loop = []
import threading
thread = threading.Thread(target=lambda: threading_loop.append(asyncio.SelectorEventLoop()))
thread.start(); thread.join()
threading_loop[0].close()
for label, counts in sorted(tracedpolicy.snapshot().items()):
    print(label, counts["loops.created"], counts["loops.closed"])
tracedpolicy.uninstrument()
"""
)


def test_without_a_policy_system_the_mode_still_sees_every_loop() -> None:
    run = run_python(textwrap.dedent(WITHOUT_POLICIES), flags=("-W", "error"))
    assert run.returncode == 0, run.stderr
    selector = class_name(asyncio.SelectorEventLoop)
    expected = [f"constructor {selector} 2 2"]
    if sys.version_info >= (3, 11):
        expected.append(f"loop_factory {selector} 1 1")
    assert run.stdout.splitlines() == expected


FIRST_LOOPS = """
import asyncio, sys, threading
import tracedpolicy
from tracedpolicy.records.recorder import recorders

sys.setswitchinterval(1e-6)  # with a GIL, switch threads as often as free threading would
THREADS, ROUNDS = 8, int(sys.argv[1])


def counts():
    by_origin = {}
    for recorder in recorders():
        got = by_origin.setdefault(recorder.origin, [0, 0, 0])
        snapshot = recorder.snapshot()
        got[0] += snapshot["loops.created"]
        got[1] += snapshot.get("set_event_loop.set", 0)
        got[2] += snapshot.get("set_event_loop.clear", 0)
    return by_origin


def first_loop(start):
    start.wait()
    loop = asyncio.new_event_loop()  # asks for the policy: asyncio makes it now, lazily
    asyncio.set_event_loop(loop)
    asyncio.set_event_loop(None)
    loop.close()


tracedpolicy.instrument()
for _ in range(ROUNDS):
    asyncio.set_event_loop_policy(None)  # the next ask makes a new default policy
    before = counts()
    start = threading.Barrier(THREADS)
    threads = [threading.Thread(target=first_loop, args=(start,)) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = counts()
    seen = []
    for origin in ("policy", "constructor"):
        made = zip(after.get(origin, [0] * 3), before.get(origin, [0] * 3))
        seen.append(f"{origin}:" + ",".join(str(a - b) for a, b in made))
    print(*seen)
"""


@pytest.mark.skipif(not RUNNING.has_policies, reason="no policies")
def test_threads_racing_to_make_the_lazy_default_policy_all_use_it_traced() -> None:
    """8 threads make their first loops at once while asyncio makes its default policy lazily:
    every loop is the policy's, and every set and clear is seen, however the race falls."""
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FIRST_LOOPS), "20"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    rounds = run.stdout.splitlines()
    assert rounds == ["policy:8,8,8 constructor:0,0,0"] * 20


# -- 4. turning it off puts everything back ---------------------------------------------------


def patched_objects() -> dict[str, Any]:
    """Every attribute the mode replaces, read as it is now (own attributes only)."""
    import asyncio.unix_events

    found = {
        "sys.meta_path": list(sys.meta_path),
        "_UnixSelectorEventLoop.close": vars(asyncio.unix_events._UnixSelectorEventLoop).get(
            "close"
        ),
        "StandInProactorLoop.close": vars(StandInProactorLoop).get("close", "inherited"),
        "BaseEventLoop.__init__": vars(BaseEventLoop).get("__init__"),
        "asyncio.set_event_loop_policy": vars(asyncio).get("set_event_loop_policy"),
        "events.set_event_loop_policy": vars(asyncio.events).get("set_event_loop_policy"),
        "events._set_event_loop_policy": vars(asyncio.events).get("_set_event_loop_policy"),
        "events._init_event_loop_policy": vars(asyncio.events).get("_init_event_loop_policy"),
    }
    if hasattr(asyncio, "Runner"):
        found["Runner._lazy_init"] = vars(asyncio.Runner).get("_lazy_init")
    uvloop = sys.modules.get("uvloop")
    if uvloop is not None:
        found["uvloop.Loop.__init__"] = vars(uvloop.Loop).get("__init__", "inherited")
    return found


def test_uninstrument_puts_back_every_function_and_the_policy_by_identity() -> None:
    pytest.importorskip("uvloop")
    before = patched_objects()
    policy_before = peek_policy()
    class_before = type(policy_before)
    tracedpolicy.instrument()
    assert peek_policy() is policy_before and type(policy_before) is not class_before
    StandInProactorLoop().close()  # a loop class's close is hooked, and must come off again
    asyncio.SelectorEventLoop().close()
    during = patched_objects()
    changed = [name for name in before if during[name] is not before[name]]
    assert "BaseEventLoop.__init__" in changed and "uvloop.Loop.__init__" in changed
    tracedpolicy.instrument()  # idempotent: nothing wrapped twice
    assert patched_objects() == during
    tracedpolicy.uninstrument()
    after = patched_objects()
    assert all(
        after[name] == before[name] if name == "sys.meta_path" else after[name] is before[name]
        for name in before
    ), after
    assert peek_policy() is policy_before and type(policy_before) is class_before
    tracedpolicy.uninstrument()  # idempotent
    assert patched_objects() == after


def test_uninstrument_leaves_the_apps_own_later_policy_in_place_untraced(
    loops: list[Any],
) -> None:
    tracedpolicy.instrument()
    chosen = MyPolicy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(chosen)
    loop = asyncio.new_event_loop()
    loops.append(loop)
    asyncio.set_event_loop(loop)
    tracedpolicy.uninstrument()
    assert peek_policy() is chosen and type(chosen) is MyPolicy  # untraced, as it was made
    assert chosen.get_event_loop() is loop  # its state went nowhere


class RefusesSubclasses(DefaultPolicy):  # type: ignore[misc]
    """A policy class whose ``__init_subclass__`` wants a keyword tracedpolicy cannot give."""

    def __init_subclass__(cls, *, name: str) -> None:
        super().__init_subclass__()


def policies_that_cannot_be_traced_in_place() -> dict[str, Callable[[], Any]]:
    from unittest import mock

    abstract: Any = RUNNING.abstract_policy
    return {
        "a class that refuses subclasses": RefusesSubclasses,
        "a test's MagicMock(spec=...)": lambda: mock.MagicMock(spec=abstract),
    }


@pytest.mark.parametrize("name", policies_that_cannot_be_traced_in_place())
def test_a_policy_that_cannot_be_traced_in_place_is_left_as_it_is(
    name: str, whole_process: None, loops: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Identity matters more than tracing: the policy stays itself; its loops are still seen."""
    errors_before = tracedpolicy.internal_errors()  # earlier tests' (a failing observer's) stay
    chosen = policies_that_cannot_be_traced_in_place()[name]()
    chosen_class = type(chosen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(chosen)
        assert asyncio.get_event_loop_policy() is chosen
    assert type(chosen) is chosen_class and tracedpolicy.internal_errors() == errors_before
    loops.append(asyncio.SelectorEventLoop())
    assert only_record(loops[0]).origin == "constructor"
    tracedpolicy.uninstrument()
    assert peek_policy() is chosen and type(chosen) is chosen_class


def test_a_policy_traced_in_place_pickles_and_copies_as_its_own_class(whole_process: None) -> None:
    import copy
    import pickle

    chosen = MyPolicy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(chosen)
    assert tracedpolicy.is_traced(chosen)
    copied = copy.copy(chosen)
    assert type(copied) is MyPolicy and not tracedpolicy.is_traced(copied)
    with pytest.raises(TypeError, match="pickle"):  # the thread-local state, as bare
        pickle.dumps(chosen)
    with pytest.raises(TypeError, match="pickle"):
        pickle.dumps(MyPolicy())


def test_methods_bound_while_the_mode_was_on_still_work_after_it(loops: list[Any]) -> None:
    tracedpolicy.instrument()
    policy = peek_policy()
    new, set_, get = policy.new_event_loop, policy.set_event_loop, policy.get_event_loop
    tracedpolicy.uninstrument()
    loops.append(new())
    set_(loops[0])
    assert get() is loops[0]
    set_(None)


def test_a_class_derived_from_the_traced_one_stops_recording_with_the_mode(
    loops: list[Any],
) -> None:
    tracedpolicy.instrument()
    derived = type("Derived", (type(peek_policy()),), {})
    policy = derived()
    assert tracedpolicy.is_traced(policy)
    tracedpolicy.uninstrument()
    assert not tracedpolicy.is_traced(policy)
    made = dict(tracedpolicy.snapshot())
    loops.append(policy.new_event_loop())
    assert not records_of(loops[0]) and tracedpolicy.snapshot() == made


@pytest.mark.parametrize("kind", ["unhashable", "equal"])
def test_policies_that_compare_oddly_are_untraced_by_uninstrument(kind: str) -> None:
    class Odd(DefaultPolicy):  # type: ignore[misc]
        def __eq__(self, other: object) -> bool:
            return isinstance(other, Odd)

        __hash__ = None if kind == "unhashable" else lambda self: 1  # type: ignore[assignment]

    tracedpolicy.instrument()
    first, second = Odd(), Odd()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(first)
        asyncio.set_event_loop_policy(second)
    assert tracedpolicy.is_traced(first) and tracedpolicy.is_traced(second)
    tracedpolicy.uninstrument()
    assert type(first) is Odd and type(second) is Odd and peek_policy() is second


def test_a_setter_listener_arriving_after_uninstrument_changes_nothing() -> None:
    """A policy set in another thread while uninstrument() runs: its listener comes late."""
    tracedpolicy.instrument()
    tracedpolicy.uninstrument()
    chosen = MyPolicy()
    RUNNING.set_policy(chosen)  # type: ignore[misc]
    sys.modules["tracedpolicy.sources.instrument"]._trace_process_policy()  # the late listener
    assert type(chosen) is MyPolicy


CLASSES_LET_GO = """
import gc, threading, weakref
import tracedpolicy
from tracedpolicy.base._compat import RUNNING

assert threading.active_count() == 1


def a_test_of_its_own():
    local = type("Local", (RUNNING.default_policy,), {})
    RUNNING.set_policy(local())
    tracedpolicy.instrument()
    tracedpolicy.uninstrument()
    RUNNING.set_policy(RUNNING.default_policy())
    return weakref.ref(local)


gone = a_test_of_its_own()
gc.collect()
print(gone() is None)
"""


def test_traced_policy_classes_are_not_kept_alive_after_the_mode() -> None:
    """In a process of its own, before any thread starts: free-threaded 3.13 makes every class
    made once a second thread has started immortal (CPython gh-117783), whoever holds it."""
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CLASSES_LET_GO)], capture_output=True, text=True
    )
    assert (run.returncode, run.stdout) == (0, "True\n"), run.stderr


def test_a_loop_a_runners_factory_made_before_failing_is_recorded(whole_process: None) -> None:
    runner_class = getattr(asyncio, "Runner", None)
    if runner_class is None:
        pytest.skip("asyncio.Runner exists from 3.11")
    made: list[Any] = []

    def factory() -> Any:
        made.append(asyncio.SelectorEventLoop())
        raise ValueError("bad TLS config")

    with pytest.raises(ValueError, match="bad TLS config"), runner_class(loop_factory=factory) as r:
        r.run(running_loop())
    assert only_record(made[0]).origin == "constructor"
    made[0].close()


def _decorated(init: Callable[..., None]) -> Callable[..., None]:
    """A decorator as people write them: a wrapper that takes anything and passes it on."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        init(*args, **kwargs)

    return wrapper


class DecoratedInitLoop(asyncio.SelectorEventLoop):
    """A loop class whose ``__init__`` a decorator wraps."""

    @_decorated
    def __init__(self) -> None:
        super().__init__()


def test_a_decorated_loop_init_is_not_taken_for_the_creation_site(
    whole_process: None, loops: list[Any]
) -> None:
    line = sys._getframe().f_lineno + 1
    loops.append(DecoratedInitLoop())
    assert made_here(only_record(loops[0]), line), only_record(loops[0]).site


def test_instrument_is_thread_safe_and_wraps_once() -> None:
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        tracedpolicy.instrument()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    init = vars(BaseEventLoop)["__init__"]
    assert init.__wrapped__.__name__ == "__init__" and not hasattr(init.__wrapped__, "__wrapped__")
    tracedpolicy.uninstrument()
    assert not hasattr(vars(BaseEventLoop)["__init__"], "__wrapped__")


def test_instrument_rejects_a_bad_option_before_changing_anything() -> None:
    before = patched_objects()
    with pytest.raises(ValueError, match="creation_stack"):
        tracedpolicy.instrument(creation_stack=-1)
    with pytest.raises(TypeError, match="label"):
        tracedpolicy.instrument(label="x")
    assert patched_objects() == before and not tracedpolicy.instrumented()


# -- outside the mode, a replaced policy is reported -------------------------------------------


def test_outside_the_mode_a_replaced_policy_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tracedpolicy.install()
    replaced = policy_replacements().get(tracedpolicy.policy.label_of(MyPolicy), 0)
    with caplog.at_level(logging.WARNING, logger="tracedpolicy"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(MyPolicy())
        asyncio.set_event_loop_policy(MyPolicy())
    assert type(peek_policy()) is MyPolicy  # left as the application chose
    messages = [r.getMessage() for r in caplog.records if r.name == "tracedpolicy"]
    assert len(messages) == 1
    assert tracedpolicy.policy.label_of(MyPolicy) in messages[0]
    assert "tracedpolicy.instrument()" in messages[0]
    assert policy_replacements()[tracedpolicy.policy.label_of(MyPolicy)] == replaced + 2


def hooked_methods() -> list[Callable[[], Any]]:
    """Ways to reach each method the mode hooks on a class, as user code may."""
    reached: list[Callable[[], Any]] = [
        lambda: BaseEventLoop.__init__,
        lambda: asyncio.SelectorEventLoop.__init__,  # inherited
        lambda: vars(BaseEventLoop)["__init__"],  # the attribute itself, unbound
    ]
    runner_class: Any = getattr(asyncio, "Runner", None)
    if runner_class is not None:
        reached.append(lambda: runner_class._lazy_init)
    return reached


def test_hooked_methods_pickle_and_copy_as_bare() -> None:
    """A hooked method pickles opcode for opcode as bare, in every protocol (memo entries
    aside), loads as the class's attribute of the moment, and copies as itself; bound to an
    instance, it pickles and copies as the bound method does. (wrapt's proxies refuse pickle
    and copy; asyncio's functions are hooked by plain functions, which need no help.)"""
    import copy
    import inspect
    import pickle
    from pickletools import optimize

    protocols = range(pickle.HIGHEST_PROTOCOL + 1)
    bare = [
        [pickle.dumps(reach(), protocol) for protocol in protocols] for reach in hooked_methods()
    ]
    tracedpolicy.instrument()
    assert hasattr(vars(BaseEventLoop)["__init__"], "__wrapped__")  # hooked indeed
    for reach, bare_pickles in zip(hooked_methods(), bare):
        method = reach()
        assert copy.copy(method) is method and copy.deepcopy(method) is method
        for protocol in protocols:
            pickled = pickle.dumps(method, protocol)
            assert optimize(pickled) == optimize(bare_pickles[protocol])
            assert inspect.unwrap(pickle.loads(pickled)) is inspect.unwrap(method)
    if hasattr(asyncio, "Runner"):  # a hooked method bound to an instance: as a bound method
        runner = asyncio.Runner()
        tracedpolicy.uninstrument()
        bare_bound = [pickle.dumps(runner._lazy_init, protocol) for protocol in protocols]
        tracedpolicy.instrument()
        assert [pickle.dumps(runner._lazy_init, p) for p in protocols] == bare_bound
        copied = copy.copy(runner._lazy_init)
        assert copied.__self__ is runner
        assert inspect.unwrap(copied) is inspect.unwrap(asyncio.Runner._lazy_init)
        deep = copy.deepcopy(runner._lazy_init)
        assert type(deep.__self__) is asyncio.Runner and deep.__self__ is not runner


def hooked_method_calls() -> list[Callable[[], Any]]:
    """Calls of hooked methods through the class, with odd arguments, as a caller may make."""
    calls: list[Callable[[], Any]] = [
        lambda: BaseEventLoop.__init__(None),
        lambda: BaseEventLoop.__init__(),
        lambda: BaseEventLoop.__init__(object()),
        lambda: asyncio.events.set_event_loop_policy(),  # type: ignore[call-arg]
    ]
    runner_class: Any = getattr(asyncio, "Runner", None)
    if runner_class is not None:
        calls.append(lambda: runner_class._lazy_init(None))
    return calls


def test_hooked_methods_called_through_the_class_fail_as_bare() -> None:
    """``Class.method(None)`` runs the original with None, as bare does; a call short of its
    arguments names the function as bare does (3.9 names it by its code)."""

    def outcomes() -> list[tuple[str, str]]:
        seen = []
        for call in hooked_method_calls():
            with pytest.raises(Exception) as caught:
                call()
            seen.append((type(caught.value).__name__, str(caught.value)))
        return seen

    bare = outcomes()
    tracedpolicy.instrument()
    try:
        assert hasattr(vars(BaseEventLoop)["__init__"], "__wrapped__")
        assert outcomes() == bare
    finally:
        tracedpolicy.uninstrument()


def test_a_hooked_c_slot_pickles_and_copies_as_bare() -> None:
    """uvloop's ``Loop.__init__`` is a C slot, wrapped by wrapt: it pickles as the slot does."""
    import copy
    import pickle

    uvloop = pytest.importorskip("uvloop")
    protocols = range(pickle.HIGHEST_PROTOCOL + 1)
    bare = [pickle.dumps(uvloop.Loop.__init__, protocol) for protocol in protocols]
    tracedpolicy.instrument()
    try:
        hooked = uvloop.Loop.__init__
        assert hasattr(hooked, "__wrapped__")
        assert [pickle.dumps(hooked, protocol) for protocol in protocols] == bare
        assert copy.copy(hooked) is hooked
    finally:
        tracedpolicy.uninstrument()


UVLOOP_LOADER = """
import importlib.machinery, importlib.util, json, sys, tracedpolicy

def answers():
    loader = importlib.util.find_spec("uvloop").loader
    names = ("is_package", "get_filename", "get_source", "get_data", "get_code", "path_stats")
    seen = {name: callable(getattr(loader, name, None)) for name in names}
    seen.update(name=loader.name, path=loader.path, package=loader.is_package("uvloop"))
    seen.update(filename=loader.get_filename("uvloop"), source=loader.get_source("uvloop"))
    seen["code"] = loader.get_code("uvloop").co_filename
    seen["resources"] = type(loader.get_resource_reader("uvloop")).__name__
    seen["is_a_source_loader"] = isinstance(loader, importlib.machinery.SourceFileLoader)
    return seen

bare = answers()
tracedpolicy.instrument()
traced = answers()
import uvloop
loop = uvloop.new_event_loop()
loop.close()
counts = tracedpolicy.snapshot()["constructor uvloop.Loop"]
print(json.dumps([traced == bare, type(uvloop.__loader__).__module__, counts["loops.closed"]]))
"""


def test_uvloops_loader_answers_as_bare_before_uvloop_is_imported() -> None:
    """``find_spec("uvloop").loader`` is tracedpolicy's hooking loader until uvloop runs: every
    method and attribute of the real loader must answer through it as before."""
    pytest.importorskip("uvloop")
    done = subprocess.run(
        [sys.executable, "-c", UVLOOP_LOADER], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '[true, "_frozen_importlib_external", 1]'
