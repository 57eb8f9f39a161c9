"""Making a loop: the thread's state is put back whatever interrupts the making."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.exporters.report import totals
from tracedpolicy.records import events
from tracedpolicy.records.events import Operation, PolicyEvent, thread_state

from ..collecting import line_of
from ..counts import loop_counts
from ..outcomes import in_thread

DefaultPolicy: Any = RUNNING.default_policy


class InterruptingHook:
    """A span hook whose ``start`` is where Ctrl-C lands."""

    def __init__(self) -> None:
        self.ended: list[Any] = []

    def start(self, operation: Operation) -> Any:
        raise KeyboardInterrupt

    def span_context(self, handle: Any) -> Any:
        return None

    def end(self, handle: Any, event: PolicyEvent | None) -> None:
        self.ended.append(handle)


@pytest.fixture
def no_span_hook() -> Iterator[None]:
    before = events._span_hook
    yield
    events.set_span_hook(before)


def interrupt_at(function: Any, text: str) -> Any:
    """A line tracer that raises KeyboardInterrupt at that line, as a SIGINT handler would."""
    code, target = function.__code__, line_of(function, text)

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        if event == "line" and frame.f_lineno == target:
            sys.settrace(None)
            raise KeyboardInterrupt
        return tracer

    return tracer


WHERE = {
    "Operation.__init__": (Operation.__init__, "self.start_ns = time.time_ns()"),
    "Operation.__enter__": (Operation.__enter__, "self.start_ns = time.time_ns()"),
}


@pytest.mark.parametrize("where", ["a span hook's start", *WHERE])
def test_ctrl_c_early_in_making_a_loop_leaves_the_thread_as_it_was(
    where: str, no_span_hook: None
) -> None:
    label = f"tests.making.ctrl-c-{where}"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    told: list[str] = []

    def observer(event: PolicyEvent) -> None:
        if event.creator == label:
            told.append(event.kind)

    tracedpolicy.add_observer(observer)

    def interrupted_then_again() -> tuple[Any, int]:
        if where in WHERE:
            sys.settrace(interrupt_at(*WHERE[where]))
        else:
            events.set_span_hook(InterruptingHook())
        try:
            with pytest.raises(KeyboardInterrupt):
                policy.new_event_loop()
        finally:
            sys.settrace(None)
            events.set_span_hook(None)
        state = (thread_state().making, thread_state().depth)
        policy.new_event_loop().close()
        return state

    try:
        assert in_thread(interrupted_then_again) == (None, 0)
    finally:
        tracedpolicy.remove_observer(observer)
    assert loop_counts(label)["loops.closed"] == 1
    assert told.count("new_event_loop") == 1 and told.count("loop_closed") == 1


class ProbingPolicy(DefaultPolicy):  # type: ignore[misc]
    """A policy whose ``new_event_loop`` makes a probe loop and closes it first."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        super().new_event_loop().close()
        loop: asyncio.AbstractEventLoop = super().new_event_loop()
        return loop


def probing_factory() -> asyncio.AbstractEventLoop:
    asyncio.SelectorEventLoop().close()  # a probe, made and closed inside the factory
    return asyncio.SelectorEventLoop()


async def _noop() -> None:
    return None


def set_a_probing_policy() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # on 3.14+
        asyncio.set_event_loop_policy(ProbingPolicy())


def use_a_probing_policy() -> None:
    set_a_probing_policy()
    asyncio.run(_noop())


def use_a_probing_runner_factory() -> None:
    with asyncio.Runner(loop_factory=probing_factory) as runner:  # type: ignore[attr-defined]
        runner.run(_noop())


def use_a_probing_traced_factory() -> None:
    tracedpolicy.loop_factory(probing_factory)().close()


def use_a_probing_factory_around_a_probing_policy() -> None:
    set_a_probing_policy()

    def factory() -> asyncio.AbstractEventLoop:
        asyncio.new_event_loop().close()  # a probe through the policy, which probes too
        return asyncio.new_event_loop()

    tracedpolicy.loop_factory(factory)().close()


PROBES = {
    "a policy's new_event_loop": use_a_probing_policy,
    "a traced loop factory": use_a_probing_traced_factory,
    "a factory around a policy": use_a_probing_factory_around_a_probing_policy,
}
if hasattr(asyncio, "Runner"):
    PROBES["a runner's loop factory"] = use_a_probing_runner_factory


@pytest.mark.parametrize("layer", PROBES)
def test_a_loop_made_and_closed_inside_a_layer_is_closed_not_leaked(
    layer: str, caplog: Any
) -> None:
    """The probe's close comes before the layer returns and records it: it is seen all the
    same, after the probe is counted created, with a lifetime that is not negative."""
    told: list[PolicyEvent] = []
    tracedpolicy.instrument()
    tracedpolicy.add_observer(told.append)
    made, closed, leaked = totals()
    try:
        with caplog.at_level(logging.WARNING, logger="tracedpolicy.leaks"):
            PROBES[layer]()
            gc.collect()
            now = totals()
    finally:
        tracedpolicy.remove_observer(told.append)
    assert now[0] - made >= 2
    assert (now[1] - closed, now[2] - leaked) == (now[0] - made, 0)
    assert not caplog.records
    seen: set[Any] = set()
    for event in told:
        if event.kind == "new_event_loop":
            seen.add(event.loop_id)
        elif event.kind == "loop_closed":
            assert event.loop_id in seen and event.duration is not None and event.duration >= 0


def test_a_loop_a_layer_drops_unclosed_leaks_where_it_was_constructed(caplog: Any) -> None:
    """A leak names the line that constructed the loop, inside the factory, not the line that
    called the factory."""

    def leaving_a_probe_open() -> asyncio.AbstractEventLoop:
        probe = asyncio.SelectorEventLoop()  # the leak's line
        del probe
        return asyncio.SelectorEventLoop()

    tracedpolicy.instrument()
    line = line_of(leaving_a_probe_open, "the leak's line")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # the unclosed probe, as bare
        with caplog.at_level(logging.WARNING, logger="tracedpolicy.leaks"):
            tracedpolicy.loop_factory(leaving_a_probe_open)().close()
            gc.collect()
            totals()  # flushes the leak
    (leak,) = [r.getMessage() for r in caplog.records]
    assert "event loop leaked (gc_unclosed)" in leak and f"{__file__}:{line} in" in leak, leak
