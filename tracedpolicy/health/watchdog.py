"""The watchdog: one thread that probes the running watched loops and, when a probe has
waited longer than ``blocking_threshold``, samples the loop thread's stack to name what holds
it, counts it, logs one line and records a span lasting as long as the loop was held."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Protocol

from tracedpolicy.health import probe
from tracedpolicy.health.probe import CLOCK, LoopHealth
from tracedpolicy.health.stack import Sample, sample
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.sites import printable

logger = logging.getLogger("tracedpolicy")

#: How long turning health off waits for the watchdog thread to end (an exporter may be slow).
STOP_SECONDS = 5.0


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
            with probe._lock:
                if probe._enabled and (self.thread is None or not self.thread.is_alive()):
                    self.stopping = threading.Event()
                    self.thread = threading.Thread(
                        target=self.run, args=(self.stopping,), name="tracedpolicy-health"
                    )
                    self.thread.daemon = True
                    self.thread.start()

    def detach(self) -> threading.Thread | None:
        """Tell the thread to end (under ``probe._lock``); a loop started later starts another."""
        thread, self.thread = self.thread, None
        self.stopping.set()
        self.event.set()
        return thread

    def join(self, thread: threading.Thread | None) -> None:
        """Wait for a detached thread to end; end the spans of loops held now."""
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_SECONDS)
        for health in list(probe._running.values()):
            if health.held_since is not None:
                self.released(health)
            if not health.running:
                probe._running.pop(id(health), None)

    def stop(self) -> None:
        """End the thread and wait for it."""
        with probe._lock:
            thread = self.detach()
        self.join(thread)

    def wake(self) -> None:
        self.start()
        self.event.set()

    def run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            self.event.clear()  # before looking: a loop started after this wakes the next wait
            loops = list(probe._running.values())
            if not loops:
                self.event.wait()
                continue
            try:
                self.look(loops, CLOCK())
            except Exception as failure:
                record_internal_error("health", failure)
            self.event.wait(probe._settings.resolution)  # or sooner: new settings, a loop started

    def look(self, loops: list[LoopHealth], now: float) -> None:
        for health in loops:
            if health.held_since is not None:
                if health.caught_up is not None or health.probe_sent is None:
                    self.released(health)  # its probe ran (or the loop stopped) since
            elif not health.running:
                probe._running.pop(
                    id(health), None
                )  # before taking the loop: never hold a stopped one
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
        if sent is not None and now - sent > probe._settings.threshold:
            self.held(health, sent, now)
        elif probe._enabled:
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
    """The parent's watchdog thread is not this process's: a new one starts with a loop here."""
    global _watchdog
    _watchdog = _Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
