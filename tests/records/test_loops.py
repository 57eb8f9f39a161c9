"""The loop registry: exact closes, abandoned loops, bounded memory, ids never reused."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import warnings
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records import closehooks
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.sites import class_name

from ..collecting import InACycle, finishes_with_a_collection_at
from ..counts import leak_counts, loop_counts, recorder_named
from ..processes import run_python

DefaultPolicy: Any = RUNNING.default_policy


counts = loop_counts
leaks = leak_counts


def test_a_close_is_seen_at_once_and_twice_counts_once() -> None:
    label = "tests.loops.close"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    loop = policy.new_event_loop()
    assert counts(label) == {"loops.created": 1, "loops.closed": 0, "loops.open": 1}
    loop.close()
    loop.close()
    assert counts(label) == {"loops.created": 1, "loops.closed": 1, "loops.open": 0}
    assert type(loop).close.__name__ == "close" and hasattr(type(loop).close, "__wrapped__")


def test_an_abandoned_loop_is_not_counted_as_closed() -> None:
    label = "tests.loops.abandoned"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    loop = policy.new_event_loop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio's "unclosed event loop"
        del loop  # BaseEventLoop.__del__ closes it; that is no close of the user's
        gc.collect()
    assert counts(label) == {"loops.created": 1, "loops.closed": 0, "loops.open": 0}
    stats = recorder_named(label).loop_classes()
    assert [s.leaked["gc_unclosed"].value for s in stats.values()] == [1]


class Immutable(type):
    """A class that refuses new attributes, as an extension type such as a C loop does."""

    def __setattr__(cls, name: str, value: Any) -> None:
        raise TypeError(f"cannot set {name!r} attribute of immutable type {cls.__name__!r}")


class CheapLoop(asyncio.AbstractEventLoop):
    """A loop with no selector or sockets, so 100k of them take a second, not minutes."""

    def __init__(self) -> None:
        self._closed = False

    def close(self) -> None:
        self._closed = True

    def is_closed(self) -> bool:
        return self._closed


class ImmutableLoop(CheapLoop, metaclass=Immutable):
    """A loop whose close no hook can wrap: its class takes no new attributes."""

    close = CheapLoop.close  # its own, taken before any hook could wrap CheapLoop's


def test_a_close_no_hook_can_see_is_found_when_metrics_are_collected(
    telemetry: Any,
) -> None:
    label = "tests.loops.unhookable"
    loop = tracedpolicy.loop_factory(ImmutableLoop, label=label)()
    record = REGISTRY.record_for(loop, "loop_factory", label, tracked=True)
    assert record is not None and not record.close_hooked
    loop.close()
    assert counts(label)["loops.closed"] == 0  # nothing saw it yet
    telemetry.points("asyncio.loop.closed")  # an OpenTelemetry collection sweeps
    assert counts(label) == {"loops.created": 1, "loops.closed": 1, "loops.open": 0}


def test_many_loops_leave_no_records_behind() -> None:
    policy = TracedEventLoopPolicy(DefaultPolicy(), label="tests.loops.many")
    gc.collect()
    before = len(REGISTRY.records())
    for _ in range(2000):
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        policy.set_event_loop(None)
        loop.close()
    del loop
    assert_nothing_left_behind("tests.loops.many", 2000, before)


def assert_nothing_left_behind(label: str, made: int, records_before: int) -> None:
    """``made`` loops of ``label`` were all closed, and no record of them stays."""
    gc.collect()
    # Records of this label only: earlier tests' loops may be collected meanwhile.
    assert [r for r in REGISTRY.records() if r.creator == label] == []
    assert len(REGISTRY.records()) <= records_before
    assert counts(label) == {"loops.created": made, "loops.closed": made, "loops.open": 0}


def test_records_describe_where_and_when_a_loop_was_made() -> None:
    policy = TracedEventLoopPolicy(DefaultPolicy(), label="tests.loops.record")
    loop = policy.new_event_loop()
    try:
        record = REGISTRY.record_for(loop, "policy", "ignored", tracked=False)
        assert record is not None
        assert (record.creator, record.loop_class, record.thread_name) == (
            "tests.loops.record",
            class_name(type(loop)),
            "MainThread",
        )
        assert record.tracked and not record.closed and record.age() >= 0
        assert record in REGISTRY.open_records()
    finally:
        loop.close()
    assert record not in REGISTRY.open_records()
    assert record.closed_monotonic is not None


def line_of(marker: str) -> int:
    """The line of this file that carries ``marker`` in a comment."""
    with open(__file__) as source:
        for number, line in enumerate(source, 1):
            if line.rstrip().endswith(f"# {marker}"):
                return number
    raise AssertionError(marker)


def test_gc_unclosed_is_counted_once_logged_and_names_the_creating_line(
    caplog: Any,
) -> None:
    label = "tests.leaks.gc"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="tracedpolicy.leaks"):
        warnings.simplefilter("ignore", ResourceWarning)
        policy.new_event_loop()  # LEAK-GC
        gc.collect()
    assert leaks(label) == {"gc_unclosed": 1, "thread_exit": 0, "open_at_exit": 0}
    assert counts(label) == {"loops.created": 1, "loops.closed": 0, "loops.open": 0}
    (message,) = [r.getMessage() for r in caplog.records if label in r.getMessage()]
    site = f"{__file__}:{line_of('LEAK-GC')} in test_gc_unclosed_is_counted_once"
    assert message.startswith("event loop leaked (gc_unclosed): ") and site in message
    assert "in thread 'MainThread'" in message


def cpythons_own_finalizer_failure(unraisable: Any) -> bool:
    """asyncio's ``BaseEventLoop.__del__`` closing a loop whose self-pipe sockets were finalized
    first: free-threaded 3.13 does that bare, most times (``Invalid file descriptor: -1``)."""
    return (
        isinstance(unraisable.exc_value, ValueError)
        and str(unraisable.exc_value) == "Invalid file descriptor: -1"
        and getattr(unraisable.object, "__qualname__", "") == "BaseEventLoop.__del__"
    )


def test_a_threads_loop_left_open_leaks_as_thread_exit_not_gc(
    caplog: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    label = "tests.leaks.thread"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    unraisables: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisables.append)

    def worker() -> None:
        policy.set_event_loop(policy.new_event_loop())  # LEAK-THREAD

    with warnings.catch_warnings(), caplog.at_level("WARNING", logger="tracedpolicy.leaks"):
        warnings.simplefilter("ignore", ResourceWarning)
        thread = threading.Thread(target=worker, name="leaky-worker")
        thread.start()
        thread.join()
        gc.collect()
    assert [u for u in unraisables if not cpythons_own_finalizer_failure(u)] == []
    assert leaks(label) == {"gc_unclosed": 0, "thread_exit": 1, "open_at_exit": 0}
    assert counts(label)["loops.open"] == 0
    (message,) = [r.getMessage() for r in caplog.records if label in r.getMessage()]
    assert f"{__file__}:{line_of('LEAK-THREAD')} in worker" in message
    assert "in thread 'leaky-worker'" in message


def test_a_loop_kept_alive_after_its_thread_ended_is_a_thread_exit_leak() -> None:
    label = "tests.leaks.thread-kept"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    kept: list[Any] = []

    def worker() -> None:
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        kept.append(loop)  # still referenced: no GC, the thread's end is the leak

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    gc.collect()
    assert leaks(label)["thread_exit"] == 1
    (record,) = [r for r in REGISTRY.open_records() if r.creator == label]
    assert record.leaked == "thread_exit" and record.set_on == {}
    kept[0].close()  # a leak stays a leak: closing it later counts no close
    assert counts(label) == {"loops.created": 1, "loops.closed": 0, "loops.open": 0}


def test_a_closed_loop_is_never_a_leak() -> None:
    label = "tests.leaks.closed"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)

    def worker() -> None:
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        loop.close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    policy.new_event_loop().close()
    gc.collect()
    assert leaks(label) == {"gc_unclosed": 0, "thread_exit": 0, "open_at_exit": 0}
    assert counts(label) == {"loops.created": 2, "loops.closed": 2, "loops.open": 0}


def test_a_loop_cleared_from_its_thread_before_the_thread_ends_is_not_a_thread_leak() -> None:
    label = "tests.leaks.cleared"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    kept: list[Any] = []

    def worker() -> None:
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        policy.set_event_loop(None)
        kept.append(loop)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    gc.collect()
    assert leaks(label)["thread_exit"] == 0 and counts(label)["loops.open"] == 1
    kept.pop().close()
    assert counts(label)["loops.open"] == 0


AT_EXIT = """
import asyncio, os, sys, tracedpolicy
tracedpolicy.install(report_at_exit=True, prometheus=False)
kept = asyncio.new_event_loop()  # made through the installed traced policy
if len(sys.argv) > 1:
    pid = os.fork()
    if pid == 0:
        own = asyncio.new_event_loop()  # the child's own loop, open at its exit
        sys.exit(0)
    os.waitpid(pid, 0)
"""


def run_at_exit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-c", AT_EXIT, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_loops_open_at_exit_are_counted_and_reported_with_their_line() -> None:
    done = run_at_exit()
    assert done.returncode == 0, done.stderr
    report = done.stderr[done.stderr.index("tracedpolicy: 1 open event loop") :]
    lines = report.splitlines()
    assert lines[0] == "tracedpolicy: 1 open event loop from 1 creation site"
    assert lines[1].startswith("1 loop, oldest ") and lines[1].endswith(", <string>:4 in <module>")
    assert "    leaked: open_at_exit" in lines
    assert "event loop leaked (open_at_exit)" in done.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_does_not_report_its_parents_loops() -> None:
    done = run_at_exit("fork")
    assert done.returncode == 0, done.stderr
    # Two reports, one per process, each naming only its own loop: the parent's (line 4)
    # once, though the child inherited it, and the child's own (line 8).
    assert done.stderr.count("tracedpolicy: 1 open event loop from 1 creation site") == 2
    assert done.stderr.count(", <string>:4 in <module>") == 1
    assert done.stderr.count(", <string>:8 in <module>") == 1
    assert done.stderr.count("event loop leaked (open_at_exit)") == 2


def test_100k_loops_made_and_closed_leave_nothing_behind() -> None:
    factory = tracedpolicy.loop_factory(CheapLoop, label="tests.loops.100k")
    gc.collect()
    before = len(REGISTRY.records())
    for _ in range(100_000):
        factory().close()
    assert_nothing_left_behind("tests.loops.100k", 100_000, before)


def test_the_creation_stack_is_bounded_by_its_option() -> None:
    REGISTRY.stack_depth = 3
    try:
        loop = TracedEventLoopPolicy(DefaultPolicy(), label="tests.loops.stack").new_event_loop()
    finally:
        REGISTRY.stack_depth = 0
    record = REGISTRY.record_for(loop, "policy", "ignored", tracked=False)
    loop.close()
    assert record is not None and record.site is not None
    assert record.site.function == "test_the_creation_stack_is_bounded_by_its_option"
    assert len(record.stack) == 3  # pytest's frames above this test


def test_uvloop_loops_are_closed_leaked_and_sited_like_asyncios() -> None:
    uvloop = pytest.importorskip("uvloop")
    label = "tests.leaks.uvloop"
    factory = tracedpolicy.loop_factory(uvloop.new_event_loop, label=label)
    closed = factory()
    closed.close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        factory()  # dropped unclosed
        gc.collect()
    assert counts(label) == {"loops.created": 2, "loops.closed": 1, "loops.open": 0}
    assert leaks(label) == {"gc_unclosed": 1, "thread_exit": 0, "open_at_exit": 0}
    kept = factory()
    (record,) = [r for r in tracedpolicy.open_loops() if r.creator == label]
    assert record.site is not None and record.site.filename == __file__
    assert record.loop_class == "uvloop.Loop"
    kept.close()


def test_two_policies_sharing_a_label_keep_their_own_current_loops() -> None:
    label = "tests.leaks.shared-label"
    first = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    second = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    kept: list[Any] = []

    def worker() -> None:
        loop = first.new_event_loop()
        first.set_event_loop(loop)
        kept.append(loop)
        other = second.new_event_loop()
        second.set_event_loop(other)  # another policy's loop: the first one is still current
        second.set_event_loop(None)
        other.close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    gc.collect()
    assert leaks(label)["thread_exit"] == 1
    kept[0].close()


PENDING_AT_FORK = """
import asyncio, gc, os, sys, warnings
warnings.simplefilter("ignore", ResourceWarning)
import tracedpolicy
from tracedpolicy.records.recorder import recorders

def leaked():
    return sum(c.value for r in recorders() for s in r.loop_classes().values()
               for c in s.leaked.values())

policy = tracedpolicy.TracedEventLoopPolicy(label="pending-at-fork")
policy.new_event_loop()  # dropped unclosed: its leak is queued by the GC, not counted yet
gc.collect()
pid = os.fork()
if pid == 0:
    print("child", leaked(), flush=True)  # reading the counts flushes the queue
    os._exit(0)
os.waitpid(pid, 0)
print("parent", leaked(), flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_leak_the_parent_had_not_counted_yet_is_not_the_childs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PENDING_AT_FORK], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["child 0", "parent 1"]
    assert done.stderr.count("event loop leaked (gc_unclosed)") == 1  # logged by the parent


DROPPED_AS_THE_CHILD_STARTS = """
import asyncio, os, signal, sys, threading, time
import tracedpolicy
from tracedpolicy.records.loops import REGISTRY


class PlainLoop(asyncio.AbstractEventLoop):
    \"\"\"A loop in no reference cycle: freed as soon as its thread-local reference goes.\"\"\"

    def __init__(self):
        self.closed = False

    def is_closed(self):
        return self.closed

    def close(self):
        self.closed = True


class PlainPolicy(asyncio.DefaultEventLoopPolicy):
    _loop_factory = PlainLoop


policy = tracedpolicy.TracedEventLoopPolicy(PlainPolicy(), label="child-start")
ready, holding, done = threading.Event(), threading.Event(), threading.Event()


def sets_a_loop():  # the loop lives only in this thread's policy state, and its end watched
    policy.set_event_loop(policy.new_event_loop())
    ready.set()
    threading.Event().wait()


def holds_the_registry():  # what another thread may be doing as the main thread forks
    with REGISTRY._lock:
        holding.set()
        done.wait()


threading.Thread(target=sets_a_loop, daemon=True).start()
holder = threading.Thread(target=holds_the_registry)
holder.start()
ready.wait()
holding.wait()
# The child drops both threads' states before any fork handler runs: the loop is freed and its
# thread's end noticed there, while the registry's lock is still the other thread's.
pid = os.fork()
if pid == 0:
    signal.alarm(30)
    os._exit(0 if tracedpolicy.snapshot() is not None else 1)
deadline = time.monotonic() + 20
while not os.waitpid(pid, os.WNOHANG)[0]:
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print("hung")
        break
    time.sleep(0.01)
else:
    print("exited")
done.set()
holder.join()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_loop_and_a_thread_dropped_as_a_forked_child_starts_hang_nothing() -> None:
    done = run_python(DROPPED_AS_THE_CHILD_STARTS)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["exited"], done.stderr


class ClosesItsLoopWhenCollected:
    """A user's object that owns a loop and closes it in its own ``__del__``."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop

    def __del__(self) -> None:
        self.loop.close()


def test_a_loop_closed_in_a_users_del_is_closed_not_leaked() -> None:
    label = "tests.loops.users-del"
    owner = ClosesItsLoopWhenCollected(
        TracedEventLoopPolicy(DefaultPolicy(), label=label).new_event_loop()
    )
    del owner
    gc.collect()
    assert counts(label) == {"loops.created": 1, "loops.closed": 1, "loops.open": 0}
    assert leaks(label)["gc_unclosed"] == 0


@pytest.mark.parametrize("behind_the_back", ["the base itself", "a second wrapper"])
def test_a_threads_current_loop_follows_the_bases_own_state(behind_the_back: str) -> None:
    """Cleared past the wrapper, the loop was not current when its thread ended: no leak."""
    label = f"tests.loops.state-{behind_the_back.replace(' ', '-')}"
    base = DefaultPolicy()
    policy = TracedEventLoopPolicy(base, label=label)
    other = TracedEventLoopPolicy(base, label=label)
    kept: list[Any] = []

    def worker() -> None:
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        kept.append(loop)
        (base if behind_the_back == "the base itself" else other).set_event_loop(None)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    gc.collect()
    REGISTRY.flush()
    assert leaks(label)["thread_exit"] == 0
    kept.pop().close()  # an explicit close, counted as such
    assert counts(label) == {"loops.created": 1, "loops.closed": 1, "loops.open": 0}


GARBAGE_AFTER_A_CYCLE = """
import asyncio, gc, sys
import tracedpolicy
if sys.argv[1] == "traced":
    tracedpolicy.install()
loop = asyncio.new_event_loop()
loop.close()
loop.cycle = [loop]
del loop
gc.collect()
gc.set_debug(gc.DEBUG_SAVEALL)
gc.collect()
print(sorted(type(thing).__name__ for thing in gc.garbage))
"""


def test_a_collected_loop_leaves_no_garbage_cycle_behind() -> None:
    """tornado's own tests assert this; so do users who run with gc.DEBUG_SAVEALL."""
    found = [
        subprocess.run(
            [sys.executable, "-c", GARBAGE_AFTER_A_CYCLE, mode],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        for mode in ("bare", "traced")
    ]
    assert found == ["[]\n", "[]\n"]


class FirstHookedLoop(asyncio.SelectorEventLoop):
    """A loop class no close hook is on yet."""


class AlsoFirstHookedLoop(asyncio.SelectorEventLoop):
    """Another one, made by a ``__del__`` while the first is being hooked."""


def test_a_collection_while_a_close_is_hooked_may_make_and_close_a_loop() -> None:
    """A ``__del__`` run by a collection inside the hooking may make a loop (asyncio.run) and
    close it: that hooks another class and releases hooks, under the same lock."""
    label = "tests.loops.collect-in-hook"

    def policy_of(loop_class: type) -> TracedEventLoopPolicy:
        base = DefaultPolicy()
        base._loop_factory = loop_class
        return TracedEventLoopPolicy(base, label=label)

    made: list[Any] = []
    assert finishes_with_a_collection_at(
        closehooks.hook_close,
        'own = vars(cls).get("close", _MISSING)',
        lambda: made.append(policy_of(FirstHookedLoop).new_event_loop()),
        lambda: InACycle(lambda: policy_of(AlsoFirstHookedLoop).new_event_loop().close()),
    )
    made.pop().close()
    assert counts(label) == {"loops.created": 2, "loops.closed": 2, "loops.open": 0}


class ClosesItsLoopInACycle:
    """An owner in a reference cycle (a bound method kept on itself) that closes its loop in
    ``__del__``: the collection clears the loop's weakref before it runs that ``__del__``.

    The owner exists before its loop, so its ``__del__`` runs before asyncio's finaliser of the
    loop, and bare asyncio sees a closed loop (no ResourceWarning).
    """

    def __init__(self, policy: Any) -> None:
        self.loop = policy.new_event_loop()
        self.on_done = self.finish

    def finish(self) -> None:
        pass

    def __del__(self) -> None:
        self.loop.close()


def test_a_loop_closed_in_the_del_of_an_owner_in_a_cycle_is_closed_not_leaked() -> None:
    label = "tests.loops.cyclic-owner"
    ClosesItsLoopInACycle(TracedEventLoopPolicy(DefaultPolicy(), label=label))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        gc.collect()
    assert not [w for w in caught if "unclosed event loop" in str(w.message)]  # as bare
    assert counts(label) == {"loops.created": 1, "loops.closed": 1, "loops.open": 0}
    assert leaks(label)["gc_unclosed"] == 0


def test_a_loop_in_a_cycle_left_unclosed_is_still_a_gc_leak() -> None:
    label = "tests.loops.cyclic-unclosed"
    loop = TracedEventLoopPolicy(DefaultPolicy(), label=label).new_event_loop()
    loop.cycle = [loop]  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # asyncio's "unclosed event loop"
        del loop
        gc.collect()
    assert counts(label) == {"loops.created": 1, "loops.closed": 0, "loops.open": 0}
    assert leaks(label)["gc_unclosed"] == 1


class HookedTwiceLoop(asyncio.SelectorEventLoop):
    """A loop class only the whole-process mode hooks, in two periods of it."""


def test_a_close_hook_reused_by_a_second_mode_period_is_taken_off_after_it() -> None:
    """instrument, a loop, uninstrument (the loop still open: the hook waits), instrument, a
    second loop of the class, uninstrument, both closed: ``close`` is the class's own again."""
    own = vars(HookedTwiceLoop).get("close")
    made = []
    for _ in range(2):
        tracedpolicy.instrument()
        made.append(HookedTwiceLoop())
        tracedpolicy.uninstrument()
    assert vars(HookedTwiceLoop).get("close") is not own  # open loops still need the hook
    for loop in made:
        loop.close()
    assert vars(HookedTwiceLoop).get("close") is own
    assert HookedTwiceLoop not in closehooks._close_hooks


LOOP_SET_AT_EXIT = """
import tracedpolicy
from tracedpolicy.base._compat import RUNNING
tracedpolicy.install()
policy = RUNNING.get_policy()
policy.set_event_loop(policy.new_event_loop())
print("done")
"""


def test_a_process_exiting_with_a_loop_set_on_its_main_thread_exits_cleanly() -> None:
    """The registry's gc callback is gone before the interpreter's last collections."""
    done = run_python(LOOP_SET_AT_EXIT, flags=("-W", "ignore"))
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr


def test_recording_a_loop_leaves_its_attributes_stored_as_bare() -> None:
    """Reading a loop's ``__dict__`` turns its inline attribute values into a dict for good on
    3.11 and 3.12, which makes every attribute access of its run 20-30% slower (a ping-pong of
    callbacks measured 1.2x): the close hook must ask without it."""
    bare = asyncio.SelectorEventLoop()
    traced = tracedpolicy.loop_factory(asyncio.SelectorEventLoop, label="tests.loops.inline")()
    try:
        assert REGISTRY.tracks(traced)

        def stored(loop: asyncio.AbstractEventLoop) -> list[str]:
            return sorted(type(referent).__name__ for referent in gc.get_referents(loop))

        assert stored(traced) == stored(bare)
    finally:
        bare.close()
        traced.close()


CLOSED_FROM_C = """
import _thread, asyncio, atexit, sys, time, tracedpolicy
from tracedpolicy.exporters.report import totals
getattr(tracedpolicy, sys.argv[1])()
loop = asyncio.new_event_loop()
if sys.argv[2] == "atexit":
    atexit.register(lambda: print(totals(), tracedpolicy.open_loops()))
    atexit.register(loop.close)  # runs first, from C
else:
    _thread.start_new_thread(loop.close, ())
    deadline = time.monotonic() + 30
    while (_thread._count() or not loop.is_closed()) and time.monotonic() < deadline:
        time.sleep(0.001)
    print(totals(), tracedpolicy.open_loops())
"""


@pytest.mark.parametrize("mode", ["install", "instrument"])
@pytest.mark.parametrize("caller", ["atexit", "a thread started from C"])
def test_a_close_with_no_python_caller_is_counted_and_raises_nothing(
    mode: str, caller: str
) -> None:
    """``close`` called straight from C has no caller frame for the hook to look at."""
    done = subprocess.run(
        [sys.executable, "-c", CLOSED_FROM_C, mode, caller.split()[0]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "(1, 1, 0) []\n")
