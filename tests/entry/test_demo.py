"""The README's main command: the live demo serves metrics on loopback and stops cleanly."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..processes import scrape


@pytest.fixture
def demo() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tracedpolicy", "demo", "--port", "0", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def demo_with_two_workers(stderr: int) -> subprocess.Popen[str]:
    """``python -m tracedpolicy demo --workers 2`` on a free port, in a fleet of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "tracedpolicy", "demo", "--port", "0", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )


def test_demo_serves_live_metrics_on_loopback_and_stops_on_ctrl_c(
    demo: subprocess.Popen[str],
) -> None:
    assert demo.stdout is not None
    first = demo.stdout.readline()
    assert first.startswith("serving metrics on http://127.0.0.1:"), first + demo.stderr.read()  # type: ignore[union-attr]
    url = first.split()[3]
    second = demo.stdout.readline()
    assert second.startswith("open loops: ") and second.rstrip().endswith(url.rsplit("/", 1)[0])
    printed_command = shlex.split(second[len("open loops: ") :])
    deadline = time.monotonic() + 30
    totals = scrape(url)
    while totals.get("asyncio_loop_closed_total", 0) < 10 and time.monotonic() < deadline:
        totals = scrape(url)  # the workload is running; its counts only grow
    assert totals["asyncio_loop_closed_total"] >= 10
    assert totals["asyncio_policy_get_event_loop_calls_total"] > 0
    assert totals["asyncio_loop_open"] > 0  # the leaking worker's loops
    # The command the demo printed works as printed, from where the demo was started, with
    # no virtualenv activated (the bare PATH knows no tracedpolicy).
    report = subprocess.run(
        printed_command,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": os.defpath},
    )
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("tracedpolicy: ") and "open event loop" in report.stdout
    assert "demo.py:" in report.stdout and "made in thread demo-worker-0" in report.stdout
    demo.send_signal(signal.SIGINT)
    out, err = demo.communicate(timeout=30)
    assert demo.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped. loops created") and " open 0 " in last


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "0"], "argument --threads: expected a whole number from 1 to 64, got '0'"),
        (["--port", "http"], "--port: expected a whole number from 0 to 65535, got 'http'"),
        (["--interval", "-1"], "argument --interval: expected a positive number of seconds"),
    ],
)
def test_demo_rejects_a_bad_argument_by_name(args: list[str], message: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tracedpolicy", "demo", *args], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert message in run.stderr


def test_demo_with_workers_serves_every_process_in_one_scrape() -> None:
    process = demo_with_two_workers(stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("serving metrics on http://127.0.0.1:"), first
        url = first.split()[3]
        assert process.stdout.readline().startswith("open loops: ")
        assert process.stdout.readline() == "2 worker processes; /metrics adds them up\n"
        # (a summary line every 2 s, the default interval)
        deadline = time.monotonic() + 60
        totals = scrape(url)
        while totals.get("asyncio_loop_closed_total", 0) < 20 and time.monotonic() < deadline:
            totals = scrape(url)
        # The serving process makes no loop of its own (nor files): every count is the workers'.
        assert totals["asyncio_loop_closed_total"] >= 20
        assert totals["asyncio_loop_open"] > 0  # the workers' leaking threads' loops
        line = process.stdout.readline()
        while line and not line.startswith("processes 2 ") and time.monotonic() < deadline:
            line = process.stdout.readline()  # a line every 0.2 s, until both workers wrote
        assert line.startswith("processes 2 | loops created "), line
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        last = out.strip().splitlines()[-1]
        # The workers are gone: their open loops no longer count; their totals stay.
        assert last.startswith("stopped. processes 2 | loops created ") and " open 0 " in last
        created = int(last.split("loops created ")[1].split()[0])
        assert created >= totals["asyncio_loop_created_total"] > 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def children_of(pid: int) -> set[int]:
    """Linux: the processes whose parent is ``pid`` (from /proc)."""
    found: set[int] = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.add(int(stat.parent.name))
    return found


def running(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie waiting for its reaper has ended)."""
    alive = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                alive.add(pid)
    return alive


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)")
def test_demo_workers_end_when_the_main_process_is_killed() -> None:
    process = demo_with_two_workers(stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    for _ in range(3):
        process.stdout.readline()  # the URL, the report command, the workers line
    deadline = time.monotonic() + 30
    started = children_of(process.pid)
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)  # the workers and multiprocessing's resource tracker start
        started = children_of(process.pid)
    process.kill()
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while running(started) and time.monotonic() < deadline:
        time.sleep(0.1)  # each worker looks for its parent twice a second
    alive = running(started)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert len(started) == 3  # the two workers and multiprocessing's resource tracker
    assert alive == set()


ABANDONS = """
import asyncio, gc, sys, warnings
from tracedpolicy.entry import demo
warnings.simplefilter("ignore", ResourceWarning)

def abandon():
    loop = asyncio.new_event_loop()
    # What the garbage collector does now and then, bare too: the loop's self-pipe socket is
    # finalized before the loop, whose __del__ then cannot close it.
    loop._ssock.close()
    del loop
    gc.collect()

if sys.argv[1] == "quiet":
    with demo.abandoned_loops_finalized_quietly():
        abandon()
else:
    abandon()
print("done")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the self-pipe is the selector loop's")
def test_cpythons_failure_to_close_an_abandoned_loop_stays_off_the_demos_output() -> None:
    outputs = {}
    for mode in ("bare", "quiet"):
        done = subprocess.run(
            [sys.executable, "-c", ABANDONS, mode], capture_output=True, text=True, timeout=60
        )
        outputs[mode] = (done.returncode, done.stdout, done.stderr)
    # Bare asyncio, no tracedpolicy involved: CPython's own "Exception ignored".
    assert outputs["bare"][:2] == (0, "done\n")
    assert (
        "Exception ignored" in outputs["bare"][2] and "BaseEventLoop.__del__" in outputs["bare"][2]
    )
    assert "ValueError: Invalid file descriptor: -1" in outputs["bare"][2]
    assert outputs["quiet"] == (0, "done\n", "")
