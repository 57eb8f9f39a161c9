"""``python -m tracedpolicy run``: any program under a traced policy, configured by variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROGRAM = """
import asyncio, sys, tracedpolicy
from tracedpolicy._compat import RUNNING

async def main():
    return 1

asyncio.run(main())
policy = RUNNING.get_policy()
counts = tracedpolicy.snapshot()["policy " + tracedpolicy.policy.label_of(type(policy))]
print(sys.argv[1:], __name__, tracedpolicy.is_traced(RUNNING.get_policy()))
print(counts["loops.created"], counts["loops.closed"], counts["set_event_loop.set"])
"""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracedpolicy", "run", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_run_traces_an_unchanged_script(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(PROGRAM)
    done = run(str(script), "--flag", "value")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['--flag', 'value'] __main__ True", "1 1 1"]


def test_run_takes_a_module_like_python_m(tmp_path: Path) -> None:
    (tmp_path / "app_module.py").write_text(PROGRAM)
    done = run("-m", "app_module", "x", env={"PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "['x'] __main__ True"


def test_run_rejects_a_bad_variable_before_the_program_starts(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text("print('started')")
    done = run(str(script), env={"TRACEDPOLICY_METRICS_PORT": "http"})
    assert done.returncode != 0 and "started" not in done.stdout
    assert "environment variable TRACEDPOLICY_METRICS_PORT is 'http'" in done.stderr
