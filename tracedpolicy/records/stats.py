"""Cheap, exact, thread-safe aggregates that exporters read when they collect.

Counting is the hot path of a traced policy, so a :class:`Counter` bump is one atomic C call
(a compare-and-swap on a free-threaded build). A :class:`Histogram` is observed only on rare
events (a loop made or closed) and takes a lock (its shard's on a free-threaded build). That lock
is reentrant: a garbage collection that runs while it is held (any allocation may start one) can
run a ``__del__`` that closes a loop, whose close observes into this histogram in the same
thread.
"""

from __future__ import annotations

import bisect
import itertools
import sys
import threading
from collections.abc import Sequence
from typing import NamedTuple

from tracedpolicy.base import forksafe


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


#: Free-threaded CPython running without the GIL: threads run at once, and a lock that every
#: thread takes to observe serialises them; there a histogram is kept in shards, by thread.
#: (Asked of ``sys``, not ``sysconfig``: that import costs a process's start-up 5-10 ms.)
FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()
SHARDS = 8 if FREE_THREADED else 1


#: The OS's thread id (consecutive numbers on Linux: threads spread over the shards evenly; a
#: ``get_ident()`` is an address, the same modulo 8 for every thread).
_thread_number = getattr(threading, "get_native_id", threading.get_ident)


class _Shard:
    """Bucket counts and a sum, and the lock that guards them."""

    __slots__ = ("counts", "lock", "sum")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.sum = 0.0
        self.lock = forksafe.rlock()


class Histogram:
    """Observations in fixed buckets, the same buckets every exporter is given.

    In :data:`SHARDS` shards, a thread observing into the one its id picks, summed when read:
    prometheus_client and OpenTelemetry's SDK take one lock per histogram for each observation,
    which on a free-threaded build makes threads that close loops at once wait on each other.
    """

    __slots__ = ("_shards", "bounds")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self._shards = tuple(_Shard(len(self.bounds) + 1) for _ in range(SHARDS))

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le="bound").
        index = bisect.bisect_left(self.bounds, value)
        shards = self._shards
        shard = shards[_thread_number() % len(shards)] if SHARDS > 1 else shards[0]
        with shard.lock:
            shard.counts[index] += 1
            shard.sum += value

    def snapshot(self) -> HistogramSnapshot:
        counts = [0] * (len(self.bounds) + 1)
        total = 0.0
        for shard in self._shards:
            with shard.lock:
                taken, total = list(shard.counts), total + shard.sum
            counts = [a + b for a, b in zip(counts, taken)]
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
