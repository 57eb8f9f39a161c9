"""Traced loop factories: asyncio.run, Runner, uvloop.run, and Pythons without policies."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from typing import Any, Callable

import pytest

import tracedpolicy
from tracedpolicy import TracedLoopFactory
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records.events import LOOP_FACTORY
from tracedpolicy.records.recorder import recorder_for

from ..outcomes import observe
from ..processes import run_python
from ..simulated import HIDE_POLICIES

DEFAULT_LABEL = (
    f"{RUNNING.default_loop_factory.__module__}.{RUNNING.default_loop_factory.__qualname__}"  # type: ignore[union-attr]
)


async def running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def run_with(factory: Callable[[], asyncio.AbstractEventLoop]) -> asyncio.AbstractEventLoop:
    """Run a coroutine on a loop from ``factory`` the way this Python allows."""
    if sys.version_info >= (3, 12):
        return asyncio.run(running_loop(), loop_factory=factory)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(running_loop())
    loop = factory()
    try:
        return loop.run_until_complete(running_loop())
    finally:
        loop.close()


def test_default_factory_makes_the_platform_default_loop_and_records_it() -> None:
    factory = tracedpolicy.loop_factory()
    assert factory.base is RUNNING.default_loop_factory
    before = recorder_for(DEFAULT_LABEL, LOOP_FACTORY).snapshot().get("loops.created", 0)
    loop = run_with(factory)
    assert type(loop) is RUNNING.default_loop_factory and loop.is_closed()
    assert recorder_for(DEFAULT_LABEL, LOOP_FACTORY).snapshot()["loops.created"] == before + 1


def test_factory_loops_never_touch_the_process_policy() -> None:
    policy = tracedpolicy.install()
    before = policy._recorder.snapshot()
    run_with(tracedpolicy.loop_factory(label="tests.factory-only"))
    assert policy._recorder.snapshot() == before
    assert recorder_for("tests.factory-only", LOOP_FACTORY).snapshot()["loops.created"] == 1


def test_observers_hear_factory_loops_with_their_duration() -> None:
    events: list[tracedpolicy.PolicyEvent] = []
    tracedpolicy.add_observer(events.append)
    try:
        loop = run_with(tracedpolicy.loop_factory(label="tests.observed-factory"))
    finally:
        tracedpolicy.remove_observer(events.append)
    assert [(e.kind, e.origin, e.creator, e.loop) for e in events] == [
        ("new_event_loop", "loop_factory", "tests.observed-factory", loop),
        ("loop_closed", "loop_factory", "tests.observed-factory", loop),
    ]
    assert events[0].duration is not None and events[0].duration >= 0
    assert events[0].loop_id == events[1].loop_id is not None


def test_a_traced_factory_is_not_traced_twice() -> None:
    factory = tracedpolicy.loop_factory()
    assert tracedpolicy.loop_factory(factory) is factory
    assert isinstance(factory, TracedLoopFactory) and "TracedLoopFactory" in repr(factory)


def test_the_factorys_exceptions_reach_the_caller_unchanged() -> None:
    error = OSError("too many open files")

    def failing() -> asyncio.AbstractEventLoop:
        raise error

    with pytest.raises(OSError) as raised:
        tracedpolicy.loop_factory(failing)()
    assert raised.value is error


@pytest.mark.parametrize("bad", [3, "uvloop", object()])
def test_bad_base_is_a_type_error_naming_what_was_expected(bad: Any) -> None:
    outcome = observe(lambda: tracedpolicy.loop_factory(base=bad))
    assert outcome.error is not None and outcome.error[0] == "TypeError"
    assert "expects a callable that returns an event loop" in outcome.error[1]
    assert f"not {type(bad).__name__!r}" in outcome.error[1]


def test_uvloop_run_takes_a_traced_factory() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = tracedpolicy.loop_factory(uvloop.new_event_loop)
    recorder = recorder_for("uvloop.new_event_loop", LOOP_FACTORY)
    before = recorder.snapshot().get("loops.created", 0)
    if hasattr(uvloop, "run") and sys.version_info >= (3, 11):
        loop = uvloop.run(running_loop(), loop_factory=factory)
    else:
        loop = run_with(factory)
    assert isinstance(loop, uvloop.Loop)
    assert recorder.snapshot()["loops.created"] == before + 1


#: Hides the policy system the way CPython main (3.16) has removed it, then uses tracedpolicy.
WITHOUT_POLICIES = (
    HIDE_POLICIES
    + """
import tracedpolicy

async def main():
    return type(asyncio.get_running_loop()).__name__

factory = tracedpolicy.loop_factory(label="no-policies")
if sys.version_info >= (3, 12):
    print(asyncio.run(main(), loop_factory=factory))
elif sys.version_info >= (3, 11):
    with asyncio.Runner(loop_factory=factory) as runner:
        print(runner.run(main()))
else:
    loop = factory()
    print(loop.run_until_complete(main()))
    loop.close()
print(tracedpolicy.snapshot()["loop_factory no-policies"]["loops.created"])
for call in (tracedpolicy.install, tracedpolicy.TracedEventLoopPolicy,
             lambda: tracedpolicy.traced(object())):
    try:
        call()
    except RuntimeError as error:
        print("RuntimeError:", error)
try:
    tracedpolicy.TracedDefaultEventLoopPolicy
except AttributeError as error:
    print("AttributeError:", error)
"""
)


def test_without_a_policy_system_the_package_imports_and_factories_work() -> None:
    run = run_python(textwrap.dedent(WITHOUT_POLICIES), flags=("-W", "error"))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == RUNNING.default_loop_factory.__name__  # type: ignore[union-attr]
    assert lines[1] == "1"
    no_policies = (
        "RuntimeError: asyncio has no event loop policies on this Python; "
        "trace loops with tracedpolicy.loop_factory() instead"
    )
    assert lines[2:5] == [no_policies] * 3
    assert lines[5] == (
        "AttributeError: module 'tracedpolicy' has no attribute 'TracedDefaultEventLoopPolicy'"
    )
