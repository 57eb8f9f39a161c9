"""A forked child never hangs on a lock of tracedpolicy's, and counts stay exact across forks.

Each scenario runs in its own process (forking a pytest process full of threads is asking for
trouble of pytest's own), with threads that hold tracedpolicy's locks as often as they can:
one collecting (snapshot, a Prometheus scrape, an OpenTelemetry collection, the leak report),
one making, setting, closing and dropping loops, while the main thread forks hundreds of times.
Every child uses tracedpolicy at once and must finish within a deadline.

What is collected is tracedpolicy's own: its Prometheus collector and the samples its
OpenTelemetry instruments report. prometheus_client's registry and the OpenTelemetry SDK hold
locks of their own, which they do not re-make in a child (the SDK documents that its providers
are to be set up after a fork); a child that inherited one of those held would hang in them,
tracedpolicy or not.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ..processes import FORK_EACH

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")

SCENARIO = """
import asyncio, gc, os, signal, sys, threading, time, warnings
warnings.simplefilter("ignore")
import logging
import tracedpolicy
from tracedpolicy.exporters import metrics
from tracedpolicy.exporters import prometheus
from tracedpolicy.records.loops import REGISTRY as LOOPS
from tracedpolicy.records.recorder import recorders

FORKS = int(sys.argv[1])
import sysconfig
FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
logging.disable(logging.CRITICAL)  # thousands of leaks are made on purpose
tracedpolicy.instrument()
policy = asyncio.get_event_loop_policy()
stop = threading.Event()


def totals():
    LOOPS.flush()
    made = closed = leaked = inherited = 0
    opened = 0
    for recorder in recorders():
        for stats in recorder.loop_classes().values():
            made += stats.created.value
            closed += stats.closed.value
            leaked += sum(c.value for c in stats.leaked.values())
            inherited += stats.inherited
            opened += stats.open
    return made, closed, leaked, inherited, opened


def balanced():
    made, closed, leaked, inherited, opened = totals()
    return made == closed + leaked + inherited + opened and opened >= 0


def read_everything():
    tracedpolicy.snapshot()
    list(prometheus.PolicyCollector().collect())  # what a Prometheus scrape reads
    for metric in metrics.ALL:
        list(metrics.samples(metric))  # what OpenTelemetry's callbacks read
    tracedpolicy.leak_report()


def collect():
    while not stop.is_set():
        read_everything()


def churn():
    kept = []
    while not stop.is_set():
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        policy.get_event_loop()
        policy.set_event_loop(None)
        other = asyncio.SelectorEventLoop()  # constructed directly
        if len(kept) < 5:
            kept.append(other)  # left open for a while
        else:
            other.close()
        loop.close()
        asyncio.SelectorEventLoop()  # dropped unclosed: a gc_unclosed leak
        if len(kept) >= 5:
            kept.pop(0).close()


def in_child():
    # Everything that takes a lock of tracedpolicy's, as soon as the child exists.
    read_everything()
    loop = asyncio.new_event_loop()
    loop.close()
    if not FREE_THREADED:  # 3.13.0rc2t's collector can hang in a child forked from threads
        gc.collect()  # (stuck in "Garbage-collecting", no Python frame: CPython's, seen in CI)
    return balanced()


# Loaded before the threads start: tracedpolicy loads a module when first used, and a child
# forked while another thread imports one finds that module's import lock held for good (as
# with any import; this test is about tracedpolicy's own locks).
read_everything()
threads = [threading.Thread(target=collect), threading.Thread(target=churn)]
for thread in threads:
    thread.start()
hung, failed = fork_each(FORKS, lambda: 0 if in_child() else 3, deadline=20)
stop.set()
for thread in threads:
    thread.join()
gc.collect()
made, closed, leaked, inherited, opened = totals()
print(hung, failed, balanced(), made > FORKS)
"""


def run(forks: int) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", FORK_EACH + textwrap.dedent(SCENARIO), str(forks)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_no_forked_child_hangs_and_counts_stay_exact_in_parent_and_children() -> None:
    """300 forks while threads collect and churn loops: no child hangs or miscounts.

    In every child and in the parent, loops made = closed + leaked + inherited + open.
    """
    hung, failed, balanced, busy = run(300)
    assert (hung, failed) == ("0", "0")
    assert balanced == "True" and busy == "True"
