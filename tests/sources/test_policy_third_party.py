"""Wrapping real third-party policies: uvloop's, and tornado's AnyThreadEventLoopPolicy."""

from __future__ import annotations

import asyncio
import functools
import threading
import warnings
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.sources.policy import _uses_stock_get, label_of

from ..outcomes import in_thread, observe

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from tornado.platform.asyncio import AnyThreadEventLoopPolicy


def any_thread_policy() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tornado deprecates it, users keep it
        return AnyThreadEventLoopPolicy()


def test_uvloop_policy_is_wrapped_faithfully(loops: list[Any]) -> None:
    uvloop = pytest.importorskip("uvloop")
    base = uvloop.EventLoopPolicy()
    policy = TracedEventLoopPolicy(base)
    # uvloop 0.23 has its own get_event_loop (never creating implicitly); older ones inherit ours.
    assert _uses_stock_get(base, RUNNING) == (
        type(base).get_event_loop is RUNNING.stock_get_event_loop
    )
    assert isinstance(policy, uvloop.EventLoopPolicy)
    in_worker = [observe(functools.partial(in_thread, p.get_event_loop)) for p in (base, policy)]
    assert in_worker[0] == in_worker[1]
    assert in_worker[1].error == (
        "RuntimeError",
        "There is no current event loop in thread 'worker'.",
    )
    loop = policy.new_event_loop()
    loops.append(loop)
    assert isinstance(loop, uvloop.Loop)
    policy.set_event_loop(loop)
    assert policy.get_event_loop() is loop and base.get_event_loop() is loop


def test_asyncio_run_under_an_installed_uvloop_wrapper_runs_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    RUNNING.set_policy(uvloop.EventLoopPolicy())  # type: ignore[misc]
    policy = tracedpolicy.install()
    before = policy._recorder.snapshot()

    async def main() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert asyncio.run(main()).startswith("uvloop")
    after = policy._recorder.snapshot()
    assert after["loops.created"] == before.get("loops.created", 0) + 1
    assert after["set_event_loop.set"] == before.get("set_event_loop.set", 0) + 1
    assert after["set_event_loop.clear"] == before.get("set_event_loop.clear", 0) + 1


def test_tornado_any_thread_policy_creates_in_workers_and_is_recorded() -> None:
    base = any_thread_policy()
    policy = TracedEventLoopPolicy(base)
    assert not _uses_stock_get(base, RUNNING), "tornado overrides get_event_loop; run it as it is"
    recorder = policy._recorder
    assert recorder.creator == label_of(AnyThreadEventLoopPolicy)
    before = recorder.snapshot()
    got: list[Any] = []

    def worker() -> None:
        loop = policy.get_event_loop()
        got.extend([loop, policy.get_event_loop()])
        loop.close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert got[0] is got[1] and isinstance(got[0], asyncio.AbstractEventLoop)
    after = recorder.snapshot()
    assert after["get_event_loop.created"] == before.get("get_event_loop.created", 0) + 1
    assert after["get_event_loop.hit"] == before["get_event_loop.hit"] + 1
    assert after["loops.created"] == before.get("loops.created", 0) + 1


def test_decorated_tornado_policy_counts_its_own_creation_once() -> None:
    traced_class = tracedpolicy.traced(AnyThreadEventLoopPolicy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        policy = traced_class()
    recorder = traced_class._tracedpolicy_recorder
    before = recorder.snapshot()
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(policy.get_event_loop()))
    thread.start()
    thread.join()
    box[0].close()
    after = recorder.snapshot()
    assert after["loops.created"] == before.get("loops.created", 0) + 1
    assert after["get_event_loop.created"] == before.get("get_event_loop.created", 0) + 1


def test_a_loop_an_opaque_base_held_before_it_was_traced_is_a_hit_not_a_creation(
    loops: list[Any],
) -> None:
    uvloop = pytest.importorskip("uvloop")
    base = uvloop.EventLoopPolicy()  # its own get_event_loop: opaque to tracedpolicy
    loop = base.new_event_loop()
    loops.append(loop)
    base.set_event_loop(loop)
    policy = TracedEventLoopPolicy(base, label="tests.third-party.held-before")
    assert policy.get_event_loop() is loop
    counts = policy._recorder.snapshot()
    assert (counts["get_event_loop.hit"], counts["get_event_loop.created"]) == (1, 0)
    assert counts["loops.created"] == 0
