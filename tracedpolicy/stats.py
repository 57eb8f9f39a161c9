"""Cheap, exact, thread-safe aggregates that exporters read when they collect.

Counting is the hot path of a traced policy, so a :class:`Counter` bump is one atomic C call.
A :class:`Histogram` is observed only on rare events (a loop made or closed) and takes a lock.
That lock is reentrant: a garbage collection that runs while it is held (any allocation may
start one) can run a ``__del__`` that closes a loop, whose close observes into this histogram
in the same thread.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from typing import NamedTuple

from tracedpolicy import forksafe


class Counter:
    """An exact counter: ``next(counter.tick)`` is atomic under the GIL."""

    __slots__ = ("tick",)

    def __init__(self) -> None:
        self.tick = itertools.count()

    @property
    def value(self) -> int:
        """How many times ``next(self.tick)`` ran (itertools.count shows that in its repr)."""
        return int(repr(self.tick)[len("count(") : -1])


class HistogramSnapshot(NamedTuple):
    """Cumulative counts per upper bound (the last bound is +Inf), their sum and count."""

    bounds: tuple[float, ...]
    cumulative_counts: tuple[int, ...]
    sum: float
    total: int


class Histogram:
    """Observations in fixed buckets, the same buckets every exporter is given."""

    __slots__ = ("_bucket_counts", "_lock", "_sum", "bounds")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._bucket_counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0
        self._lock = forksafe.rlock()

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le="bound").
        index = bisect.bisect_left(self.bounds, value)
        with self._lock:
            self._bucket_counts[index] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            counts, total = list(self._bucket_counts), self._sum
        cumulative = tuple(itertools.accumulate(counts))
        return HistogramSnapshot((*self.bounds, float("inf")), cumulative, total, cumulative[-1])


#: How long a base takes to make a loop: microseconds to tens of milliseconds.
CREATION_SECONDS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
)  # fmt: skip

#: How long a loop lives until closed: milliseconds to days.
LIFETIME_SECONDS = (
    0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 900.0,
    3600.0, 4 * 3600.0, 86400.0, 7 * 86400.0,
)  # fmt: skip
