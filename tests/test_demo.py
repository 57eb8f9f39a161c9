"""The README's main command: the demo runs and prints exact counts of what it did."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tracedpolicy._compat import RUNNING


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracedpolicy", "demo", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def parse(output: str) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    label = ""
    for line in output.splitlines():
        if line.startswith("  "):
            key, value = line.split()
            table[label][key] = int(value)
        elif not line.startswith("loops left open"):
            label = line
            table[label] = {}
    return table


def test_demo_prints_what_its_workload_did() -> None:
    run = run_demo("--threads", "3", "--rounds", "2")
    assert run.returncode == 0, run.stderr
    counts = parse(run.stdout)
    policy = f"{RUNNING.default_policy.__module__}.{RUNNING.default_policy.__qualname__}"  # type: ignore[union-attr]
    assert counts[policy] == {
        "get_event_loop.hit.main": 0,
        "get_event_loop.hit.other": 3 * 2 * 100,
        "get_event_loop.miss.other": 3,
        "new_event_loop": 3 * 2 + 1,  # the workers' loops and asyncio.run's
        "set_event_loop.set": 3 * 2 + 1,
        "set_event_loop.clear": 3 * 2 + 1,
    }
    if sys.version_info >= (3, 12):
        assert counts["demo.loop_factory"]["new_event_loop"] == 1
    assert run.stdout.splitlines()[-1] == "loops left open by the workload: 2"


@pytest.mark.parametrize("bad", ["0", "-2", "many"])
def test_demo_rejects_a_bad_count_by_name(bad: str) -> None:
    run = run_demo("--threads", bad)
    assert run.returncode == 2
    assert f"argument --threads: expected a positive whole number, got '{bad}'" in run.stderr
