"""Many processes, one scrape: tracedpolicy's metrics in prometheus_client's multi-process mode.

With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's convention: set before the processes
start, and emptied between runs), each process writes its tracedpolicy metrics into value files
there through prometheus_client's own metric classes, and the one process that serves
``/metrics`` merges every process's files with prometheus_client's ``MultiProcessCollector``:
counters summed, ``asyncio_loop_open`` summed over live processes (``livesum``), histograms
merged.

prometheus_client's multi-process mode ignores custom collectors, so tracedpolicy's counts reach
the files this way: loop creations and lifetimes are observed into the histograms as they
happen; every other count is copied from tracedpolicy's own counters by a daemon thread every
:data:`SYNC_SECONDS` (so a get that finds its loop still writes no file), at each scrape in the
serving process, and at exit. A process that dies is marked dead the way prometheus_client
documents (``mark_process_dead``): by itself at exit, and by the serving process, at each
scrape, for any process whose files remain though it is gone (a killed worker). Its open loops
then stop counting; its totals stay.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import threading
from typing import Any

from tracedpolicy.base import forksafe
from tracedpolicy.exporters import fleet, metrics
from tracedpolicy.health import monitor as health
from tracedpolicy.records import events
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.record import LoopRecord

#: How often each process copies its counts into its value files (a scrape sees them then).
SYNC_SECONDS = 1.0

PROMETHEUS_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

_lock = forksafe.rlock()  # a sync may flush leaks, whose events come back here
_writer: _Writer | None = None


def directory() -> str | None:
    """The multi-process directory, if this process runs in that mode."""
    return os.environ.get(PROMETHEUS_MULTIPROC_DIR) or None


class _Writer:
    """This process's tracedpolicy metrics, as prometheus_client metrics backed by files."""

    def __init__(self) -> None:
        import prometheus_client

        self.families: dict[metrics.Metric, Any] = {}
        for metric in metrics.ALL:
            names = list(metric.labels)
            if metric.kind == "counter":
                family: Any = prometheus_client.Counter(
                    metric.prometheus_name, metric.help, names, registry=None
                )
            elif metric.kind in ("gauge", "ratio"):
                family = prometheus_client.Gauge(
                    metric.prometheus_name,
                    metric.help,
                    names,
                    registry=None,
                    multiprocess_mode=metric.multiprocess_mode,  # type: ignore[arg-type]
                )
            else:
                family = prometheus_client.Histogram(
                    metric.prometheus_name,
                    metric.help,
                    names,
                    registry=None,
                    buckets=metrics.BUCKETS[metric],
                )
            self.families[metric] = family
        #: The value each counter had when last copied, by metric and label values.
        self.copied: dict[tuple[metrics.Metric, tuple[str, ...]], float] = {}

    def sync(self, only: tuple[metrics.Metric, ...] = ()) -> None:
        """Copy every count (or those of ``only``) and the open loops into this process's files."""
        for metric, family in self.families.items():
            if metric.kind == "histogram" or (only and metric not in only):
                continue  # histograms are observed as loops are made and closed
            for labels, value in metrics.samples(metric):
                key = (metric, tuple(labels[name] for name in metric.labels))
                child = family.labels(*key[1])
                if metric.kind in ("gauge", "ratio"):
                    child.set(value)
                    continue
                delta = value - self.copied.get(key, 0)
                if delta > 0:
                    child.inc(delta)
                self.copied[key] = value

    def forget_copies(self) -> None:
        """In a forked child: the parent's counts are the parent's to write, not this one's."""
        for metric in self.families:
            if metric.kind == "counter":
                for labels, value in metrics.samples(metric):
                    self.copied[(metric, tuple(labels[n] for n in metric.labels))] = value

    def observe(self, event: events.PolicyEvent) -> None:
        """An event as it happens (a sink of the recorder): its counts are written at once, so
        only hits wait for the next copy; creations and lifetimes go into the histograms."""
        self.sync(_COUNTS_OF.get(event.kind, ()))
        if event.duration is None or event.loop_class is None:
            return
        metric = {
            events.NEW_EVENT_LOOP: metrics.CREATION_DURATION,
            events.LOOP_CLOSED: metrics.LOOP_LIFETIME,
        }
        chosen = metric.get(event.kind)
        if chosen is not None:
            family = self.families[chosen]
            family.labels(event.origin, event.creator, event.loop_class).observe(event.duration)


#: The metrics each kind of event changes.
_LOOP_COUNTS = (
    metrics.LOOPS_CREATED,
    metrics.LOOPS_CLOSED,
    metrics.LOOPS_LEAKED,
    metrics.LOOPS_OPEN,
)
_COUNTS_OF = {
    events.NEW_EVENT_LOOP: _LOOP_COUNTS,
    events.LOOP_CLOSED: _LOOP_COUNTS,
    events.LOOP_LEAKED: _LOOP_COUNTS,
    events.SET_EVENT_LOOP: (metrics.SET_CALLS,),
    events.GET_EVENT_LOOP: (metrics.GET_CALLS,),
}


def start() -> None:
    """Write this process's metrics into the multi-process directory from now on (idempotent)."""
    global _writer
    fleet.join()  # a process of a fleet without PROMETHEUS_MULTIPROC_DIR: its own file
    if directory() is None:
        return
    with _lock:
        if _writer is not None:
            return
        _writer = _Writer()
        events.add_sink(_sink)
        health.add_delay_sink(_delay_sink)
        forksafe.at_exit(_at_exit)


def sync() -> None:
    """Copy this process's counts into its files now (the serving process does at each scrape)."""
    writer = _writer
    if writer is None:
        return
    try:
        with _lock:
            writer.sync()
    except Exception as failure:  # a full disk must not fail a policy call or a scrape
        record_internal_error("multiprocess", failure)


class EveryProcess:
    """prometheus_client's multi-process merge over the directory's files, skipping the files a
    process has created but not yet sized (prometheus_client opens a file, then sizes it and
    writes its 8-byte header; its reader fails on a file without one)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def collect(self) -> Any:
        from prometheus_client.multiprocess import MultiProcessCollector

        files = []
        for name in glob.glob(os.path.join(self.path, "*.db")):
            with contextlib.suppress(OSError):  # a dead process's live gauges, just removed
                if os.path.getsize(name) >= 8:
                    files.append(name)
        return MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]


def registry_of_every_process() -> Any:
    """A registry with every process's metrics, merged as one scrape shows them (a new one per
    scrape, as prometheus_client's multi-process mode asks). Dead processes are marked first."""
    from prometheus_client import CollectorRegistry

    path = directory()
    registry = CollectorRegistry()
    if path is not None:
        mark_dead_processes()
        registry.register(EveryProcess(path))
    return registry


def mark_dead_processes() -> None:
    """Mark dead, as prometheus_client documents, every process whose live files remain.

    A supervisor that replaces killed workers (uvicorn's, gunicorn's) does not tell
    prometheus_client; the serving process notices at each scrape.
    """
    path = directory()
    if path is None:
        return
    from prometheus_client import multiprocess

    pids = {
        int(match.group(1))
        for name in glob.glob(os.path.join(path, "gauge_live*_*.db"))
        if (match := re.search(r"_(\d+)\.db$", name))
    }
    for pid in pids - {os.getpid()}:
        if not _alive(pid):
            with contextlib.suppress(FileNotFoundError):  # marked by another thread meanwhile
                multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process of that pid: alive
    return True


def _sink(event: events.PolicyEvent) -> None:
    """An event, into this process's files; a failure to write them (the directory missing,
    or a file) is a ``multiprocess`` failure, whoever's call it happened in."""
    writer = _writer
    if writer is not None:
        if _thread is None:
            _start_thread()  # the first count to copy: a process that counts nothing has none
        try:
            with _lock:
                writer.observe(event)
        except Exception as failure:
            record_internal_error("multiprocess", failure)


def _delay_sink(record: LoopRecord, delay: float) -> None:
    """A health probe's delay, into this process's histogram file."""
    writer = _writer
    if writer is not None:
        if _thread is None:
            _start_thread()
        try:
            family = writer.families[metrics.EVENTLOOP_DELAY]
            family.labels(record.origin, record.creator, record.loop_class).observe(delay)
        except Exception as failure:
            record_internal_error("multiprocess", failure)


_thread: threading.Thread | None = None
_thread_lock = threading.Lock()
_stop = threading.Event()


def _start_thread() -> None:
    global _thread
    with _thread_lock:
        if _thread is not None or _stop.is_set():
            return
        _thread = threading.Thread(
            target=_sync_forever, args=(_stop,), name="tracedpolicy-multiprocess", daemon=True
        )
        _thread.start()


def stop_thread() -> None:
    """End the copying thread, after a last copy (``uninstrument()``: the process's threads as
    before); the next count to copy starts it again."""
    global _thread, _stop
    with _thread_lock:
        thread, _thread = _thread, None
        stop = _stop
        if not stop.is_set():  # set: this process is done (at exit), and stays so
            _stop = threading.Event()
    if thread is None:
        return
    stop.set()
    if thread is not threading.current_thread():
        thread.join(5)
    sync()


def _sync_forever(stop: threading.Event) -> None:
    while not stop.wait(SYNC_SECONDS):
        sync()


def _at_exit() -> None:
    """The last counts, then this process is dead to prometheus_client: its open loops go."""
    if _stop.is_set():
        return  # done already (multiprocessing's exit, then atexit)
    _stop.set()
    sync()
    path = directory()
    if path is not None and _writer is not None:
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]


def _after_fork_in_child() -> None:
    """A forked child writes its own files (prometheus_client starts them anew on the pid
    change), counts only what it does itself, and needs a sync thread of its own."""
    writer = _writer
    if writer is None:
        return
    global _stop, _thread, _thread_lock
    writer.forget_copies()
    _stop = threading.Event()  # the parent's may be mid-wait in its thread, which is gone
    _thread, _thread_lock = None, threading.Lock()  # started again at the child's first count


if hasattr(os, "register_at_fork"):
    # prometheus_client writes under a lock of its own that it does not make anew in a child:
    # no write of ours may be under way while the process forks (a gunicorn master forking its
    # workers while our thread copies counts), so the fork waits for ours to finish.
    os.register_at_fork(
        before=_lock.acquire, after_in_parent=_lock.release, after_in_child=_after_fork_in_child
    )
