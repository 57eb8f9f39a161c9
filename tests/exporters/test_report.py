"""The leak report: its format is pinned, and it is what open_loops() holds."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.exporters.report import format_age, leak_report
from tracedpolicy.records.record import LoopRecord
from tracedpolicy.records.sites import CreationSite

DefaultPolicy: Any = RUNNING.default_policy


def record(loop_id: int, site: CreationSite | None, created: float, **fields: Any) -> LoopRecord:
    values: dict[str, Any] = {
        "origin": "policy",
        "creator": "app.Policy",
        "loop_class": "asyncio.unix_events._UnixSelectorEventLoop",
        "thread_id": 1,
        "thread_name": "worker-1",
        "created_at": 0.0,
        "tracked": True,
    }
    values.update(fields)
    return LoopRecord(loop_id=loop_id, created_monotonic=created, site=site, **values)


def test_the_report_groups_by_site_most_loops_first_and_says_what_is_known() -> None:
    handler = CreationSite("app/handlers.py", 42, "handle")
    startup = CreationSite("app/main.py", 7, "start")
    records = [
        record(1, startup, created=0.0, thread_name="MainThread", stack=("app/cli.py:3 in main",)),
        record(2, handler, created=880.0, set_on={11: "worker-1"}),
        record(3, handler, created=940.0, thread_name="worker-2", leaked="thread_exit"),
        record(4, handler, created=990.5, loop_class="uvloop.Loop", leaked="thread_exit"),
        record(5, None, created=999.0, thread_name="worker-3"),
    ]
    assert leak_report(records, now=1000.0) == (
        "tracedpolicy: 5 open event loops from 3 creation sites\n"
        "3 loops, oldest 2m00s, app/handlers.py:42 in handle\n"
        "    class asyncio.unix_events._UnixSelectorEventLoop (2), uvloop.Loop\n"
        "    made by policy app.Policy (3)\n"
        "    made in thread worker-1 (2), worker-2\n"
        "    current in thread worker-1\n"
        "    leaked: thread_exit (2)\n"
        "1 loop, oldest 16m40s, app/main.py:7 in start\n"
        "    class asyncio.unix_events._UnixSelectorEventLoop\n"
        "    made by policy app.Policy\n"
        "    made in thread MainThread\n"
        "    from app/cli.py:3 in main\n"
        "1 loop, oldest 1.0s, an unknown site\n"
        "    class asyncio.unix_events._UnixSelectorEventLoop\n"
        "    made by policy app.Policy\n"
        "    made in thread worker-3\n"
    )


def test_no_open_loops_say_so() -> None:
    assert leak_report([]) == "tracedpolicy: no open event loops\n"


def test_ages_read_at_a_glance() -> None:
    assert [
        format_age(s) for s in (0.04, 59.94, 60, 187, 3600 * 2 + 300, 86400 * 3 + 3600 * 4)
    ] == [
        "0.0s",
        "59.9s",
        "1m00s",
        "3m07s",
        "2h05m",
        "3d04h",
    ]


def test_open_loops_and_the_report_follow_the_live_loops() -> None:
    policy = TracedEventLoopPolicy(DefaultPolicy(), label="tests.report.live")
    loop = policy.new_event_loop()
    policy.set_event_loop(loop)
    mine = [r for r in tracedpolicy.open_loops() if r.creator == "tests.report.live"]
    assert [r.loop for r in mine] == [loop]
    assert mine[0].set_on == {mine[0].thread_id: "MainThread"}
    text = leak_report(mine)
    assert (
        f"{__file__}:" in text and "in test_open_loops_and_the_report_follow_the_live_loops" in text
    )
    assert "    current in thread MainThread" in text
    policy.set_event_loop(None)
    loop.close()
    assert not [r for r in tracedpolicy.open_loops() if r.creator == "tests.report.live"]


def test_control_characters_in_what_the_user_controls_are_escaped() -> None:
    """A thread named to forge report lines, or to drive the reader's terminal, cannot."""

    def report_naming(name: str) -> str:
        return leak_report(
            [
                record(1, CreationSite(f"app/{name}.py", 3, name), created=0.0, thread_name=name),
                record(2, None, created=0.0, creator=name, set_on={1: name}, stack=(name,)),
            ],
            now=1.0,
        )

    forged = "x\n3 loops, oldest 9d, /etc/shadow:1 in FAKE\n\x1b[31m\u202e"
    text = report_naming(forged)
    assert "\x1b" not in text and "\u202e" not in text
    assert "\\x1b[31m" in text and "\\u202e" in text
    assert len(text.splitlines()) == len(report_naming("benign").splitlines())


TALLY_AFTER_FORK = """
import asyncio, os, sys, tracedpolicy
tracedpolicy.instrument(report_at_exit=True, prometheus=False)
kept = [asyncio.new_event_loop() for _ in range(3)]  # the parent's, open when it forks
asyncio.new_event_loop().close()
if os.fork() == 0:
    if sys.argv[1] == "makes one":
        asyncio.new_event_loop().close()
    sys.exit(0)
os.wait()
for loop in kept:
    loop.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
@pytest.mark.parametrize("child", ["makes none", "makes one"])
def test_a_forked_childs_tally_at_exit_counts_only_its_own_loops(child: str) -> None:
    """The child's counters hold what the parent counted before the fork; its tally does not."""
    done = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-c", TALLY_AFTER_FORK, child],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    tallies = [line for line in done.stderr.splitlines() if line.startswith("tracedpolicy at")]
    parent = "tracedpolicy at exit: 4 event loops made, 4 closed, 0 leaked"
    if child == "makes none":  # a process that made no loop prints nothing
        assert tallies == [parent], done.stderr
    else:
        own = "tracedpolicy at exit: 1 event loop made, 1 closed, 0 leaked"
        assert tallies == [own, parent], done.stderr
