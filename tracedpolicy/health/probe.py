"""The probe, and what health knows of each watched loop.

While a watched loop runs, every ``health_resolution`` seconds the watchdog thread hands it a
callback (``call_soon_threadsafe``); how long that callback waits to run is the loop's *delay*
(what Node's ``monitorEventLoopDelay`` and aiodebug's loopmon measure with a timer, without a
timer pending in the loop: a pending timer alone costs every iteration a clock read). Each
loop's :class:`LoopHealth` holds its timing; each label set's :class:`Totals`, its sums. The
state here is shared by the wait hooks, the watchdog and :mod:`tracedpolicy.health.monitor`, and
made anew in a forked child.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tracedpolicy.base import forksafe
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.record import LoopRecord
from tracedpolicy.records.stats import Histogram

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


def add_delay_sink(sink: Callable[[LoopRecord, float], None]) -> None:
    """Tell ``sink`` each probe's delay (OpenTelemetry's histogram records it)."""
    if sink not in _delay_sinks:
        _delay_sinks.append(sink)


def enabled() -> bool:
    """Whether loop health is on (asked without loading the rest of it)."""
    return _enabled


#: What a forked child keeps of its parent's watched loops and totals, by forking thread
#: (two threads may fork at once): see :func:`_before_fork`.
_kept_at_fork: dict[int, tuple[dict[int, LoopHealth], dict[Labels, Totals]]] = {}


def _before_fork() -> None:
    """Copied by the forking thread, in the parent, where every lock still works: on a
    free-threaded build a dict another thread held at fork stays held in the child, so the
    child reads only these copies."""
    _kept_at_fork[threading.get_ident()] = (_watched.copy(), _totals.copy())


def _after_fork_in_parent() -> None:
    _kept_at_fork.pop(threading.get_ident(), None)


def _after_fork_in_child() -> None:
    """The parent's loops and health are not this process's (a loop of the parent's
    that runs here is watched again from then on)."""
    global _watched, _running, _time_reported, _gone, _totals, _kept_at_fork
    watched, totals = forksafe.lookup(_kept_at_fork, threading.get_ident()) or ({}, {})
    _kept_at_fork = {}
    for health in watched.values():
        health.forget_parent()
    # Kept: the class hooks find a parent's loop by it, watched again if run here. (Less those
    # collected as the child started, which no callback could note then.)
    _watched = {key: health for key, health in watched.items() if health.ref() is not None}
    _running, _time_reported, _gone = {}, {}, collections.deque()
    for each in totals.values():
        each.reset()
    _totals = totals


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )
