"""Random call sequences give identical outcomes on a bare policy and on each traced form.

Hypothesis draws sequences of get/set/new/close/run calls spread over the main thread and two
worker threads. Each sequence runs once against a bare policy and once against a traced one;
every call's result (loops named by order of first appearance), exception (type and message)
and warnings (category, message, file and line) must be the same.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import sys
import threading
import warnings
from typing import Any, Callable

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy, traced
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.base.options import Options
from tracedpolicy.exporters.telemetry import configure as configure_telemetry
from tracedpolicy.health import monitor as health

from .conftest import Telemetry
from .outcomes import Outcome, observe

DefaultPolicy: type = RUNNING.default_policy  # type: ignore[assignment]


class ExtendedPolicy(DefaultPolicy):  # type: ignore[misc]
    """A user's subclass that keeps the default get_event_loop."""


class OverridingPolicy(DefaultPolicy):  # type: ignore[misc]
    """A user's subclass with its own get_event_loop, which tracing must call as it is."""

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop = super().get_event_loop()
        return loop


#: (name, bare policy factory, traced policy factory)
PAIRS: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
    ("wrapper", DefaultPolicy, lambda: TracedEventLoopPolicy(DefaultPolicy())),
    ("hierarchy", DefaultPolicy, lambda: tracedpolicy.TracedDefaultEventLoopPolicy()),
    ("decorated", ExtendedPolicy, lambda: traced(ExtendedPolicy)()),
    ("wrapper-opaque", OverridingPolicy, lambda: TracedEventLoopPolicy(OverridingPolicy())),
    ("decorated-opaque", OverridingPolicy, lambda: traced(OverridingPolicy)()),
    (
        "wrapper-hit-spans",
        DefaultPolicy,
        lambda: TracedEventLoopPolicy(DefaultPolicy(), get_spans="all"),
    ),
]


def _third_party_pairs() -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """uvloop's policy and tornado's AnyThreadEventLoopPolicy, where they are installed."""
    pairs: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []
    try:
        import uvloop
    except ImportError:  # uvloop has no wheels for Windows or PyPy
        pass
    else:
        uvloop_policy: Any = uvloop.EventLoopPolicy
        pairs.append(("uvloop", uvloop_policy, lambda: TracedEventLoopPolicy(uvloop_policy())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # deprecated, and still common
        from tornado.platform.asyncio import AnyThreadEventLoopPolicy

    def any_thread() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return AnyThreadEventLoopPolicy()

    pairs.append(("tornado", any_thread, lambda: TracedEventLoopPolicy(any_thread())))
    return pairs


PAIRS += _third_party_pairs()

OPS = ("get", "module_get", "new", "set", "set_none", "set_bad", "close", "run")
steps = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(OPS), st.integers(0, 7)), max_size=24)


class Worker:
    """A thread that runs the calls handed to it, one at a time, and hands back outcomes."""

    def __init__(self, name: str) -> None:
        self.calls: queue.Queue[Any] = queue.Queue()
        self.results: queue.Queue[Outcome] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (call := self.calls.get()) is not None:
            self.results.put(call())

    def run(self, call: Callable[[], Outcome]) -> Outcome:
        self.calls.put(call)
        return self.results.get()

    def stop(self) -> None:
        self.calls.put(None)
        self.thread.join()


async def _noop() -> None:
    return None


class Run:
    """One sequence against one policy, naming loops by order of first appearance."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.loops: list[asyncio.AbstractEventLoop] = []

    def name(self, value: Any) -> Any:
        if not isinstance(value, asyncio.AbstractEventLoop):
            return value
        for index, loop in enumerate(self.loops):
            if loop is value:
                return f"loop{index}"
        self.loops.append(value)
        return f"loop{len(self.loops) - 1}"

    def pick(self, index: int) -> Any:
        return self.loops[index % len(self.loops)] if self.loops else None

    def call(self, op: str, arg: int) -> Callable[[], Any]:
        policy = self.policy
        # One line per call, the same line for the bare and the traced run.
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: policy.get_event_loop(),
            "module_get": lambda: asyncio.get_event_loop(),
            "new": lambda: policy.new_event_loop(),
            "set": lambda: policy.set_event_loop(self.pick(arg)),
            "set_none": lambda: policy.set_event_loop(None),
            "set_bad": lambda: policy.set_event_loop(object()),
            "close": lambda: self.pick(arg) and self.pick(arg).close(),
            "run": lambda: asyncio.run(_noop()),
        }
        return calls[op]

    def perform(self, steps: list[tuple[int, str, int]]) -> list[Outcome]:
        RUNNING.set_policy(self.policy)  # type: ignore[misc]
        try:
            return self.on_their_threads(steps)
        finally:
            for loop in self.loops:
                loop.close()

    def on_their_threads(self, steps: list[tuple[int, str, int]]) -> list[Outcome]:
        """Each step's outcome, the step run in its thread (0: this one; else a worker's)."""
        workers = [Worker("worker-1"), Worker("worker-2")]
        outcomes = []
        try:
            for thread, op, arg in steps:
                call = self.call(op, arg)
                observed = functools.partial(observe, call, self.name)
                outcomes.append(observed() if thread == 0 else workers[thread - 1].run(observed))
        finally:
            for worker in workers:
                worker.stop()
        return outcomes


def compare(
    steps: list[tuple[int, str, int]], pair: tuple[str, Callable[[], Any], Callable[[], Any]]
) -> None:
    _, make_bare, make_traced = pair
    before = RUNNING.get_policy()  # type: ignore[misc]
    try:
        bare = Run(make_bare()).perform(steps)
        traced_outcomes = Run(make_traced()).perform(steps)
    finally:
        RUNNING.set_policy(before)  # type: ignore[misc]
    assert traced_outcomes == bare


@settings(max_examples=400, deadline=None)
@given(steps=steps, pair=st.sampled_from(PAIRS))
def test_traced_and_bare_policies_agree_on_every_call(
    steps: list[tuple[int, str, int]], pair: tuple[str, Callable[[], Any], Callable[[], Any]]
) -> None:
    compare(steps, pair)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=steps, pair=st.sampled_from(PAIRS))
def test_they_still_agree_while_the_sdk_records_every_span(
    telemetry: Telemetry,
    steps: list[tuple[int, str, int]],
    pair: tuple[str, Callable[[], Any], Callable[[], Any]],
) -> None:
    """Telemetry never changes behaviour: the same comparison with real spans being made."""
    compare(steps, pair)


# -- the whole-process mode ---------------------------------------------------------------------

PROCESS_OPS = (
    "get",
    "module_get",
    "new",
    "set",
    "set_none",
    "close",
    "run",
    "construct",
    "runner",
    "run_factory",
    "set_policy",
    "policy_class",
)
process_steps = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from(PROCESS_OPS), st.integers(0, 7)), max_size=24
)


def _policy_choices() -> list[Callable[[], Any]]:
    """What an application may set: asyncio's default, its own subclass, None, uvloop's."""
    choices: list[Callable[[], Any]] = [DefaultPolicy, ExtendedPolicy, lambda: None]
    try:
        import uvloop
    except ImportError:
        return choices
    choices.append(lambda: uvloop.EventLoopPolicy())
    return choices


POLICY_CHOICES = _policy_choices()
NEW_RUN = sys.version_info >= (3, 12)  # asyncio.run takes loop_factory


async def _running() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


class ProcessRun(Run):
    """One sequence of process-wide calls (asyncio's functions, constructors, runners)."""

    def __init__(self, instrumented: bool) -> None:
        super().__init__(None)
        self.instrumented = instrumented

    def call(self, op: str, arg: int) -> Callable[[], Any]:
        runner: Any = getattr(asyncio, "Runner", None)
        run: Any = asyncio.run

        def with_runner() -> Any:
            if runner is None:
                return "no Runner"
            with runner(loop_factory=asyncio.SelectorEventLoop) as it:
                return it.run(_running())

        def run_with_factory() -> Any:
            if not NEW_RUN:
                return "no loop_factory"
            return run(_running(), loop_factory=asyncio.SelectorEventLoop)

        def policy_class() -> Any:
            policy = asyncio.get_event_loop_policy()
            return (policy.__class__.__name__, isinstance(policy, DefaultPolicy))

        # One line per call, the same line for the bare and the traced run.
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: asyncio.get_event_loop_policy().get_event_loop(),
            "module_get": lambda: asyncio.get_event_loop(),
            "new": lambda: asyncio.new_event_loop(),
            "set": lambda: asyncio.set_event_loop(self.pick(arg)),
            "set_none": lambda: asyncio.set_event_loop(None),
            "close": lambda: self.pick(arg) and self.pick(arg).close(),
            "run": lambda: asyncio.run(_noop()),
            "construct": lambda: asyncio.SelectorEventLoop(),
            "runner": with_runner,
            "run_factory": run_with_factory,
            "set_policy": lambda: asyncio.set_event_loop_policy(
                POLICY_CHOICES[arg % len(POLICY_CHOICES)]()
            ),
            "policy_class": policy_class,
        }
        return calls[op]

    def perform(self, steps: list[tuple[int, str, int]]) -> list[Outcome]:
        RUNNING.set_policy(DefaultPolicy())  # type: ignore[misc]
        if self.instrumented:
            tracedpolicy.instrument()
        try:
            return self.on_their_threads(steps)
        finally:
            if self.instrumented:
                tracedpolicy.uninstrument()
            for loop in self.loops:
                loop.close()


@settings(max_examples=300, deadline=None)
@given(steps=process_steps)
def test_the_whole_process_mode_changes_no_outcome(steps: list[tuple[int, str, int]]) -> None:
    """Policies set later, runners, factories and constructors, in three threads."""
    compare_process(steps)


@settings(max_examples=100, deadline=None)
@given(steps=process_steps)
def test_loop_health_changes_no_outcome(steps: list[tuple[int, str, int]]) -> None:
    """The same, with every traced loop watched (probe, timed wait, run hook, watchdog)."""
    configure_telemetry(Options.parse("tests", {"health": True}), {"health": True})
    try:
        compare_process(steps)
        ran = {"run", "runner"} if hasattr(asyncio, "Runner") else {"run"}
        if any(op in ran or (op == "run_factory" and NEW_RUN) for _, op, _ in steps):
            assert health.totals(), "no loop was watched"
    finally:
        health.reset_for_tests()


def compare_process(steps: list[tuple[int, str, int]]) -> None:
    before = RUNNING.get_policy()  # type: ignore[misc]
    try:
        bare = ProcessRun(instrumented=False).perform(steps)
        traced_outcomes = ProcessRun(instrumented=True).perform(steps)
    finally:
        RUNNING.set_policy(before)  # type: ignore[misc]
    assert traced_outcomes == bare
