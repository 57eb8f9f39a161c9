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
import functools
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from tracedpolicy.base import forksafe
from tracedpolicy.health import probe, wait, watchdog
from tracedpolicy.health.probe import (
    CLOCK as CLOCK,
)
from tracedpolicy.health.probe import (
    DELAY_SECONDS as DELAY_SECONDS,
)
from tracedpolicy.health.probe import (
    TASKS_EVERY as TASKS_EVERY,
)
from tracedpolicy.health.probe import (
    Labels as Labels,
)
from tracedpolicy.health.probe import (
    LoopHealth as LoopHealth,
)
from tracedpolicy.health.probe import (
    Settings as Settings,
)
from tracedpolicy.health.probe import (
    Totals as Totals,
)
from tracedpolicy.health.probe import (
    add_delay_sink as add_delay_sink,
)
from tracedpolicy.health.stack import Sample as Sample
from tracedpolicy.health.watchdog import SpanMaker as SpanMaker
from tracedpolicy.health.watchdog import set_span_maker as set_span_maker
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.record import LoopRecord


def configure(enabled: bool, settings: Settings) -> None:
    """Watch loops recorded from now on (or stop watching: hooks off, watchdog ended)."""
    with probe._lock:
        was, probe._enabled, probe._settings = probe._enabled, enabled, settings
        if enabled and watch not in REGISTRY.tracked_listeners:
            REGISTRY.tracked_listeners.append(watch)
        if not enabled and watch in REGISTRY.tracked_listeners:
            REGISTRY.tracked_listeners.remove(watch)
    if was and not enabled:
        wait.unhook()
        watchdog._watchdog.stop()
        _forget_every_loop()
    watchdog._watchdog.event.set()  # the new resolution from now, not after the current wait


def reset_for_tests() -> None:
    """Off, and forget every label set and watched loop. Only use in tests."""
    configure(False, Settings())
    with probe._lock:
        probe._totals.clear()
        probe._watched.clear()
        probe._running.clear()
        wait.forget()
        probe._time_reported.clear()


enabled = probe.enabled


def threshold() -> float:
    """The blocking threshold in force, in seconds."""
    return probe._settings.threshold


def watch(record: LoopRecord, loop: Any) -> None:
    """Watch a loop tracedpolicy just recorded, if health is on (a listener of the registry)."""
    if not probe._enabled or wait.has_own(loop, "run_forever"):
        return  # off, or a run_forever of the instance's own, which no class hook reaches
    try:
        if not wait.hook_class(type(loop), "run_forever", _run_hook):
            return
    except Exception as failure:
        record_internal_error("health", failure)
        return
    labels = (record.origin, record.creator, record.loop_class)
    with probe._lock:
        totals = probe._totals.get(labels)
        if totals is None:
            totals = probe._totals[labels] = Totals()
    key = id(loop)
    # The callback holds no LoopHealth: it would be a cycle with the weakref it owns.
    health = LoopHealth(weakref.ref(loop, functools.partial(_gone_callback, key)), record, totals)
    with probe._lock:
        _forget_collected()  # a loop of this id that was collected is folded in first
        probe._watched[key] = health


def _run_hook(run_forever: Callable[..., Any]) -> Callable[..., Any]:
    """``run_forever`` that tells a watched loop's health when it starts and stops."""

    @functools.wraps(run_forever)
    def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
        health = probe._watched.get(id(self))
        if health is None or health.running or not health.watches(self):
            return run_forever(self, *args, **kwargs)  # not watched, or a subclass's super()
        watching = probe._enabled and not self.is_running() and not self.is_closed()
        if watching:
            try:
                _started(health, self)
            except Exception as failure:
                record_internal_error("health", failure)
                watching = False
        try:
            return run_forever(self, *args, **kwargs)
        finally:
            if watching:
                _stopped(health)

    return hook


def _started(health: LoopHealth, loop: Any) -> None:
    """A watched loop starts running (on its thread)."""
    if not health.wait_looked_at:
        # At the first run, not when recorded: a constructor hook records the loop before
        # its subclass's __init__ has made the selector.
        health.wait_looked_at = True
        health.timed = wait.time_the_wait(loop, health)
        health.totals.timed = health.totals.timed or health.timed
    now = CLOCK()
    health.thread_id = threading.get_ident()
    health.run_started = now
    health.window = (now, health.ran, health.idle)
    health.run += 1
    health.probe_sent = None
    with probe._lock:  # the watchdog is not ended (by another loop's stop) under this start
        health.running = True
        probe._watched[id(loop)] = health  # again, if a forked child runs a loop of its parent's
        probe._running[id(health)] = health
        watchdog._watchdog.wake()


def _stopped(health: LoopHealth) -> None:
    """A watched loop stops running (on its thread)."""
    now = CLOCK()
    health.running = False
    health.run += 1  # a probe handed to this run and not run yet does nothing later
    health.ran += now - health.run_started
    health.probe_sent = health.wait_began = None
    if health.held_since is not None:
        health.caught_up = now
    with probe._lock:
        # A copy: the watchdog drops stopped loops from _running without the lock.
        idle = not any(other.running for other in list(probe._running.values()))
        thread = watchdog._watchdog.detach() if idle else None
    if thread is not None:  # the last watched loop that ran: the process's threads as bare
        watchdog._watchdog.join(thread)


def _forget_every_loop() -> None:
    """Health went off: each watched loop's time goes into its totals, and it is watched no more
    (a loop running now ends its run as it would have; turned on again, health watches the loops
    recorded from then on)."""
    now = CLOCK()
    with probe._lock:
        _forget_collected()
        for health in probe._watched.values():
            active, idle = health.active_and_idle(now)
            health.totals.active += active
            health.totals.idle += idle
            health.forget_parent()  # no more time of its own: it is in the totals now
        probe._watched.clear()
        probe._running.clear()
        wait.forget()


def _gone_callback(
    key: int, ref: object, _unsettled: Callable[[], bool] = forksafe.in_unsettled_child
) -> None:
    """A watched loop was collected: only noted here (no lock may be taken in a GC callback)."""
    if not _unsettled():  # else a parent's loop (health starts afresh there), or the teardown
        probe._gone.append(key)


def _forget_collected() -> None:
    """Fold the time of loops collected since the last look into their totals (under the lock)."""
    while probe._gone:
        try:
            key = probe._gone.popleft()
        except IndexError:  # another thread took it meanwhile
            return
        health = probe._watched.get(key)
        if health is not None and health.ref() is None:
            del probe._watched[key]
            probe._running.pop(id(health), None)
            if health.held_since is not None:
                watchdog._watchdog.released(health)  # its span ends; the gauge no longer counts it
            active, idle = health.active_and_idle(CLOCK())
            health.totals.active += active
            health.totals.idle += idle


# Readers, for the exporters (through tracedpolicy.metrics).


def watched() -> list[LoopHealth]:
    with probe._lock:
        _forget_collected()
        return list(probe._watched.values())


def totals() -> dict[Labels, Totals]:
    with probe._lock:
        _forget_collected()
        return dict(probe._totals)


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
        reported = probe._time_reported.get(labels, (0.0, 0.0))
        active, idle = max(active, reported[0]), max(idle, reported[1])
        probe._time_reported[labels] = (active, idle)
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
