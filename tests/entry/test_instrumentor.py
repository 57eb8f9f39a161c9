"""tracedpolicy under ``opentelemetry-instrument``: one line for a bad variable, the URL served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCHER = Path(sys.executable).parent / "opentelemetry-instrument"
SHOWS = "import tracedpolicy\nprint(tracedpolicy.instrumented())\n"

pytestmark = pytest.mark.skipif(not LAUNCHER.exists(), reason="no opentelemetry-instrument here")


def instrumented(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "shows.py").write_text(SHOWS)
    env = {**os.environ, **variables}
    # Whatever else is installed (a distro with its exporters), nothing is exported here.
    env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    return subprocess.run(
        [str(LAUNCHER), sys.executable, "shows.py"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def test_a_bad_variable_is_one_line_and_the_program_runs_untraced(tmp_path: Path) -> None:
    done = instrumented(tmp_path, TRACEDPOLICY_METRICS_PORT="http")
    assert (done.returncode, done.stdout) == (0, "False\n")
    assert done.stderr == (
        "tracedpolicy: environment variable TRACEDPOLICY_METRICS_PORT is 'http'; accepted: a port"
        " number from 0 to 65535; event loops are not traced\n"
    )


def test_the_metrics_url_is_printed_as_under_run(tmp_path: Path) -> None:
    done = instrumented(tmp_path, TRACEDPOLICY_METRICS_PORT="0")
    assert (done.returncode, done.stdout) == (0, "True\n")
    assert done.stderr.startswith("tracedpolicy: metrics on http://127.0.0.1:")
    assert done.stderr.count("\n") == 1
