"""What the registry keeps per thread: current loops, policies' states, a thread's end."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.threadloops import loops_of_this_thread, thread_alive


def test_a_thread_is_alive_until_its_run_returns() -> None:
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(thread_alive(threading.get_ident())))
    thread.start()
    thread.join()
    assert seen == [True]
    assert thread.ident is not None and not thread_alive(thread.ident)


def test_a_threads_memory_of_a_policys_state_goes_with_the_policy() -> None:
    """A thread remembers each policy's per-thread state (reading it is slow without a GIL), but
    not past the policy: a discarded policy's state, and a loop an untraced set left in it, go."""
    found: dict[str, Any] = {}

    def in_a_thread() -> None:
        policy_class: Any = RUNNING.default_policy
        base = policy_class()
        policy = TracedEventLoopPolicy(base, label="remembered-state")
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        policy.set_event_loop(None)
        states = loops_of_this_thread(REGISTRY._threads).states
        found["kept"] = id(base._local) in states
        base.set_event_loop(loop)  # untraced: only the policy's own state holds it now
        alive = weakref.ref(loop)
        loop.close()
        del policy, base, loop
        gc.collect()
        found["forgotten"] = not states
        found["loop freed"] = alive() is None

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert found == {"kept": True, "forgotten": True, "loop freed": True}
