"""Many processes, no set-up: one scrape for a process and every process it starts.

When the process that serves ``/metrics`` (under ``run`` or ``instrument(metrics_port=...)``)
finds no ``PROMETHEUS_MULTIPROC_DIR``, it makes a private directory and hands it to the
processes it starts as ``TRACEDPOLICY_MULTIPROC_DIR``. The application's prometheus_client
metrics stay exactly as they are without tracedpolicy: its variable is never set.

Each other traced process of the fleet writes one small file there: its counts, histograms
and gauges, and its open loops (at most :data:`MAX_LOOPS`), rewritten whole when a loop is
made, closed or leaked, and every :data:`SYNC_SECONDS` for the rest (hits), as it exits too.
A rewrite goes to a temporary file renamed over the old one, so a reader (or a fold) never
sees a torn file: a process killed mid-write leaves its last whole file and a stray temporary.

The serving process merges, at each scrape: its own values from memory, the live processes'
files, and ``totals.json``, into which it folds the files of the processes that have gone
(counters and histograms summed, their gauges and open loops dropped), so the directory holds
at most one file per live process plus one, however many workers came and went. A fold writes
the new totals with the names it folded to a temporary file, fsyncs it, renames it over the old
totals, and only then removes the files it folded: a fold cut short anywhere is redone without
counting a file twice (a name already in the totals is only removed). The directory, the files'
names and the fold are :mod:`tracedpolicy.exporters.fleetdir`'s.

Why not prometheus_client's own files: its value class is chosen for all of prometheus_client
as it is imported, and reads ``PROMETHEUS_MULTIPROC_DIR`` from ``os.environ`` as each value is
made (``values.MultiProcessValue``): pointing tracedpolicy's metrics elsewhere would mean
setting the application's variable, even for a moment, or writing its private mmap format
(``MmapedDict``) ourselves, and still a file per process and metric kind that ever ran, which
upstream does not compact. tracedpolicy's values are read from its own counters anyway; a whole
small JSON file per process is rewritten atomically at the rate loops change.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time

from tracedpolicy.base import forksafe
from tracedpolicy.base.options import TRACEDPOLICY_MULTIPROC_DIR
from tracedpolicy.exporters.fleetdir import MAX_LOOPS, Owner, file_name
from tracedpolicy.exporters.fleetdir import Gathered as Gathered
from tracedpolicy.exporters.fleetvalues import (
    Values,
    add,
    current_values,
    made_loops,
    minus,
    own_records,
    with_pid,
)
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.events import (
    LOOP_CLOSED,
    LOOP_LEAKED,
    NEW_EVENT_LOOP,
    SET_EVENT_LOOP,
    PolicyEvent,
    add_sink,
)

#: How often a process rewrites its file if only hits changed (loop events rewrite it at once).
SYNC_SECONDS = 1.0
#: A loop event rewrites the file in the caller if the last write is this old, else the thread.
WRITE_GAP = 0.05

_lock = forksafe.rlock()
_owner: Owner | None = None
_member: _Member | None = None


# A process of the fleet: its own file -----------------------------------------------------


class _Member:
    """This process's file in the fleet's directory, rewritten as its loops change."""

    def __init__(self, directory: str, baseline: Values) -> None:
        self.path = os.path.join(directory, file_name(os.getpid()))
        self.baseline = baseline
        self.written = ""
        self.written_at = self.written_in_caller_at = -WRITE_GAP
        self.wake = threading.Event()
        self.stopped = False
        #: The thread that writes hits: started by the first loop event, ended by pause().
        self.thread: threading.Thread | None = None

    def write(self) -> None:
        self.written_at = time.monotonic()
        records = own_records()
        payload = {
            "pid": os.getpid(),
            "values": minus(current_values(), self.baseline),
            "loops": [record.as_json() for record in records[:MAX_LOOPS]],
            "more_loops": max(0, len(records) - MAX_LOOPS),
        }
        text = json.dumps(payload, sort_keys=True)
        if text == self.written:
            return
        temporary = self.path + ".tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(text)
            os.replace(temporary, self.path)
        except FileNotFoundError:
            self.stopped = True  # the serving process has gone and removed the directory
            return
        self.written = text

    def run(self) -> None:
        while not self.stopped:
            self.wake.wait(SYNC_SECONDS)
            self.wake.clear()
            wait = self.written_at + WRITE_GAP - time.monotonic()
            if wait > 0:  # at most a write per gap: loops made back to back batch their events
                time.sleep(wait)
            if self.stopped or _member is not self or self.thread is not threading.current_thread():
                return
            self.write_safely()

    def write_safely(self) -> None:
        try:
            with _lock:
                self.write()
        except Exception as failure:  # a full disk must not fail the program
            record_internal_error("multiprocess", failure)

    def start(self) -> None:
        """The writing thread, if it is not running: a process that makes no loop has none."""
        with _lock:
            if self.thread is not None or self.stopped:
                return
            self.thread = threading.Thread(target=self.run, name="tracedpolicy-fleet", daemon=True)
            self.thread.start()

    def pause(self) -> None:
        """A last write, and the thread ends (``uninstrument()``: the threads as before); the
        next loop event starts it again."""
        with _lock:
            thread, self.thread = self.thread, None
        if thread is None:
            return
        self.wake.set()
        if thread is not threading.current_thread():
            thread.join(5)
        self.write_safely()

    def finish(self) -> None:
        if not self.stopped:
            self.write_safely()
            self.stopped = True
            self.wake.set()


def directory() -> str | None:
    """The fleet's directory, if this process belongs to one."""
    return os.environ.get(TRACEDPOLICY_MULTIPROC_DIR) or None


def join() -> None:
    """Write this process's file into the fleet's directory from now on (idempotent)."""
    global _member
    path = directory()
    if path is None or not os.path.isdir(path):
        return
    with _lock:
        if _member is not None or (_owner is not None and _owner.pid == os.getpid()):
            return
        _member = _Member(path, {})
        _hook()


_hooked = False


def _hook() -> None:
    """Hear of loop events, and write the last file at exit: once (a forked child inherits)."""
    global _hooked
    if not _hooked:
        _hooked = True
        add_sink(_sink)
        forksafe.at_exit(_at_exit)


_LOOP_EVENTS = frozenset({NEW_EVENT_LOOP, LOOP_CLOSED, LOOP_LEAKED})


def _sink(event: PolicyEvent) -> None:
    """A loop made, closed or leaked: the file is rewritten at once, in the caller, unless the
    caller's last write was within :data:`WRITE_GAP` (a worker may be killed the moment after
    its loop closes: uvicorn's supervisor sends SIGTERM to workers closing their loops on
    SIGINT; a program running loops back to back pays for one write per gap). Else, or for a
    set, the thread is woken to write; hits wait for it."""
    member = _member
    if member is None or member.stopped:
        return
    if member.thread is None:
        member.start()
    now = time.monotonic()
    if event.kind in _LOOP_EVENTS and now - member.written_in_caller_at >= WRITE_GAP:
        member.written_in_caller_at = now  # the thread's writes do not count: a set wakes it
        member.write_safely()
    elif event.kind in _LOOP_EVENTS or event.kind == SET_EVENT_LOOP:
        member.wake.set()


def _at_exit() -> None:
    member = _member
    if member is not None and member.path.startswith(directory() or "\0"):
        member.finish()


# The serving process: the directory, the fold, the merge (fleetdir.Owner) ------------------


def gather_here() -> None:
    """This process serves the metrics: make the fleet's directory, unless the application
    chose prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    global _owner, _member
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    with _lock:
        if owner() is not None:
            return
        _owner = Owner()
        _member = None  # if it was a member of another fleet: that one is not its business now
        os.environ[TRACEDPOLICY_MULTIPROC_DIR] = _owner.path
        _hook()  # before any fork: multiprocessing's forked workers run the exit callbacks
    threading.Thread(
        target=_owner.fold_forever, args=(_lock,), name="tracedpolicy-fold", daemon=True
    ).start()


def owner() -> Owner | None:
    """The fleet this process serves, if it does."""
    found = _owner
    return found if found is not None and found.pid == os.getpid() else None


def disband() -> None:
    """This process stops serving: the directory goes, and the processes it starts later are
    not told of it."""
    global _owner
    with _lock:
        found = owner()
        if found is None:
            return
        _owner = None
        if os.environ.get(TRACEDPOLICY_MULTIPROC_DIR) == found.path:
            del os.environ[TRACEDPOLICY_MULTIPROC_DIR]
    found.remove()


def every_process() -> Gathered | None:
    """What one scrape of the serving process shows (this one's values from memory), or None
    if this process serves no fleet."""
    found = owner()
    if found is None:
        return None
    with _lock:
        others = found.others()
    own = current_values()
    add(others.values, with_pid(own, os.getpid()))
    processes = others.processes + made_loops(own)
    return others._replace(records=own_records() + others.records, processes=processes)


def _at_exit_of_owner() -> None:
    """The first process exits: the directory goes (registered first, so it runs last: the
    tally at exit reads the directory before)."""
    disband()


atexit.register(_at_exit_of_owner)


def _after_fork_in_child() -> None:
    """A forked child is a process of the fleet: a file of its own, counting only what it does
    itself (its counters start with the parent's), and never the serving one."""
    global _member
    path = directory()
    _member = None
    if path is None or not os.path.isdir(path):
        return
    try:
        _member = _Member(path, current_values())
    except Exception as failure:
        record_internal_error("multiprocess", failure)
        return
    _hook()


def pause() -> None:
    """End this process's writing thread after a last write, if it has one."""
    member = _member
    if member is not None:
        member.pause()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
