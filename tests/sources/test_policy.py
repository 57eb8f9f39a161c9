"""The wrapper and the decorator are faithful to the policy they trace."""

from __future__ import annotations

import asyncio
import functools
import inspect
import subprocess
import sys
import textwrap
import threading
import warnings
from typing import Any, Callable

import pytest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy, traced
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.recorder import recorder_for

from ..outcomes import Outcome, in_thread, observe

DefaultPolicy: type = RUNNING.default_policy  # type: ignore[assignment]


class MyPolicy(DefaultPolicy):  # type: ignore[misc]
    """A user's policy in the asyncio docs' style, with an extra method and attribute."""

    greeting = "hello"

    def describe(self) -> str:
        return f"{self.greeting} from MyPolicy"


TracedMyPolicy = traced(MyPolicy)

#: Each way of tracing a policy, as a factory of (bare policy, traced policy) pairs.
TRACINGS: dict[str, Callable[[], Any]] = {
    "wrapper": lambda: TracedEventLoopPolicy(DefaultPolicy()),
    "hierarchy": lambda: tracedpolicy.TracedDefaultEventLoopPolicy(),
    "decorated": lambda: TracedMyPolicy(),
}


@pytest.mark.parametrize("tracing", TRACINGS)
def test_get_returns_the_loop_that_was_set(tracing: str, loops: list[Any]) -> None:
    policy = TRACINGS[tracing]()
    loop = policy.new_event_loop()
    loops.append(loop)
    policy.set_event_loop(loop)
    assert policy.get_event_loop() is loop
    assert policy.get_event_loop() is loop


def test_wrapper_shares_state_with_its_base(loops: list[Any]) -> None:
    base = DefaultPolicy()
    policy = TracedEventLoopPolicy(base)
    loop = base.new_event_loop()
    loops.append(loop)
    base.set_event_loop(loop)
    assert policy.get_event_loop() is loop
    policy.set_event_loop(None)
    assert base._local._loop is None
    assert policy._local is base._local


@pytest.mark.parametrize("tracing", TRACINGS)
def test_miss_in_a_worker_thread_raises_what_the_base_raises(tracing: str) -> None:
    policy = TRACINGS[tracing]()
    with pytest.raises(RuntimeError) as traced_error:
        in_thread(policy.get_event_loop, name="worker-7")
    with pytest.raises(RuntimeError) as bare_error:
        in_thread(DefaultPolicy().get_event_loop, name="worker-7")
    assert str(traced_error.value) == str(bare_error.value)
    assert str(traced_error.value) == "There is no current event loop in thread 'worker-7'."


@pytest.mark.parametrize("tracing", TRACINGS)
@pytest.mark.parametrize("bad_loop", [object(), 42, "loop"])
def test_non_loop_passed_to_set_raises_what_the_base_raises(tracing: str, bad_loop: Any) -> None:
    bare, policy = DefaultPolicy(), TRACINGS[tracing]()
    assert observe(lambda: policy.set_event_loop(bad_loop)) == observe(
        lambda: bare.set_event_loop(bad_loop)
    )
    expected = "AssertionError" if sys.version_info < (3, 11) else "TypeError"
    assert observe(lambda: policy.set_event_loop(bad_loop)).error[0] == expected  # type: ignore[index]


@pytest.mark.parametrize("tracing", TRACINGS)
def test_failed_set_still_disables_implicit_creation_as_in_the_base(tracing: str) -> None:
    def after_failed_set(policy: Any) -> Outcome:
        observe(lambda: policy.set_event_loop(object()))
        return observe(policy.get_event_loop, name_of=type)

    bare, traced_outcome = after_failed_set(DefaultPolicy()), after_failed_set(TRACINGS[tracing]())
    assert traced_outcome == bare
    assert traced_outcome.error == (
        "RuntimeError",
        "There is no current event loop in thread 'MainThread'.",
    )


@pytest.mark.parametrize("tracing", TRACINGS)
def test_implicit_creation_warns_at_the_callers_line(tracing: str, loops: list[Any]) -> None:
    for policy in (DefaultPolicy(), TRACINGS[tracing]()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = sys._getframe().f_lineno + 1
            outcome = observe(lambda: loops.append(policy.get_event_loop()))  # noqa: B023
        seen = [(w.category, str(w.message), w.filename, w.lineno) for w in caught]
        seen += [(DeprecationWarning, m, f, n) for _, m, f, n in outcome.warnings]
        if RUNNING.creates_loops_implicitly:
            assert outcome.error is None and len(loops) > 0
        if RUNNING.warns_on_implicit_creation:
            assert seen == [(DeprecationWarning, "There is no current event loop", __file__, line)]
        else:
            assert seen == []


@pytest.mark.parametrize("tracing", TRACINGS)
def test_asyncio_get_event_loop_warning_points_at_the_callers_line(
    tracing: str, loops: list[Any]
) -> None:
    """asyncio.get_event_loop() (C) calls the policy with no frame in between."""
    results = []
    for policy in (DefaultPolicy(), TRACINGS[tracing]()):
        RUNNING.set_policy(policy)  # type: ignore[misc]
        outcome = observe(lambda: asyncio.get_event_loop(), name_of=type)
        if policy._local._loop is not None:  # made implicitly (until 3.13)
            loops.append(policy._local._loop)
        results.append(outcome)
    assert results[0] == results[1]
    if not RUNNING.creates_loops_implicitly:
        assert results[1].error == (
            "RuntimeError",
            "There is no current event loop in thread 'MainThread'.",
        )
    if RUNNING.warns_on_implicit_creation:
        assert results[1].warnings[0][2] == __file__


def test_implicit_creation_calls_set_event_loop_on_the_traced_policy(loops: list[Any]) -> None:
    policy = TracedEventLoopPolicy(DefaultPolicy())
    seen: list[Any] = []
    original = policy.set_event_loop

    def spy(loop: Any) -> None:
        seen.append(loop)
        original(loop)

    policy.set_event_loop = spy  # type: ignore[method-assign]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        outcome = observe(policy.get_event_loop)
    if RUNNING.creates_loops_implicitly:
        loops.append(outcome.result)
        assert seen == [outcome.result]
    else:
        assert seen == [] and outcome.error is not None


def test_attributes_the_wrapper_lacks_are_read_and_written_on_the_base() -> None:
    base = MyPolicy()
    policy = TracedEventLoopPolicy(base)
    assert policy.describe() == "hello from MyPolicy"
    policy.greeting = "hi"
    assert base.greeting == "hi" and policy.describe() == "hi from MyPolicy"
    assert policy._loop_factory is base._loop_factory
    new_local = base._Local()
    policy._local = new_local  # what CPython's fork handler does on 3.12+
    assert base._local is new_local
    del policy.greeting
    assert policy.greeting == "hello"
    assert "describe" in dir(policy) and "base" in dir(policy)


def test_wrapper_passes_isinstance_checks_against_the_base_class() -> None:
    policy = TracedEventLoopPolicy(MyPolicy())
    assert isinstance(policy, MyPolicy)
    assert isinstance(policy, DefaultPolicy)
    assert isinstance(policy, TracedEventLoopPolicy)
    assert isinstance(policy, RUNNING.abstract_policy)  # type: ignore[arg-type]
    assert type(policy) is TracedEventLoopPolicy


def test_base_none_wraps_a_new_default_policy() -> None:
    policy = TracedEventLoopPolicy()
    assert type(policy.base) is DefaultPolicy
    assert policy.base is not TracedEventLoopPolicy().base


def test_decorated_class_keeps_its_name_and_isinstance() -> None:
    assert TracedMyPolicy.__name__ == "MyPolicy" and TracedMyPolicy.__module__ == __name__
    assert issubclass(TracedMyPolicy, MyPolicy)
    policy = TracedMyPolicy()
    assert isinstance(policy, MyPolicy) and policy.describe() == "hello from MyPolicy"


def test_decorated_class_records_into_the_user_class_label(loops: list[Any]) -> None:
    recorder = recorder_for(f"{__name__}.MyPolicy")
    before = recorder.snapshot()
    policy = TracedMyPolicy()
    loop = policy.new_event_loop()
    loops.append(loop)
    policy.set_event_loop(loop)
    policy.get_event_loop()
    after = recorder.snapshot()
    assert after["loops.created"] == before.get("loops.created", 0) + 1
    assert after["set_event_loop.set"] == before.get("set_event_loop.set", 0) + 1
    assert after["get_event_loop.hit"] == before["get_event_loop.hit"] + 1


def test_tracing_twice_traces_once() -> None:
    wrapper = TracedEventLoopPolicy(DefaultPolicy())
    assert traced(wrapper) is wrapper
    assert TracedEventLoopPolicy(wrapper) is wrapper
    assert traced(TracedMyPolicy) is TracedMyPolicy
    instance = TracedMyPolicy()
    assert traced(instance) is instance
    assert TracedEventLoopPolicy(instance) is instance


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: TracedEventLoopPolicy(object()), "not 'object'"),
        (lambda: TracedEventLoopPolicy(DefaultPolicy), "pass _UnixDefaultEventLoopPolicy()"),
        (lambda: traced(42), "traced() expects an event loop policy class or instance"),
        (lambda: traced(int), "not 'type'"),
        (lambda: TracedEventLoopPolicy(DefaultPolicy(), label=7), "label must be a str"),
    ],
)
def test_bad_input_raises_a_type_error_naming_what_was_expected(
    call: Callable[[], Any], message: str
) -> None:
    if RUNNING.is_windows:
        message = message.replace("_UnixDefaultEventLoopPolicy", DefaultPolicy.__qualname__)
    with pytest.raises(TypeError, match=r"expects|label") as error:
        call()
    assert message in str(error.value)


@pytest.mark.skipif(not RUNNING.has_child_watchers, reason="child watchers are Unix, <= 3.13")
def test_child_watcher_methods_are_the_bases_own() -> None:
    base = DefaultPolicy()
    policy = TracedEventLoopPolicy(base)
    assert policy.get_child_watcher == base.get_child_watcher
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        watcher = policy.get_child_watcher()
    assert watcher is base._watcher
    if sys.version_info >= (3, 12):
        assert [(w.filename, w.lineno) for w in caught] == [(__file__, line)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy.set_child_watcher(None)
        watcher.close()


def test_subprocesses_work_under_an_installed_wrapper() -> None:
    tracedpolicy.install()

    async def main() -> bytes:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE
        )
        out, _ = await process.communicate()
        return out

    assert asyncio.run(main()).strip() == b"child"


FORK_SCRIPT = """
import asyncio, os, sys, tracedpolicy
from tracedpolicy.base._compat import RUNNING
if sys.argv[1] == "traced":
    tracedpolicy.install()
policy = RUNNING.get_policy()
loop = policy.new_event_loop()
policy.set_event_loop(loop)
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    import warnings
    warnings.simplefilter("ignore")
    try:
        same = policy.get_event_loop() is loop
        os.write(write, b"parent-loop" if same else b"new-loop")
    except RuntimeError:
        os.write(write, b"no-loop")
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read, 100).decode())
"""


@pytest.mark.skipif(sys.platform == "win32", reason="fork is POSIX")
def test_forked_child_sees_the_same_loop_state_as_with_the_bare_policy() -> None:
    """CPython 3.12+ resets the global policy's _local in the child; the wrapper must let it."""
    script = textwrap.dedent(FORK_SCRIPT)

    def child_sees(mode: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, check=True
        )
        return run.stdout.strip()

    if sys.version_info < (3, 12):
        expected = "parent-loop"
    else:
        expected = "new-loop" if RUNNING.creates_loops_implicitly else "no-loop"
    assert child_sees("bare") == expected
    assert child_sees("traced") == expected


class _Patch:
    """A replacement get_event_loop that says it ran and hands out one loop of its own."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.calls = 0

    def method(self) -> Callable[[Any], Any]:
        def get_event_loop(policy: Any) -> Any:
            self.calls += 1
            return self.loop

        return get_event_loop


#: Where tests patch get_event_loop: the default class, the class that defines it, an instance.
PATCH_TARGETS = ("default class", "base default class", "instance")


def _patch(target: str, policy: Any, patch: _Patch) -> Callable[[], None]:
    """Patch ``target`` (as mock.patch.object would) and return the undo."""
    if target == "instance":
        policy.get_event_loop = patch.method().__get__(policy)
        return lambda: delattr(policy, "get_event_loop")
    cls: Any = DefaultPolicy if target == "default class" else RUNNING.base_default_policy
    had = "get_event_loop" in vars(cls)
    original = vars(cls).get("get_event_loop")
    cls.get_event_loop = patch.method()

    def undo() -> None:
        if had:
            cls.get_event_loop = original
        else:
            del cls.get_event_loop

    return undo


@pytest.mark.parametrize(
    ("tracing", "target", "when"),
    [
        (tracing, target, when)
        for tracing in ("wrapper", "hierarchy")
        for target in PATCH_TARGETS
        for when in ("before wrapping", "after wrapping")
        # A traced class's instance cannot be patched before it exists.
        if (tracing, target, when) != ("hierarchy", "instance", "before wrapping")
    ],
)
def test_a_patched_get_event_loop_is_called_as_the_bare_policy_calls_it(
    tracing: str, target: str, when: str, loops: list[Any]
) -> None:
    """Tests patch get_event_loop all the time; the traced policy must call what bare calls."""
    planted = asyncio.new_event_loop()
    set_loop = asyncio.new_event_loop()
    loops.extend([planted, set_loop])
    results = []
    for kind in ("bare", tracing):
        patch = _Patch(planted)
        base: Any = DefaultPolicy() if kind != "hierarchy" else None
        undo = None
        if when == "before wrapping" and base is not None:
            undo = _patch(target, base, patch)
        policy: Any
        if kind == "bare":
            policy = base
        elif kind == "wrapper":
            policy = TracedEventLoopPolicy(base)
        else:
            policy = tracedpolicy.TracedDefaultEventLoopPolicy()
        policy.set_event_loop(set_loop)
        if undo is None:
            undo = _patch(target, base if kind == "wrapper" else policy, patch)
        try:
            got = [policy.get_event_loop(), in_thread(policy.get_event_loop)]
        finally:
            undo()
        results.append((got, patch.calls))
        # Unpatched again: the policy's own loop, as before.
        assert policy.get_event_loop() is set_loop
    assert results[0] == results[1] == ([planted, planted], 2)


class _MyError(Exception):
    pass


def test_a_subclass_of_the_wrapper_that_overrides_a_traced_method_wins(loops: list[Any]) -> None:
    class Strict(TracedEventLoopPolicy):
        def get_event_loop(self) -> Any:
            raise _MyError("strict")

        def new_event_loop(self) -> Any:
            loop = super().new_event_loop()
            loop.made_by_strict = True  # type: ignore[attr-defined]
            return loop

    policy = Strict(DefaultPolicy())
    loop = policy.new_event_loop()
    loops.append(loop)
    assert loop.made_by_strict
    policy.set_event_loop(loop)
    with pytest.raises(_MyError, match="strict"):
        policy.get_event_loop()


def test_pickling_the_wrapper_fails_as_pickling_the_bare_policy_does() -> None:
    import pickle

    outcomes = [
        observe(functools.partial(pickle.dumps, p))
        for p in (DefaultPolicy(), TracedEventLoopPolicy())
    ]
    assert outcomes[0] == outcomes[1] and outcomes[0].error is not None


class OwnGetPolicy(DefaultPolicy):  # type: ignore[misc]
    """An application's policy with its own ``get_event_loop``."""

    def get_event_loop(self) -> Any:
        return super().get_event_loop()


def test_a_call_in_flight_when_the_mode_gives_the_class_back_acts_as_the_bare_one() -> None:
    """Thread B is paused between ``parent()``'s isinstance check and its ``super()`` while
    ``uninstrument()`` gives the policy its class back: B's call still gets B's loop."""
    from tracedpolicy.sources import subclass as subclass_module

    assert RUNNING.set_policy is not None and RUNNING.get_policy is not None
    RUNNING.set_policy(OwnGetPolicy())
    tracedpolicy.instrument()
    policy = RUNNING.get_policy()
    reached, resume = threading.Event(), threading.Event()
    target = next(
        number
        for number, text in enumerate(inspect.getsource(subclass_module).splitlines(), 1)
        if "return super(cast(Any, subclass), self)" in text
    )

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if frame.f_code.co_name != "parent" or frame.f_globals is not vars(subclass_module):
            return None
        if event == "line" and frame.f_lineno == target:
            sys.settrace(None)
            reached.set()
            resume.wait(10)
        return tracer

    got: list[Any] = []

    def worker() -> None:
        loop = asyncio.new_event_loop()
        try:
            policy.set_event_loop(loop)
            sys.settrace(tracer)
            try:
                got.append(policy.get_event_loop() is loop)
            except Exception as error:
                got.append(error)
            finally:
                sys.settrace(None)
                policy.set_event_loop(None)
        finally:
            loop.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert reached.wait(10)
        tracedpolicy.uninstrument()
    finally:
        resume.set()
        thread.join(10)
    assert got == [True]


@pytest.mark.parametrize("heard", [False, True], ids=["nothing-listens", "observed"])
def test_a_set_counts_and_tracks_alike_whether_or_not_anything_hears_of_events(
    heard: bool, loops: list[Any]
) -> None:
    """With no span hook or observer a set skips the event machinery: the counts, the failed
    set left uncounted and the thread the loop is set on are the same as with an observer."""
    label = f"set-{'observed' if heard else 'unheard'}"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    events: list[Any] = []
    if heard:
        tracedpolicy.add_observer(events.append)
    try:
        loop = policy.new_event_loop()
        loops.append(loop)
        policy.set_event_loop(loop)
        record = REGISTRY.record_for(loop, "policy", label, False)
        assert record is not None
        set_on = dict(record.set_on)
        assert observe(lambda: policy.set_event_loop(object())).error is not None  # type: ignore[arg-type]
        policy.set_event_loop(None)
    finally:
        tracedpolicy.remove_observer(events.append)
    counts = recorder_for(label).snapshot()
    assert (counts["set_event_loop.set"], counts["set_event_loop.clear"]) == (1, 1)
    assert set_on == {threading.get_ident(): threading.current_thread().name}
    assert record.set_on == {}
    assert [e.result for e in events if e.kind == "set_event_loop"] == (
        ["set", None, "clear"] if heard else []
    )
