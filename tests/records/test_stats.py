"""Counters and histograms: exact, and the buckets mean what Prometheus's ``le`` means."""

from __future__ import annotations

import threading
from typing import Any

from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records.stats import (
    CREATION_SECONDS,
    LIFETIME_SECONDS,
    Counter,
    Histogram,
    HistogramSnapshot,
)

from ..collecting import InACycle, finishes_with_a_collection_at
from ..counts import recorder_named

DefaultPolicy: Any = RUNNING.default_policy


def test_a_counter_is_exact_across_threads() -> None:
    counter = Counter()

    def bump() -> None:
        for _ in range(20_000):
            next(counter.tick)

    threads = [threading.Thread(target=bump) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.value == 120_000


def test_a_value_on_a_bound_falls_in_that_bounds_bucket() -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0, 10.0, 99.0):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.bounds == (0.1, 1.0, 10.0, float("inf"))
    assert snapshot.cumulative_counts == (2, 4, 6, 7)  # le=0.1, le=1, le=10, le=+Inf
    assert snapshot.total == 7
    assert snapshot.sum == 0.05 + 0.1 + 0.5 + 1.0 + 3.0 + 10.0 + 99.0


def test_an_empty_histogram_reads_as_zeros() -> None:
    snapshot = Histogram((1.0,)).snapshot()
    assert (snapshot.cumulative_counts, snapshot.sum, snapshot.total) == ((0, 0), 0.0, 0)


def test_the_buckets_fit_their_ranges() -> None:
    assert CREATION_SECONDS[0] == 0.00001 and CREATION_SECONDS[-1] == 0.1  # 10 µs to 100 ms
    assert LIFETIME_SECONDS[0] == 0.001 and LIFETIME_SECONDS[-1] == 7 * 86400  # 1 ms to 7 days
    for bounds in (CREATION_SECONDS, LIFETIME_SECONDS):
        assert list(bounds) == sorted(set(bounds))


def test_a_collection_during_a_snapshot_may_observe_into_the_same_histogram() -> None:
    """A ``__del__`` that closes a loop observes its lifetime; a collection started by the
    snapshot's own allocation runs that ``__del__`` while the snapshot holds the lock."""
    histogram = Histogram((1.0,))
    histogram.observe(0.5)
    seen: list[HistogramSnapshot] = []
    assert finishes_with_a_collection_at(
        Histogram.snapshot,
        "list(shard.counts)",
        lambda: seen.append(histogram.snapshot()),
        lambda: InACycle(lambda: histogram.observe(2.0)),
    )
    assert seen[0].total in (1, 2)  # the observation made during the snapshot may be in it
    assert histogram.snapshot().total == 2


class ClosesItsLoopInACycle:
    """An owner that closes its loop in ``__del__``, freed only by a collection; the loop stays
    reachable (its policy's current loop), so its close is a close, not a leak."""

    def __init__(self, policy: TracedEventLoopPolicy) -> None:
        self.loop = policy.new_event_loop()
        policy.set_event_loop(self.loop)
        self.me = self

    def __del__(self) -> None:
        self.loop.close()


def test_a_scrape_survives_a_collection_that_closes_a_loop_of_the_same_histogram() -> None:
    label = "tests.stats.scrape-collects"
    policy = TracedEventLoopPolicy(DefaultPolicy(), label=label)
    policy.new_event_loop().close()  # the lifetime histogram exists
    [stats] = recorder_named(label).loop_classes().values()
    try:
        assert finishes_with_a_collection_at(
            Histogram.snapshot,
            "list(shard.counts)",
            stats.lifetime_seconds.snapshot,
            lambda: ClosesItsLoopInACycle(policy),
        )
        assert stats.closed.value == 2
    finally:
        policy.set_event_loop(None)
