"""One process's values and open loops, as a file of a fleet holds them (see
:mod:`tracedpolicy.exporters.fleet`): read from the process's own counters, summed across processes,
less what a forked child inherited.

A file's values are plain JSON: ``{metric's Prometheus name: {labels as a JSON list: a number,
or [cumulative bucket counts, sum] for a histogram}}``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from tracedpolicy.exporters import metrics
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.record import LoopRecord

#: {metric's Prometheus name: {labels as JSON: a number, or [cumulative counts, sum]}}
Values = dict[str, dict[str, Any]]

_MONOTONIC = {m.prometheus_name for m in metrics.ALL if m.kind in ("counter", "histogram")}
_RATIOS = {m.prometheus_name for m in metrics.ALL if m.kind == "ratio"}


def current_values() -> Values:
    """This process's values now, as a file holds them."""
    values: Values = {}
    for metric in metrics.ALL:
        entries: dict[str, Any] = {}
        for labels, value in metrics.samples(metric):
            key = json.dumps([labels[name] for name in metric.labels])
            if metric.kind == "histogram":
                entries[key] = [list(value.cumulative_counts), value.sum]
            else:
                entries[key] = value
        if entries:
            values[metric.prometheus_name] = entries
    return values


def add(into: Values, values: Values, monotonic_only: bool = False) -> Values:
    """Sum ``values`` into ``into`` (histograms bucket by bucket); ``into`` is returned."""
    for name, entries in values.items():
        if monotonic_only and name not in _MONOTONIC:
            continue
        target = into.setdefault(name, {})
        for key, value in entries.items():
            old = target.get(key)
            if old is None:
                target[key] = value
            elif isinstance(value, list):
                target[key] = [[a + b for a, b in zip(old[0], value[0])], old[1] + value[1]]
            else:
                target[key] = old + value
    return into


def minus(values: Values, baseline: Values) -> Values:
    """Counters and histograms less ``baseline`` (what a forked child inherited)."""
    result: Values = {}
    for name, entries in values.items():
        before = baseline.get(name, {}) if name in _MONOTONIC else {}
        kept: dict[str, Any] = {}
        for key, value in entries.items():
            old = before.get(key)
            if old is None:
                kept[key] = value
            elif isinstance(value, list):
                kept[key] = [[a - b for a, b in zip(value[0], old[0])], value[1] - old[1]]
            else:
                kept[key] = value - old
        result[name] = kept
    return result


@dataclass
class FleetRecord:
    """An open loop of some process of the fleet, as its file lists it."""

    pid: int
    """The process that has the loop open."""
    site: str | None
    """Where it was made, as text (a file's JSON holds no frames)."""
    loop_class: str
    made_by: str
    """Origin and creator, as :attr:`LoopRecord.made_by` shows them."""
    thread_name: str
    created_monotonic: float
    """The machine's monotonic clock: ages compare across the fleet's processes."""
    leaked: str | None = None
    stack: tuple[str, ...] = ()
    set_on: dict[int, str] = field(default_factory=dict)
    """The threads it is set on, by name (a position stands in for the other process's ident)."""

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.created_monotonic

    @classmethod
    def of(cls, record: LoopRecord, pid: int) -> FleetRecord:
        return cls(
            pid,
            str(record.site) if record.site else None,
            record.loop_class,
            record.made_by,
            record.thread_name,
            record.created_monotonic,
            record.leaked,
            record.stack,
            dict(record.set_on),
        )

    def as_json(self) -> dict[str, Any]:
        return {**self.__dict__, "set_on": list(self.set_on.values())}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FleetRecord:
        names = data.pop("set_on", [])
        data["stack"] = tuple(data.get("stack", ()))
        return cls(**data, set_on=dict(enumerate(names)))


def own_records() -> list[FleetRecord]:
    """This process's open loops (monotonic time is the machine's: ages compare across
    processes)."""
    pid = os.getpid()
    records = sorted(REGISTRY.open_records(), key=lambda r: r.created_monotonic)
    return [FleetRecord.of(record, pid) for record in records]


def made_loops(values: Values) -> bool:
    return any(value > 0 for value in values.get("asyncio_loop_created", {}).values())


def with_pid(values: Values, pid: int) -> Values:
    """A share (a ratio gauge) cannot be summed over processes: each keeps a ``pid`` label."""
    return {
        name: (
            {json.dumps([*json.loads(key), str(pid)]): v for key, v in entries.items()}
            if name in _RATIOS
            else entries
        )
        for name, entries in values.items()
    }
