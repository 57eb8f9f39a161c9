"""The fleet's directory, as the serving process keeps it: folds that count each process once
(idempotent, safe when cut short), recycled pids, torn writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tracedpolicy.base.options import TRACEDPOLICY_MULTIPROC_DIR
from tracedpolicy.exporters import fleet, fleetdir, fleetvalues

from ..processes import outside_any_fleet, run_script

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX processes")


def write_member_file(directory: Path, name: str, created: int, open_loops: int = 0) -> None:
    labels = json.dumps(["policy", "P", "L"])
    values = {
        "asyncio_loop_created": {labels: created},
        "asyncio_loop_open": {labels: open_loops},
        "asyncio_loop_lifetime_seconds": {labels: [[0] * 12 + [created, created], 1.5]},
    }
    payload = {"pid": int(name.split("-")[1]), "values": values, "loops": [], "more_loops": 0}
    (directory / name).write_text(json.dumps(payload))


@pytest.fixture
def owner(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv(TRACEDPOLICY_MULTIPROC_DIR, raising=False)
    monkeypatch.setattr(fleetdir, "FOLD_SECONDS", 3600.0)  # folds only when the test asks
    fleet.gather_here()
    found = fleet.owner()
    assert found is not None
    try:
        yield found
    finally:
        fleet.disband()
    assert not os.path.exists(found.path)
    assert TRACEDPOLICY_MULTIPROC_DIR not in os.environ


def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def created(gathered: Any) -> float:
    return float(sum(gathered.values.get("asyncio_loop_created", {}).values()))


def test_a_fold_is_idempotent_and_a_cut_short_fold_counts_nothing_twice(owner: Any) -> None:
    directory = Path(owner.path)
    dead = gone_pid()
    write_member_file(directory, f"proc-{dead}-1-aaaa.json", created=3, open_loops=1)
    write_member_file(directory, f"proc-{dead}-1-bbbb.json", created=4)
    before = created(fleet.every_process())  # this process's own, from memory, and the dead
    owner.fold()
    owner.fold()
    assert sorted(os.listdir(directory)) == ["totals.json"]
    gathered = fleet.every_process()
    assert gathered is not None and created(gathered) == before
    assert gathered.ended_open == 1  # the dead one's open loop: not open any more
    own_open = fleetvalues.current_values().get("asyncio_loop_open", {})
    assert gathered.values.get("asyncio_loop_open", {}) == own_open  # the dead one's: gone

    # A fold cut short after renaming its totals, before removing what it folded:
    write_member_file(directory, f"proc-{dead}-1-cccc.json", created=5)
    totals = owner.totals()
    written = json.loads((directory / f"proc-{dead}-1-cccc.json").read_text())
    fleetvalues.add(totals["values"], written["values"], monotonic_only=True)
    totals["folded"].append(f"proc-{dead}-1-cccc.json")
    owner.write_totals(totals)  # the file is still there, and named in the totals
    assert created(fleet.every_process()) == before + 5  # counted once, not as live too
    owner.fold()
    assert sorted(os.listdir(directory)) == ["totals.json"]
    assert created(fleet.every_process()) == before + 5


def test_a_recycled_pid_and_a_torn_write_neither_lose_nor_double_a_total(owner: Any) -> None:
    directory = Path(owner.path)
    own = fleetdir.start_time(os.getpid())
    # Our pid, but another start time: a process that had this pid before, and is gone.
    write_member_file(directory, f"proc-{os.getpid()}-{own}0-dddd.json", created=2)
    # A live process (this one, as start time says), killed while it rewrote its file: its
    # last whole file counts, the torn temporary never does.
    write_member_file(directory, f"proc-{os.getpid()}-{own}-eeee.json", created=7)
    (directory / f"proc-{os.getpid()}-{own}-eeee.json.tmp").write_text('{"pid": 1, "val')
    # A dead process's torn temporary, beside its last whole file.
    dead = gone_pid()
    write_member_file(directory, f"proc-{dead}-1-ffff.json", created=1)
    (directory / f"proc-{dead}-1-ffff.json.tmp").write_text('{"pid": 1, "val')
    mine = created(fleet.every_process()) - 10
    owner.fold()
    assert sorted(os.listdir(directory)) == [
        f"proc-{os.getpid()}-{own}-eeee.json",
        f"proc-{os.getpid()}-{own}-eeee.json.tmp",
        "totals.json",
    ]
    assert created(fleet.every_process()) == mine + 10
    histogram = fleet.every_process().values["asyncio_loop_lifetime_seconds"]  # type: ignore[union-attr]
    assert histogram[json.dumps(["policy", "P", "L"])] == [[0] * 12 + [10, 10], 4.5]


INSTRUMENTED = """
import asyncio, multiprocessing, os, sys, urllib.request
import tracedpolicy
from prometheus_client.parser import text_string_to_metric_families

def child():
    tracedpolicy.instrument()  # no port: a process of the fleet its parent serves
    asyncio.run(asyncio.sleep(0))
    asyncio.run(asyncio.sleep(0))

if __name__ == "__main__":
    tracedpolicy.instrument(metrics_port=0)
    directory = os.environ["TRACEDPOLICY_MULTIPROC_DIR"]
    worker = multiprocessing.get_context(sys.argv[1]).Process(target=child)
    worker.start()
    worker.join()
    port = tracedpolicy.metrics_server().server_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
        text = reply.read().decode()
    made = sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == "asyncio_loop_created_total")
    tracedpolicy.uninstrument()
    print(int(made), os.path.exists(directory), "TRACEDPOLICY_MULTIPROC_DIR" in os.environ)
"""


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_instrument_with_a_port_serves_the_processes_it_starts(tmp_path: Path, method: str) -> None:
    env = outside_any_fleet()
    done = run_script(tmp_path, "instrumented.py", INSTRUMENTED, method, env=env, traced=False)
    assert done.stdout.split() == ["2", "False", "False"]  # the child's two; the directory gone


def test_a_killed_serving_process_s_directory_is_removed_by_the_next_one(tmp_path: Path) -> None:
    """A serving process killed leaves its directory (its exit never ran): the next process to
    serve removes it, and leaves a live process's alone."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid, live_pid = int(gone.stdout), os.getpid()
    abandoned = tmp_path / f"tracedpolicy-metrics-{dead_pid}-abc123"
    alive = tmp_path / f"tracedpolicy-metrics-{live_pid}-def456"
    other = tmp_path / f"someone-else-{dead_pid}"
    for directory in (abandoned, alive, other):
        directory.mkdir()
        (directory / "proc-1.json").write_text("{}")
    fleetdir.remove_abandoned(str(tmp_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([alive.name, other.name])


SINGLE = """
import asyncio, urllib.request
import tracedpolicy
tracedpolicy.instrument(metrics_port=0)
kept = asyncio.new_event_loop()
port = tracedpolicy.metrics_server().server_port
with urllib.request.urlopen(f"http://127.0.0.1:{port}/loops") as reply:
    print(reply.read().decode(), end="")
kept.close()
tracedpolicy.uninstrument()
"""


def test_a_serving_process_alone_lists_its_loops_without_pids() -> None:
    """Pids are said where other processes' loops are listed too: alone, /loops reads as it
    always did."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDPOLICY_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", SINGLE], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "tracedpolicy: 1 open event loop from 1 creation site", done.stdout
    assert not any(line.startswith("    in process") for line in lines), done.stdout


MEMBER_THREADS = """
import asyncio, os, sys, threading
import tracedpolicy
before = threading.enumerate()
tracedpolicy.instrument()  # a process of the fleet in TRACEDPOLICY_MULTIPROC_DIR
print("no thread before a loop:", threading.enumerate() == before)
asyncio.run(asyncio.sleep(0))
directory = os.environ["TRACEDPOLICY_MULTIPROC_DIR"]
print("files:", len([n for n in os.listdir(directory) if n.endswith(".json")]))
tracedpolicy.uninstrument()
print("threads as before:", threading.enumerate() == before)
"""


def test_a_process_of_the_fleet_starts_its_thread_with_its_first_loop_and_ends_it_after(
    tmp_path: Path,
) -> None:
    """As loop health's: a worker that never makes a loop runs no thread of ours (and may fork
    without CPython's multi-threaded warning); uninstrument() leaves the threads as before."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDPOLICY_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env[TRACEDPOLICY_MULTIPROC_DIR] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", MEMBER_THREADS], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "no thread before a loop: True",
        "files: 1",
        "threads as before: True",
    ], done.stderr
