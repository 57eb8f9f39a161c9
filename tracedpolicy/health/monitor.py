"""Loop health: is each loop keeping up? Delay, utilization, blocking callbacks and tasks.

Opt-in (``health=True`` or ``TRACEDPOLICY_HEALTH=1``); off, nothing at all is added to a loop.
On, every loop tracedpolicy records from then on (policies, loop factories, constructors, the
whole-process mode) is watched by three cheap pieces, none of which touches each callback:

- **a probe**: while the loop runs, every ``health_resolution`` seconds the watchdog thread hands
  it a callback (``call_soon_threadsafe``); how long that callback waits to run is the loop's
  *delay* (what Node's ``monitorEventLoopDelay`` and aiodebug's loopmon measure with a timer,
  without a timer pending in the loop: a pending timer alone costs every iteration a clock
  read, 2-3% of a callback-heavy loop);
- **the wait**: asyncio's selector and proactor loops wait for I/O in their selector's
  ``select``; timing that call (only when it may wait) splits the loop's running time into
  *idle* and *active*, whose share is its *utilization* (Node's definition). uvloop waits
  inside libuv, out of reach: its loops get delay, blocking and tasks, but no utilization;
- **a watchdog**, that same thread: a running loop whose probe has waited longer than
  ``blocking_threshold`` is held by one callback or task step (or one long iteration); the
  watchdog then, and only then, samples the loop thread's stack to name what runs, counts it,
  logs one line and records a span that lasts as long as the loop was held.

Nothing is set on a loop or its selector (on 3.11 and 3.12 an instance attribute alone makes
CPython give up the object's inline attribute values: every later attribute access of the loop
slower). The run hook (which tells the watchdog a loop runs) and the timed ``select`` are plain
functions put once on the class that defines ``run_forever`` (``select``), taken off exactly when
health goes off; a loop or selector that is not watched pays a dict lookup per run, and per
wait (none per poll). The watchdog thread runs only while a watched loop runs (started as the
first starts, joined as the last stops); it holds loops only weakly, so a loop's life and
garbage collection are as they were.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from tracedpolicy.base import forksafe
from tracedpolicy.base.patching import Patch, replace
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.loops import (
    REGISTRY,
    SKIPPED_PACKAGES,
    USER_MODULES,
    LoopRecord,
    printable,
)
from tracedpolicy.records.stats import Histogram

logger = logging.getLogger("tracedpolicy")

#: How late a probe ran: a tenth of a millisecond to ten seconds.
DELAY_SECONDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: Utilization is the share of the last window of at least this many seconds of running.
UTILIZATION_WINDOW = 1.0

#: The clock of every health duration and instant (the finest monotonic one).
CLOCK = time.perf_counter

#: A loop's tasks are counted at most this often, in seconds (see :func:`tasks`).
TASKS_EVERY = 10.0

#: How long turning health off waits for the watchdog thread to end (an exporter may be slow).
STOP_SECONDS = 5.0

Labels = tuple[str, str, str]
"""(origin, creator, loop_class): the labels of every loop metric."""


@dataclass(frozen=True)
class Settings:
    """What the health options say."""

    resolution: float = 0.01
    """Seconds between probes of a running loop."""
    threshold: float = 0.1
    """A loop held longer than this (seconds) counts as blocked (asyncio's slow callback)."""


@dataclass
class Totals:
    """One label set's health, summed over its loops (those gone included)."""

    delay: Histogram = field(default_factory=lambda: Histogram(DELAY_SECONDS))
    active: float = 0.0
    idle: float = 0.0
    blocked: int = 0
    timed: bool = False
    """Some loop of this label set has a timed wait (so time and utilization mean something)."""

    def reset(self) -> None:
        """In a forked child: the parent's health is the parent's to report."""
        self.delay = Histogram(DELAY_SECONDS)
        self.active = self.idle = 0.0
        self.blocked = 0


class LoopHealth:
    """One watched loop. Its loop thread writes the timing fields; the watchdog reads them."""

    def __init__(self, ref: weakref.ReferenceType[Any], record: LoopRecord, totals: Totals) -> None:
        self.ref = ref
        self.record = record
        self.totals = totals
        self.running = False
        self.run = 0
        """Counts starts and stops: a probe handed to an earlier run is void."""
        self.thread_id = 0
        self.probe_sent: float | None = None
        """When the probe the loop has not run yet was handed to it (:data:`CLOCK`)."""
        self.wait_began: float | None = None
        """When the wait in ``select`` now under way began (it counts as idle already)."""
        self.timed = False
        """Its wait is timed (an asyncio selector or proactor loop)."""
        self.wait_looked_at = False
        self.run_started = 0.0
        self.ran = 0.0
        """Seconds spent in finished runs of ``run_forever``."""
        self.idle = 0.0
        """Seconds spent waiting in ``select``, all runs."""
        self.window: tuple[float, float, float] = (0.0, 0.0, 0.0)
        """(instant, ran, idle) when the current utilization window started."""
        self.utilization: float | None = None
        self.held_since: float | None = None
        """When the probe the watchdog found held past the threshold was sent."""
        self.caught_up: float | None = None
        self.span: Any = None
        self.tasks_counted: tuple[float, int] | None = None
        """When its tasks were last counted (:data:`CLOCK`), and how many were not done."""

    def watches(self, loop: object) -> bool:
        return self.ref() is loop

    def active_and_idle(self, now: float) -> tuple[float, float]:
        ran = self.ran + (now - self.run_started if self.running else 0.0)
        began = self.wait_began
        idle = self.idle + (now - began if began is not None and self.running else 0.0)
        return max(ran - idle, 0.0), idle

    def forget_parent(self) -> None:
        """In a forked child: what this loop did in the parent is the parent's."""
        self.running = False
        self.run += 1
        self.ran = self.idle = 0.0
        self.probe_sent = self.wait_began = self.utilization = None
        self.held_since = self.caught_up = self.span = None

    # On the loop's own thread:

    def started(self, loop: Any) -> None:
        if not self.wait_looked_at:
            # At the first run, not when recorded: a constructor hook records the loop before
            # its subclass's __init__ has made the selector.
            self.wait_looked_at = True
            self.timed = _time_the_wait(loop, self)
            self.totals.timed = self.totals.timed or self.timed
        now = CLOCK()
        self.thread_id = threading.get_ident()
        self.run_started = now
        self.window = (now, self.ran, self.idle)
        self.run += 1
        self.probe_sent = None
        with _lock:  # the watchdog is not ended (by another loop's stop) under this start
            self.running = True
            _watched[id(loop)] = self  # again, if a forked child runs a loop of its parent's
            _running[id(self)] = self
            _watchdog.wake()

    def stopped(self) -> None:
        now = CLOCK()
        self.running = False
        self.run += 1  # a probe handed to this run and not run yet does nothing later
        self.ran += now - self.run_started
        self.probe_sent = self.wait_began = None
        if self.held_since is not None:
            self.caught_up = now
        with _lock:
            idle = not any(health.running for health in _running.values())
            thread = _watchdog.detach() if idle else None
        if thread is not None:  # the last watched loop that ran: the process's threads as bare
            _watchdog.join(thread)

    def tick(self, run: int) -> None:
        """The probe: how long it waited is the delay."""
        sent = self.probe_sent
        if run != self.run or sent is None:
            return
        now = CLOCK()
        self.probe_sent = None
        delay = max(now - sent, 0.0)
        self.totals.delay.observe(delay)
        for sink in _delay_sinks:
            try:
                sink(self.record, delay)
            except Exception as failure:
                record_internal_error("health", failure)
        if self.held_since is not None:
            self.caught_up = now
        start, ran, idle = self.window
        if now - start >= UTILIZATION_WINDOW and self.timed:
            ran_now = self.ran + now - self.run_started
            span = ran_now - ran
            if span > 0:
                self.utilization = min(max((span - (self.idle - idle)) / span, 0.0), 1.0)
            self.window = (now, ran_now, self.idle)

    # On the watchdog's thread:

    def send_probe(self, loop: Any, now: float) -> None:
        """Hand the running loop its next probe, unless one is still waiting.

        No handle is kept (it would hold the loop): a probe of an earlier run finds another run
        number and does nothing.
        """
        if self.probe_sent is not None:
            return
        self.probe_sent = now
        try:
            loop.call_soon_threadsafe(self.tick, self.run)
        except Exception:  # closed meanwhile, or a subclass's call_soon_threadsafe refused
            self.probe_sent = None


_lock = forksafe.rlock()  # a collection inside it may make or drop a loop, which comes here
_enabled = False
_settings = Settings()
_totals: dict[Labels, Totals] = {}
_watched: dict[int, LoopHealth] = {}
"""Every watched loop still alive, by ``id(loop)``."""
_gone: collections.deque[int] = collections.deque()
"""Keys of watched loops garbage-collected since the last look (from weakref callbacks)."""
_time_reported: dict[Labels, tuple[float, float]] = {}
"""The active and idle seconds last reported per label set (they only grow)."""
_running: dict[int, LoopHealth] = {}
"""Loops that run, or ran while the watchdog found them held, for the watchdog."""
_delay_sinks: list[Callable[[LoopRecord, float], None]] = []
#: Frames of these are the loop's machinery, not what it runs.
_MACHINERY = (*SKIPPED_PACKAGES, "selectors", "threading", "runpy", "contextvars")


def configure(enabled: bool, settings: Settings) -> None:
    """Watch loops recorded from now on (or stop watching: hooks off, watchdog ended)."""
    global _enabled, _settings
    with _lock:
        was, _enabled, _settings = _enabled, enabled, settings
        if enabled and watch not in REGISTRY.tracked_listeners:
            REGISTRY.tracked_listeners.append(watch)
        if not enabled and watch in REGISTRY.tracked_listeners:
            REGISTRY.tracked_listeners.remove(watch)
    if was and not enabled:
        _unhook()
        _watchdog.stop()
        _forget_every_loop()
    _watchdog.event.set()  # the new resolution from now, not after the current wait


def reset_for_tests() -> None:
    """Off, and forget every label set and watched loop. Only use in tests."""
    configure(False, Settings())
    with _lock:
        _totals.clear()
        _watched.clear()
        _running.clear()
        _waits.clear()
        _time_reported.clear()


def enabled() -> bool:
    return _enabled


def threshold() -> float:
    """The blocking threshold in force, in seconds."""
    return _settings.threshold


def add_delay_sink(sink: Callable[[LoopRecord, float], None]) -> None:
    """Tell ``sink`` each probe's delay (OpenTelemetry's histogram records it)."""
    if sink not in _delay_sinks:
        _delay_sinks.append(sink)


def watch(record: LoopRecord, loop: Any) -> None:
    """Watch a loop tracedpolicy just recorded, if health is on (a listener of the registry)."""
    if not _enabled or _has_own(loop, "run_forever"):
        return  # off, or a run_forever of the instance's own, which no class hook reaches
    try:
        if not _hook_class(type(loop), "run_forever", _run_hook):
            return
    except Exception as failure:
        record_internal_error("health", failure)
        return
    labels = (record.origin, record.creator, record.loop_class)
    with _lock:
        totals = _totals.get(labels)
        if totals is None:
            totals = _totals[labels] = Totals()
    key = id(loop)
    # The callback holds no LoopHealth: it would be a cycle with the weakref it owns.
    health = LoopHealth(weakref.ref(loop, functools.partial(_gone_callback, key)), record, totals)
    with _lock:
        _forget_collected()  # a loop of this id that was collected is folded in first
        _watched[key] = health


_MISSING = object()
_hooks: dict[tuple[type, str], Patch] = {}
"""The class hooks in place, by (class, name): one per class, until health goes off."""
_waits: dict[int, tuple[weakref.ReferenceType[Any], LoopHealth]] = {}
"""The timed selectors (or proactors), by ``id``: the selector, weakly, and its loop's health."""


def _has_own(instance: Any, name: str) -> bool:
    """Whether ``instance`` has an attribute ``name`` of its own, which no class hook reaches.

    Asked without reading ``instance.__dict__`` (on 3.11 and 3.12 that alone makes CPython give
    up the instance's inline attribute values): is what the instance answers the class's, bound?
    """
    try:
        bound = getattr(instance, name)
        attribute = inspect.getattr_static(type(instance), name)
    except AttributeError:
        return False
    get = getattr(type(attribute), "__get__", None)
    return get is None or bool(bound != get(attribute, instance, type(instance)))


def _hook_class(cls: type, name: str, make: Callable[[Any], Callable[..., Any]]) -> bool:
    """Put ``make(original)`` on the class that defines ``cls.name`` (on ``cls`` itself where
    that class cannot take it, an extension type); once. False if nothing can be hooked."""
    for owner in cls.__mro__:
        if name in vars(owner):
            break
    else:
        return False
    original = vars(owner)[name]
    if not callable(original) or not hasattr(type(original), "__get__"):
        return False  # a mock (no method: it does not bind) in place now: leave the class be
    with _lock:
        if (owner, name) in _hooks or (cls, name) in _hooks:
            return True
        for target in (owner, cls):
            hook = make(original)
            if target is not owner:  # named as the class that holds it now (pickle finds it)
                hook.__qualname__ = f"{target.__qualname__}.{name}"
                hook.__module__ = target.__module__
            try:
                _hooks[(target, name)] = replace(target, name, hook)
                return True
            except (TypeError, AttributeError):  # an extension type: immutable
                continue
    return False


def _unhook() -> None:
    """Every class hook off, exactly as it was (a hook replaced since stays, passing through)."""
    with _lock:
        hooks = list(_hooks.values())
        _hooks.clear()
    for patch in reversed(hooks):
        patch.undo()


def _run_hook(run_forever: Callable[..., Any]) -> Callable[..., Any]:
    """``run_forever`` that tells a watched loop's health when it starts and stops."""

    @functools.wraps(run_forever)
    def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
        health = _watched.get(id(self))
        if health is None or health.running or not health.watches(self):
            return run_forever(self, *args, **kwargs)  # not watched, or a subclass's super()
        watching = _enabled and not self.is_running() and not self.is_closed()
        if watching:
            try:
                health.started(self)
            except Exception as failure:
                record_internal_error("health", failure)
                watching = False
        try:
            return run_forever(self, *args, **kwargs)
        finally:
            if watching:
                health.stopped()

    return hook


def _select_hook(select: Callable[..., Any]) -> Callable[..., Any]:
    """``select`` that times a watched loop's wait. A poll (timeout 0, every iteration of a
    busy loop) costs a comparison; a wait, a dict lookup."""

    @functools.wraps(select)
    def hook(self: Any, timeout: float | None = None) -> Any:
        if timeout == 0:
            return select(self, timeout)
        entry = _waits.get(id(self))
        if entry is None or entry[0]() is not self or not entry[1].running:
            return select(self, timeout)
        health = entry[1]
        health.wait_began = began = CLOCK()
        try:
            return select(self, timeout)
        finally:
            health.wait_began = None
            health.idle += CLOCK() - began

    return hook


def _time_the_wait(loop: Any, health: LoopHealth) -> bool:
    """Time the selector's (or proactor's) ``select`` when it may wait; False if there is none."""
    waiter = getattr(loop, "_selector", None) or getattr(loop, "_proactor", None)
    if waiter is None or _has_own(waiter, "select"):
        return False
    select = getattr(type(waiter), "select", None)
    try:
        parameters = list(inspect.signature(select).parameters) if callable(select) else []
    except (TypeError, ValueError):
        return False
    if parameters != ["self", "timeout"] or not _hook_class(type(waiter), "select", _select_hook):
        return False
    key = id(waiter)
    _waits[key] = (weakref.ref(waiter, functools.partial(_wait_gone, key)), health)
    return True


def _wait_gone(key: int, ref: object) -> None:
    """A timed selector was collected: its id may be another's soon."""
    entry = _waits.get(key)
    if entry is not None and entry[0] is ref:
        _waits.pop(key, None)


def _forget_every_loop() -> None:
    """Health went off: each watched loop's time goes into its totals, and it is watched no more
    (a loop running now ends its run as it would have; turned on again, health watches the loops
    recorded from then on)."""
    now = CLOCK()
    with _lock:
        _forget_collected()
        for health in _watched.values():
            active, idle = health.active_and_idle(now)
            health.totals.active += active
            health.totals.idle += idle
            health.forget_parent()  # no more time of its own: it is in the totals now
        _watched.clear()
        _running.clear()
        _waits.clear()


def _gone_callback(key: int, ref: object) -> None:
    """A watched loop was collected: only noted here (no lock may be taken in a GC callback)."""
    _gone.append(key)


def _forget_collected() -> None:
    """Fold the time of loops collected since the last look into their totals (under ``_lock``)."""
    while _gone:
        try:
            key = _gone.popleft()
        except IndexError:  # another thread took it meanwhile
            return
        health = _watched.get(key)
        if health is not None and health.ref() is None:
            del _watched[key]
            _running.pop(id(health), None)
            if health.held_since is not None:
                _watchdog.released(health)  # its span ends; the gauge no longer counts it
            active, idle = health.active_and_idle(CLOCK())
            health.totals.active += active
            health.totals.idle += idle


# Readers, for the exporters (through tracedpolicy.metrics).


def watched() -> list[LoopHealth]:
    with _lock:
        _forget_collected()
        return list(_watched.values())


def totals() -> dict[Labels, Totals]:
    with _lock:
        _forget_collected()
        return dict(_totals)


def time_spent() -> Iterator[tuple[Labels, float, float]]:
    """(labels, active seconds, idle seconds) of each label set with a timed wait."""
    now = CLOCK()
    sums = {labels: [t.active, t.idle] for labels, t in totals().items() if t.timed}
    for health in watched():
        labels = (health.record.origin, health.record.creator, health.record.loop_class)
        if health.timed and labels in sums:
            active, idle = health.active_and_idle(now)
            sums[labels][0] += active
            sums[labels][1] += idle
    for labels, (active, idle) in sums.items():
        # Counters never go down, whatever two readers racing a wait's end might compute.
        reported = _time_reported.get(labels, (0.0, 0.0))
        active, idle = max(active, reported[0]), max(idle, reported[1])
        _time_reported[labels] = (active, idle)
        yield labels, active, idle


def utilization() -> Iterator[tuple[Labels, float]]:
    """Each label set's utilization: the mean over its running loops' last windows."""
    shares: dict[Labels, list[float]] = {}
    for health in watched():
        if health.running and health.utilization is not None:
            labels = (health.record.origin, health.record.creator, health.record.loop_class)
            shares.setdefault(labels, []).append(health.utilization)
    for labels, values in shares.items():
        yield labels, sum(values) / len(values)


def tasks() -> Iterator[tuple[Labels, int]]:
    """Tasks not done, per label set, over the watched loops still open.

    Each loop's count is taken at most every :data:`TASKS_EVERY` seconds: asyncio's
    ``all_tasks()`` walks every task of every loop, and on free-threaded builds stops every
    thread to do it.
    """
    counts: dict[Labels, int] = {}
    now = CLOCK()
    for health in watched():
        loop = health.ref()
        if loop is None or loop.is_closed():
            continue
        counted = health.tasks_counted
        if counted is None or now - counted[0] >= TASKS_EVERY:
            counted = health.tasks_counted = (now, len(asyncio.all_tasks(loop)))
        labels = (health.record.origin, health.record.creator, health.record.loop_class)
        counts[labels] = counts.get(labels, 0) + counted[1]
    yield from counts.items()


def pending_age() -> Iterator[tuple[Labels, float]]:
    """Per label set, how long the oldest callback due on a held loop has waited (the probe,
    due since the hold began): 0 where no loop is held."""
    now = CLOCK()
    ages = {labels: 0.0 for labels in totals()}
    for health in watched():
        since = health.held_since
        if since is not None and health.caught_up is None:
            labels = (health.record.origin, health.record.creator, health.record.loop_class)
            ages[labels] = max(ages[labels], now - since)
    yield from ages.items()


def held() -> Iterator[tuple[Labels, int]]:
    """Loops held past the threshold right now, per label set (0 where none is)."""
    counts = {labels: 0 for labels in totals()}
    for health in watched():
        if health.held_since is not None and health.caught_up is None:
            labels = (health.record.origin, health.record.creator, health.record.loop_class)
            counts[labels] += 1
    yield from counts.items()


# The watchdog.


@dataclass(frozen=True)
class Sample:
    """What a held loop's thread was running when the watchdog looked."""

    runs: str
    """The outermost frame of the application's code: the callback or task step."""
    at: str
    """The innermost frame: where it was."""
    task: str | None
    coroutines: tuple[str, ...] = ()
    """The running task's coroutines on the thread's stack, outermost first."""
    awaited_by: tuple[str, ...] = ()
    """Who awaits the running task, nearest first (3.14+: asyncio's call graph)."""

    def __str__(self) -> str:
        task = f"task {self.task}: " if self.task else ""
        where = self.at if self.at == self.runs else f"{self.at}, called from {self.runs}"
        stack = f"; coroutines {' > '.join(self.coroutines)}" if len(self.coroutines) > 1 else ""
        chain = f"; awaited by {' <- '.join(self.awaited_by)}" if self.awaited_by else ""
        return f"{task}{where}{stack}{chain}"


#: At most this many entries of an await chain are named (a log line stays a line).
CHAIN_LIMIT = 16


def sample(thread_id: int, loop: Any) -> Sample | None:
    """What the loop's thread runs: its application frames above the loop's own run code."""
    frame = sys._current_frames().get(thread_id)
    frames = []
    while frame is not None and not _runs_the_loop(frame):
        if not _machinery(frame):
            frames.append(frame)
        frame = frame.f_back
    if not frames:
        return None
    task = _current_task(loop)
    return Sample(
        runs=_where(frames[-1]),
        at=_where(frames[0]),
        task=_task_name(task) if task is not None else None,
        coroutines=tuple(_where(f) for f in reversed(frames) if f.f_code.co_flags & _ASYNC),
        awaited_by=_awaiting(task) if task is not None else (),
    )


_ASYNC = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _current_task(loop: Any) -> Any:
    try:
        return asyncio.current_task(loop)
    except Exception:  # a loop closed meanwhile: the sample goes without it
        return None


def _task_name(task: Any) -> str | None:
    """A task's name and coroutine, as the log line and span show it."""
    try:
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", type(coro).__name__)
        return printable(f"{task.get_name()} ({name})")
    except Exception:  # an odd task: the sample goes without it
        return None


def _awaiting(task: Any) -> tuple[str, ...]:
    """Who awaits ``task`` (tasks, and futures such as gather's), nearest first: asyncio's call
    graph (3.14+), read while the task's loop is held. Each awaiting task with where it waits."""
    capture = getattr(asyncio, "capture_call_graph", None)
    if capture is None:
        return ()
    try:
        graph = capture(task)  # no loop runs in this thread: the graph of ``task`` as it is
        named: list[str] = []
        level = list(graph.awaited_by) if graph is not None else []
        while level and len(named) < CHAIN_LIMIT:
            node = level.pop(0)
            named.append(_awaiter(node))
            level = list(node.awaited_by) + level  # depth first: each chain in its order
        return tuple(named)
    except Exception:  # the loop ran on meanwhile and changed the graph: no chain this time
        return ()


def _awaiter(node: Any) -> str:
    future = node.future
    if isinstance(future, asyncio.Task):
        name = f"task {_task_name(future)}"
    else:
        name = f"future {type(future).__qualname__}"
    frames = [entry.frame for entry in node.call_stack]  # innermost first: where it awaits
    mine = [frame for frame in frames if not _machinery(frame)] or frames  # not asyncio's own
    return f"{name} at {_where(mine[0])}" if mine else name


#: The functions in which a loop runs its callbacks: below them is who runs the loop.
_RUNNERS = frozenset({"_run", "_run_once", "run_forever", "run_until_complete"})


def _runs_the_loop(frame: Any) -> bool:
    return frame.f_code.co_name in _RUNNERS and _machinery(frame)


def _machinery(frame: Any) -> bool:
    module = str(forksafe.lookup(frame.f_globals, "__name__") or "")  # no lock taken
    return module not in USER_MODULES and module.partition(".")[0] in _MACHINERY


def _where(frame: Any) -> str:
    code = frame.f_code
    return printable(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")


class _Watchdog:
    """One thread per process that looks at the running watched loops a few times per threshold.

    It runs only while a watched loop runs: started as the first one starts, ended and joined
    as the last one stops (and when health goes off), so a program's threads are what they are
    bare whenever no watched loop runs (no fork warning; CPython's own tests see no thread
    left behind).
    """

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()
        self.event = threading.Event()

    def start(self) -> None:
        """Start the thread, once (it sleeps while no watched loop runs)."""
        if self.thread is None or not self.thread.is_alive():
            with _lock:
                if _enabled and (self.thread is None or not self.thread.is_alive()):
                    self.stopping = threading.Event()
                    self.thread = threading.Thread(
                        target=self.run, args=(self.stopping,), name="tracedpolicy-health"
                    )
                    self.thread.daemon = True
                    self.thread.start()

    def detach(self) -> threading.Thread | None:
        """Tell the thread to end (under ``_lock``); a loop started later starts another."""
        thread, self.thread = self.thread, None
        self.stopping.set()
        self.event.set()
        return thread

    def join(self, thread: threading.Thread | None) -> None:
        """Wait for a detached thread to end; end the spans of loops held now."""
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_SECONDS)
        for health in list(_running.values()):
            if health.held_since is not None:
                self.released(health)
            if not health.running:
                _running.pop(id(health), None)

    def stop(self) -> None:
        """End the thread and wait for it."""
        with _lock:
            thread = self.detach()
        self.join(thread)

    def wake(self) -> None:
        self.start()
        self.event.set()

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self.event.clear()  # before looking: a loop started after this wakes the next wait
            loops = list(_running.values())
            if not loops:
                self.event.wait()
                continue
            try:
                self.look(loops, CLOCK())
            except Exception as failure:
                record_internal_error("health", failure)
            self.event.wait(_settings.resolution)  # or sooner: new settings, a loop started

    def look(self, loops: list[LoopHealth], now: float) -> None:
        for health in loops:
            if health.held_since is not None:
                if health.caught_up is not None or health.probe_sent is None:
                    self.released(health)  # its probe ran (or the loop stopped) since
            elif not health.running:
                _running.pop(id(health), None)  # before taking the loop: never hold a stopped one
            else:
                self.probe(health, now)

    def probe(self, health: LoopHealth, now: float) -> None:
        """A running loop: held, if its probe has waited too long; else its next probe. The
        loop is held here only for this call (its last reference must stay its owner's)."""
        loop = health.ref()
        if loop is None or not loop.is_running() or loop.get_debug():
            # Not running yet (a subclass's run_forever before its loop's), or in debug mode:
            # asyncio logs every slow callback itself there, and would log ours.
            return
        sent = health.probe_sent
        if sent is not None and now - sent > _settings.threshold:
            self.held(health, sent, now)
        elif _enabled:
            health.send_probe(loop, now)

    def held(self, health: LoopHealth, since: float, now: float) -> None:
        health.held_since, health.caught_up = since, None
        health.totals.blocked += 1
        loop = health.ref()
        seen = sample(health.thread_id, loop) if loop is not None else None
        record = health.record
        logger.warning(
            "event loop held for over %.3f s (blocking_threshold): %s #%d made at %s, thread %r;"
            " running %s",
            now - since,
            record.loop_class,
            record.loop_id,
            record.site or "an unknown site",
            printable(record.thread_name),
            seen or "no Python code (a C call)",
        )
        spans = _span_maker
        if spans is not None:
            try:
                health.span = spans.held(health, seen)
            except Exception as failure:
                record_internal_error("tracer", failure)

    def released(self, health: LoopHealth) -> None:
        span, health.span = health.span, None
        caught_up = health.caught_up or CLOCK()  # or its probe ran as the hold was noticed
        health.held_since = health.caught_up = None
        spans = _span_maker
        if span is not None and spans is not None:
            try:
                spans.released(span, caught_up)
            except Exception as failure:
                record_internal_error("tracer", failure)


class SpanMaker(Protocol):
    """Spans for held loops (OpenTelemetry's, set by :mod:`tracedpolicy.exporters.otel`)."""

    def held(self, health: LoopHealth, seen: Sample | None) -> Any:
        """Start a span for a loop held since ``health.held_since``; returns it."""

    def released(self, span: Any, caught_up: float) -> None:
        """End ``span``: the loop ran again at ``caught_up`` (:data:`CLOCK`)."""


_watchdog = _Watchdog()
_span_maker: SpanMaker | None = None


def set_span_maker(maker: SpanMaker | None) -> None:
    """Where held loops' spans go (None: no spans)."""
    global _span_maker
    _span_maker = maker


def _after_fork_in_child() -> None:
    """The parent's loops, health and watchdog are not this process's (a loop of the parent's
    that runs here is watched again from then on).

    What the parent's threads changed is replaced, not cleared: on a free-threaded build a
    dict or a deque has a lock of its own, and one another thread held, or was handed, at fork
    stays held in the child. (A dict's values are iterated without taking it.)
    """
    global _watchdog, _watched, _running, _time_reported, _gone
    for health in _watched.values():
        health.forget_parent()
    # Kept, in a new dict: the class hooks find a parent's loop by it, watched again if run here.
    _watched = {key: health for key, health in _watched.items()}
    _running, _time_reported, _gone = {}, {}, collections.deque()
    for totals in _totals.values():
        totals.reset()
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
