"""Counters and histograms: exact, and the buckets mean what Prometheus's ``le`` means."""

from __future__ import annotations

import threading

from tracedpolicy.stats import CREATION_SECONDS, LIFETIME_SECONDS, Counter, Histogram


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
