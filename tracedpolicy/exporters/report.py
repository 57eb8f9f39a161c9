"""Leak forensics for people: the open loops, grouped by where they were made.

``leak_report()`` answers "which code made the loops that are still open, how many, since
when, on which threads" in a few lines per creation site, most loops first. The CLI prints the
same for a running process (``python -m tracedpolicy report URL``, read from the ``/loops``
page of the metrics server) or at exit (the ``report_at_exit`` option).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TextIO, Union

from tracedpolicy.exporters import fleet, fleetvalues
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.record import LoopRecord
from tracedpolicy.records.recorder import loop_totals
from tracedpolicy.records.sites import printable

#: A loop of this process, or of another process of its fleet (which says its pid).
Reported = Union[LoopRecord, fleetvalues.FleetRecord]


def open_loops() -> list[LoopRecord]:
    """Records of the loops made here that are alive and not closed (leaked ones included)."""
    return sorted(REGISTRY.open_records(), key=lambda record: record.created_monotonic)


def format_age(seconds: float) -> str:
    """``0.4s``, ``12.0s``, ``3m07s``, ``2h05m``, ``3d04h``: short and sortable by eye."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _names(values: Iterable[str]) -> str:
    counts = Counter(printable(value) for value in values)
    return ", ".join(name if n == 1 else f"{name} ({n})" for name, n in sorted(counts.items()))


def leak_report(records: Sequence[Reported] | None = None, now: float | None = None) -> str:
    """The open loops (default: :func:`open_loops`) grouped by creation site, as text."""
    records = open_loops() if records is None else records
    now = time.monotonic() if now is None else now
    if not records:
        return "tracedpolicy: no open event loops\n"
    groups: dict[str, list[Reported]] = {}
    for record in records:
        groups.setdefault(str(record.site or "an unknown site"), []).append(record)
    ordered = sorted(
        groups.items(), key=lambda item: (-len(item[1]), -max(r.age(now) for r in item[1]))
    )
    here = os.getpid()  # pids are said only where another process's loops are listed too
    other_processes = any(isinstance(r, fleetvalues.FleetRecord) and r.pid != here for r in records)
    lines = [
        f"tracedpolicy: {_plural(len(records), 'open event loop')} "
        f"from {_plural(len(groups), 'creation site')}"
    ]
    for site, group in ordered:
        oldest = max(group, key=lambda r: r.age(now))
        lines.append(f"{_plural(len(group), 'loop')}, oldest {format_age(oldest.age(now))}, {site}")
        lines.append(f"    class {_names(r.loop_class for r in group)}")
        lines.append(f"    made by {_names(r.made_by for r in group)}")
        lines.append(f"    made in thread {_names(r.thread_name for r in group)}")
        pids = [str(r.pid) for r in group if isinstance(r, fleetvalues.FleetRecord)]
        if pids and other_processes:
            lines.append(f"    in process {_names(pids)}")
        current = [name for r in group for name in tuple(r.set_on.values())]  # set elsewhere
        if current:
            lines.append(f"    current in thread {_names(current)}")
        leaked = [r.leaked for r in group if r.leaked]
        if leaked:
            lines.append(f"    leaked: {_names(leaked)}")
        lines.extend(f"    from {printable(frame)}" for frame in oldest.stack)
    return "\n".join(lines) + "\n"


def fleet_report(gathered: fleet.Gathered, now: float | None = None) -> str:
    """The open loops of every live process of the fleet, each with its pid."""
    text = leak_report(gathered.records, now)
    for pid, count in sorted(gathered.unlisted.items()):
        text += f"tracedpolicy: process {pid} has {_plural(count, 'more open loop')}, not listed\n"
    return text


def fleet_totals(gathered: fleet.Gathered) -> tuple[int, int, int]:
    """Loops made, closed and leaked by every process of the fleet."""
    made, closed, leaked = (
        int(sum(gathered.values.get(name, {}).values()))
        for name in ("asyncio_loop_created", "asyncio_loop_closed", "asyncio_loop_leaked")
    )
    return made, closed, leaked


def _fleet_part(gathered: fleet.Gathered) -> str:
    """The rest of a fleet's tally: loops neither closed nor leaked, as their process ended or
    in a process still running (this one's were counted leaked just before), and how many
    processes made loops."""
    part = ""
    if gathered.ended_open:
        part += f" ({gathered.ended_open} open as their process ended)"
    running = int(sum(gathered.values.get("asyncio_loop_open", {}).values()))
    if running:
        part += f" ({running} open in processes still running)"
    count = gathered.processes
    return part + (f", in {count} process" if count == 1 else f", in {count} processes")


def totals() -> tuple[int, int, int]:
    """Loops this process made, closed and leaked, over every origin and creator (a forked
    child's own: :func:`tracedpolicy.recorder.loop_totals`)."""
    return loop_totals()


def report_at_exit(out: TextIO | None = None) -> None:
    """Count the loops still open as leaked ``open_at_exit``, print their report and a tally.

    A process that made no loop prints nothing: a program that does not use asyncio keeps its
    output as it was.
    """
    leaked_now = REGISTRY.leak_open_at_exit()
    made, closed, leaked = totals()
    gathered = fleet.every_process()  # the serving process of a fleet: every process's
    if gathered is not None and gathered.processes > (1 if made else 0):
        made, closed, leaked = fleet_totals(gathered)
    else:
        gathered = None  # only this process made loops: the tally as without a fleet
    if not made:
        return
    out = out or sys.stderr
    if leaked_now:
        print(leak_report(leaked_now), end="", file=out)
    line = f"{_plural(made, 'event loop')} made, {closed} closed, {leaked} leaked"
    if leaked_now:
        line += f" ({len(leaked_now)} open at exit)"
    if gathered is not None:
        line += _fleet_part(gathered)
    print(f"tracedpolicy at exit: {line}", file=out)
