"""The fleet's directory (:mod:`tracedpolicy.exporters.fleet`): a file per process, named by
its pid and start time (Linux: ``/proc/<pid>/stat``), so a recycled pid is not taken for the
process that had it; a random part tells a fork or an exec that keeps the pid apart. The serving
process's :class:`Owner` reads the live processes' files and folds those of the gone into
``totals.json``: the fold writes the new totals with the names it folded to a temporary file,
fsyncs it, renames it over the old totals, and only then removes the files it folded, so a fold
cut short anywhere is redone without counting a file twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import threading
from typing import Any, NamedTuple

from tracedpolicy.exporters.fleetvalues import FleetRecord, Values, add, made_loops, with_pid
from tracedpolicy.records.errors import record_internal_error

#: How often the serving process folds the files of processes that have gone, between scrapes.
FOLD_SECONDS = 5.0
#: The open loops a process lists in its file at most (the count of the rest is kept).
MAX_LOOPS = 50
TOTALS = "totals.json"
_PREFIX = "tracedpolicy-metrics-"


def start_time(pid: int) -> str | None:
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


def file_name(pid: int) -> str:
    return f"proc-{pid}-{start_time(pid) or '?'}-{secrets.token_hex(4)}.json"


def alive(name: str) -> bool:
    """Whether the process that writes ``name`` still runs (its pid and start time match)."""
    parts = name.split("-")
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    return start_time(int(parts[1])) == parts[2]


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


class Owner:
    """The process that made the directory: it folds, merges and removes it."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        base = _base()
        remove_abandoned(base)
        self.path = tempfile.mkdtemp(prefix=f"{_PREFIX}{self.pid}-", dir=base)
        self.stop = threading.Event()

    def files(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(os.listdir(self.path))
        return []

    def fold(self) -> None:
        """Fold the files of processes that have gone into the totals, then remove them."""
        names = self.files()
        gone = [n for n in names if n.startswith("proc-") and not alive(n.split(".")[0])]
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

    def fold_forever(self, lock: Any) -> None:
        """Fold every :data:`FOLD_SECONDS` (under the fleet's ``lock``) until removed."""
        while not self.stop.wait(FOLD_SECONDS):
            try:
                with lock:
                    self.fold()
            except Exception as failure:
                record_internal_error("multiprocess", failure)

    def remove(self) -> None:
        self.stop.set()
        shutil.rmtree(self.path, ignore_errors=True)


def remove_abandoned(base: str) -> None:
    """Remove the directories of serving processes that are gone without removing theirs
    (killed): each is named after its owner's pid. A recycled pid keeps one a while longer."""
    with contextlib.suppress(OSError):
        for name in os.listdir(base):
            pid = name[len(_PREFIX) :].split("-", 1)[0] if name.startswith(_PREFIX) else ""
            if pid.isdigit() and not _process_exists(int(pid)):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's: it exists
        return True
    return True


def _base() -> str:
    """Where the directory goes: ``/dev/shm`` where there is one (memory: a rewrite costs tens
    of microseconds there, milliseconds on a busy disk), else the temporary directory."""
    if os.path.isdir(_SHM) and os.access(_SHM, os.W_OK | os.X_OK):
        return _SHM
    return tempfile.gettempdir()


_SHM = "/dev/shm"
