"""No leak is ever reported for a loop whose ``close()`` ran, whoever made it and closed it.

Hypothesis draws a way to make a loop from the README's "What is seen" table (a constructor,
``asyncio.new_event_loop()``, the process-wide policy, a policy set later, the implicit loop of
``get_event_loop()``, uvloop), wraps it in layers (a factory that probes a loop first, a traced
``loop_factory()``, a process-wide policy whose ``new_event_loop`` probes first), has it used
(called, by ``asyncio.Runner`` or ``asyncio.run`` as their factory, by ``asyncio.run`` through
the policy) and closed (directly, from a thread, from a thread started from C). Every loop made
must be counted closed, none leaked.
"""

from __future__ import annotations

import _thread
import asyncio
import gc
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any, Callable

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, assume, given, settings

import tracedpolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.exporters.report import totals

Loop = asyncio.AbstractEventLoop
Maker = Callable[[], Loop]
DefaultPolicy: Any = RUNNING.default_policy


class SubclassLoop(asyncio.SelectorEventLoop):
    """A user's loop class, constructed through its own ``__init__``."""

    def __init__(self) -> None:
        super().__init__()


def _quietly(call: Callable[[], Any]) -> Any:
    """Policy calls warn on 3.12+ (deprecations): not what this test looks at."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return call()


def _set_policy(policy: Any) -> None:
    _quietly(lambda: asyncio.set_event_loop_policy(policy))


def _process_wide() -> Maker:
    """The process-wide policy's ``new_event_loop``, of the policy set now."""
    made: Maker = _quietly(asyncio.get_event_loop_policy).new_event_loop
    return made


def _set_later(policy: Any) -> Maker:
    """A policy set process-wide after the mode started: its ``new_event_loop``."""
    _set_policy(policy)
    return _process_wide()


#: Each way to make a loop, as a function that sets it up and returns the maker.
BASES: dict[str, Callable[[], Maker]] = {
    "asyncio.new_event_loop()": lambda: asyncio.new_event_loop,
    "the process-wide policy": _process_wide,
    "a policy set later": lambda: _set_later(DefaultPolicy()),
    "asyncio.SelectorEventLoop()": lambda: asyncio.SelectorEventLoop,
    "a BaseEventLoop subclass": lambda: SubclassLoop,
}
event_loop_class: Any = getattr(asyncio, "EventLoop", None)  # 3.13+
if event_loop_class is not None:
    BASES["asyncio.EventLoop()"] = lambda: event_loop_class
if sys.version_info < (3, 14):  # 3.14 makes no loop implicitly

    def _implicitly() -> Maker:
        """A fresh policy (one that had set_event_loop called makes no loop implicitly):
        traced in place by instrument(), wrapped under install(), as install() does."""
        fresh = DefaultPolicy()
        _set_policy(
            tracedpolicy.TracedEventLoopPolicy(fresh) if tracedpolicy.installed() else fresh
        )
        return lambda: _quietly(asyncio.get_event_loop)

    BASES["get_event_loop() in the main thread"] = _implicitly
#: Bases that ask the policy set when they are called, not the one set when they were set up.
ASKS_THE_CURRENT_POLICY = ("asyncio.new_event_loop()", "get_event_loop() in the main thread")
try:
    import uvloop
except ImportError:  # no wheels for Windows or PyPy
    pass
else:
    BASES["uvloop.new_event_loop()"] = lambda: uvloop.new_event_loop
    BASES["uvloop.Loop()"] = lambda: uvloop.Loop
    BASES["uvloop's policy set later"] = lambda: _set_later(uvloop.EventLoopPolicy())


def probing(inner: Maker) -> Maker:
    """A factory that makes a loop, closes it, and returns another."""

    def factory() -> Loop:
        inner().close()
        return inner()

    return factory


def traced(inner: Maker) -> Maker:
    return tracedpolicy.loop_factory(inner)


def policy_around(inner: Maker) -> Maker:
    """A process-wide policy whose ``new_event_loop`` probes a loop first."""

    class ProbingPolicy(DefaultPolicy):  # type: ignore[misc]
        def new_event_loop(self) -> Loop:
            inner().close()
            return inner()

    policy = ProbingPolicy()
    _set_policy(policy)
    made: Maker = policy.new_event_loop
    return made


LAYERS: dict[str, Callable[[Maker], Maker]] = {
    "a probing factory": probing,
    "a traced loop_factory()": traced,
    "a probing process-wide policy": policy_around,
}


async def _noop() -> None:
    return None


def close_directly(loop: Loop) -> None:
    loop.close()


def close_from_a_thread(loop: Loop) -> None:
    thread = threading.Thread(target=loop.close)
    thread.start()
    thread.join()


def close_from_a_thread_started_from_c(loop: Loop) -> None:
    threads = _thread._count()
    _thread.start_new_thread(loop.close, ())
    deadline = time.monotonic() + 30
    while _thread._count() > threads or not loop.is_closed():
        assert time.monotonic() < deadline, "the thread did not end"
        time.sleep(0.001)


def close_after_running(loop: Loop) -> None:
    loop.run_until_complete(_noop())
    loop.close()


CLOSERS: dict[str, Callable[[Loop], None]] = {
    "close()": close_directly,
    "close() in a thread": close_from_a_thread,
    "close() in a thread started from C": close_from_a_thread_started_from_c,
    "run, then close()": close_after_running,
}


def call(maker: Maker, closer: Callable[[Loop], None]) -> None:
    closer(maker())


def run_with_the_policy(maker: Maker, closer: Callable[[Loop], None]) -> None:
    """``asyncio.run()`` without a factory: it asks the process-wide policy."""

    class MakerPolicy(DefaultPolicy):  # type: ignore[misc]
        def new_event_loop(self) -> Loop:
            return maker()

    _set_policy(MakerPolicy())
    asyncio.run(_noop())


USES: dict[str, Callable[[Maker, Callable[[Loop], None]], None]] = {
    "called": call,
    "called by asyncio.run()": run_with_the_policy,
}
if hasattr(asyncio, "Runner"):

    def run_in_a_runner(maker: Maker, closer: Callable[[Loop], None]) -> None:
        with asyncio.Runner(loop_factory=maker) as runner:  # type: ignore[attr-defined]
            runner.run(_noop())

    USES["asyncio.Runner(loop_factory=f)"] = run_in_a_runner
if sys.version_info >= (3, 12):

    def run_with_a_factory(maker: Maker, closer: Callable[[Loop], None]) -> None:
        asyncio.run(_noop(), loop_factory=maker)  # type: ignore[call-arg]

    USES["asyncio.run(loop_factory=f)"] = run_with_a_factory


@pytest.fixture(params=["instrument", "install"])
def mode(request: Any) -> Iterator[str]:
    getattr(tracedpolicy, request.param)()
    yield request.param
    tracedpolicy.uninstrument()
    tracedpolicy.uninstall()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    base=st.sampled_from(sorted(BASES)),
    layers=st.lists(st.sampled_from(sorted(LAYERS)), max_size=3),
    use=st.sampled_from(sorted(USES)),
    closer=st.sampled_from(sorted(CLOSERS)),
)
def test_every_loop_closed_is_counted_closed_never_leaked(
    mode: str, base: str, layers: list[str], use: str, closer: str
) -> None:
    implicit = base.startswith("get_event_loop()")
    assume(not implicit or (not layers and use == "called"))  # a loop set as current
    if base in ASKS_THE_CURRENT_POLICY:  # a policy making loops with it would call itself
        assume("a probing process-wide policy" not in layers and use != "called by asyncio.run()")
    assert RUNNING.get_policy is not None and RUNNING.set_policy is not None
    policy = RUNNING.get_policy()
    gc.collect()
    made, closed, leaked = totals()
    try:
        maker = BASES[base]()
        for layer in layers:
            maker = LAYERS[layer](maker)
        USES[use](maker, CLOSERS[closer])
        if implicit:
            asyncio.set_event_loop(None)  # it was left current, closed
        gc.collect()
        now = totals()
    finally:
        RUNNING.set_policy(policy)
    assert now[0] > made or mode == "install"
    assert (now[1] - closed, now[2] - leaked) == (now[0] - made, 0)
