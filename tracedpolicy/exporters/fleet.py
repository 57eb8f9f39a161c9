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
counting a file twice (a name already in the totals is only removed).

A process is told apart by its pid and its start time (Linux: ``/proc/<pid>/stat``), so a
recycled pid is not taken for the process that had it; a random part tells a fork or an exec
that keeps the pid apart.

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
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import threading
import time
from typing import Any, NamedTuple

from tracedpolicy.base import forksafe
from tracedpolicy.base.options import TRACEDPOLICY_MULTIPROC_DIR
from tracedpolicy.exporters.fleetvalues import (
    FleetRecord,
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
#: How often the serving process folds the files of processes that have gone, between scrapes.
FOLD_SECONDS = 5.0
#: The open loops a process lists in its file at most (the count of the rest is kept).
MAX_LOOPS = 50
TOTALS = "totals.json"
_PREFIX = "tracedpolicy-metrics-"

_lock = forksafe.rlock()
_owner: _Owner | None = None
_member: _Member | None = None


# Identity and liveness ---------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot), ``?`` where there is no /proc, None if
    there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return fields[19].decode()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _any_start(pid)
    except (OSError, IndexError):
        return _any_start(pid)


def _any_start(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return "?"


def _file_name(pid: int) -> str:
    return f"proc-{pid}-{_start_time(pid) or '?'}-{secrets.token_hex(4)}.json"


def _alive(name: str) -> bool:
    """Whether the process that writes ``name`` still runs (its pid and start time match)."""
    parts = name.split("-")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    return _start_time(int(parts[1])) == parts[2]


# A process of the fleet: its own file -----------------------------------------------------


class _Member:
    """This process's file in the fleet's directory, rewritten as its loops change."""

    def __init__(self, directory: str, baseline: Values) -> None:
        self.path = os.path.join(directory, _file_name(os.getpid()))
        self.baseline = baseline
        self.written = ""
        self.written_at = self.written_in_caller_at = -WRITE_GAP
        self.wake = threading.Event()
        self.stopped = False

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
            if self.stopped or _member is not self:
                return
            self.write_safely()

    def write_safely(self) -> None:
        try:
            with _lock:
                self.write()
        except Exception as failure:  # a full disk must not fail the program
            record_internal_error("multiprocess", failure)

    def start(self) -> None:
        thread = threading.Thread(target=self.run, name="tracedpolicy-fleet", daemon=True)
        thread.start()

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
    _member.start()
    _member.wake.set()


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


# The serving process: the directory, the fold, the merge -------------------------------------


class Gathered(NamedTuple):
    """Every process of the fleet, as one scrape shows it."""

    values: Values
    records: list[FleetRecord]
    """The open loops the live processes list."""
    unlisted: dict[int, int]
    """By pid: the open loops beyond :data:`MAX_LOOPS`, which its file does not list."""
    processes: int
    """How many processes made loops (the ones folded, and the live ones)."""
    ended_open: int = 0
    """Loops still open when their process ended (neither closed nor counted leaked there)."""


class _Owner:
    """The process that made the directory: it folds, merges and removes it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.path = tempfile.mkdtemp(prefix=f"{_PREFIX}{self.pid}-", dir=_base())
        self.stop = threading.Event()

    def files(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(os.listdir(self.path))
        return []

    def fold(self) -> None:
        """Fold the files of processes that have gone into the totals, then remove them."""
        names = self.files()
        gone = [n for n in names if n.startswith("proc-") and not _alive(n.split(".")[0])]
        if not gone:
            return
        totals = self.totals()
        folded = set(totals.get("folded", ()))
        data = [n for n in gone if n.endswith(".json") and n not in folded]
        values: Values = totals.get("values", {})
        processes = int(totals.get("processes", 0))
        ended_open = int(totals.get("ended_open", 0))
        for name in data:
            read = self.read(name)
            if read is not None:
                add(values, read.get("values", {}), monotonic_only=True)
                processes += made_loops(read.get("values", {}))
                ended_open += int(sum(read.get("values", {}).get("asyncio_loop_open", {}).values()))
        if data:
            kept = [n for n in folded if n in names]  # named but not removed yet: still guarded
            self.write_totals(
                {
                    "values": values,
                    "folded": kept + data,
                    "processes": processes,
                    "ended_open": ended_open,
                }
            )
        for name in gone:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.path, name))

    def totals(self) -> dict[str, Any]:
        read = self.read(TOTALS)
        return read if read is not None else {}

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self.path, name), encoding="utf-8") as file:
                data: dict[str, Any] = json.load(file)
            return data
        except FileNotFoundError:
            return None
        except ValueError as failure:  # never written so (renamed whole): not ours, or a disk
            record_internal_error("multiprocess", failure)
            return None

    def write_totals(self, totals: dict[str, Any]) -> None:
        temporary = os.path.join(self.path, TOTALS + ".tmp")
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(totals, file, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, os.path.join(self.path, TOTALS))
        with contextlib.suppress(OSError):  # not every system opens a directory
            descriptor = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

    def others(self) -> Gathered:
        """Every other process's values (gone ones' totals too), open loops, and the loops
        each live process has open beyond those listed."""
        self.fold()
        totals = self.totals()
        folded = set(totals.get("folded", ()))
        values: Values = totals.get("values", {})
        records: list[FleetRecord] = []
        unlisted: dict[int, int] = {}
        processes = int(totals.get("processes", 0))
        for name in self.files():
            if not (name.startswith("proc-") and name.endswith(".json")) or name in folded:
                continue
            read = self.read(name)
            if read is None:
                continue
            pid = int(read["pid"])
            add(values, with_pid(read.get("values", {}), pid))
            records.extend(FleetRecord.from_json(dict(r)) for r in read.get("loops", ()))
            if read.get("more_loops"):
                unlisted[pid] = int(read["more_loops"])
            processes += made_loops(read.get("values", {}))
        return Gathered(values, records, unlisted, processes, int(totals.get("ended_open", 0)))

    def fold_forever(self) -> None:
        while not self.stop.wait(FOLD_SECONDS):
            try:
                with _lock:
                    self.fold()
            except Exception as failure:
                record_internal_error("multiprocess", failure)

    def remove(self) -> None:
        self.stop.set()
        shutil.rmtree(self.path, ignore_errors=True)


def gather_here() -> None:
    """This process serves the metrics: make the fleet's directory, unless the application
    chose prometheus_client's multi-process mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    global _owner, _member
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    with _lock:
        if owner() is not None:
            return
        _owner = _Owner()
        _member = None  # if it was a member of another fleet: that one is not its business now
        os.environ[TRACEDPOLICY_MULTIPROC_DIR] = _owner.path
        _hook()  # before any fork: multiprocessing's forked workers run the exit callbacks
    threading.Thread(target=_owner.fold_forever, name="tracedpolicy-fold", daemon=True).start()


def owner() -> _Owner | None:
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


def _base() -> str:
    """Where the directory goes: ``/dev/shm`` where there is one (memory: a rewrite costs tens
    of microseconds there, milliseconds on a busy disk), else the temporary directory."""
    if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return tempfile.gettempdir()


_SHM = "/dev/shm"


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
    _member.start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
