"""Making a loop: the thread's state is put back whatever interrupts the making."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy, recorder
from tracedpolicy._compat import RUNNING
from tracedpolicy.recorder import Operation, PolicyEvent, thread_state

from .collecting import line_of
from .counts import loop_counts
from .outcomes import in_thread

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
    before = recorder._span_hook
    yield
    recorder.set_span_hook(before)


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
            recorder.set_span_hook(InterruptingHook())
        try:
            with pytest.raises(KeyboardInterrupt):
                policy.new_event_loop()
        finally:
            sys.settrace(None)
            recorder.set_span_hook(None)
        state = (thread_state.making, thread_state.depth)
        policy.new_event_loop().close()
        return state

    try:
        assert in_thread(interrupted_then_again) == (None, 0)
    finally:
        tracedpolicy.remove_observer(observer)
    assert loop_counts(label)["loops.closed"] == 1
    assert told.count("new_event_loop") == 1 and told.count("loop_closed") == 1
