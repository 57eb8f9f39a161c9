"""The program ``run`` starts gets this interpreter's flags, or ``run`` says why it cannot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tracedpolicy

#: The folder tracedpolicy is imported from, for launchers whose flags hide PYTHONPATH.
ROOT = str(Path(tracedpolicy.__file__).resolve().parent.parent)

INTERLEAVED = """
import sys
print("out 1")
sys.stderr.write("err\\n")
print("out 2")
"""


def buffered_environment() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED: -u alone decides."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def merged_output(command: list[str], stdin: str = "") -> str:
    done = subprocess.run(
        command,
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=buffered_environment(),
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


def test_run_keeps_python_u_unbuffered_output(tmp_path: Path) -> None:
    """Into a pipe, stdout is written as printed under -u: the lines keep their order."""
    script = tmp_path / "interleaved.py"
    script.write_text(INTERLEAVED)
    bare = merged_output([sys.executable, "-u", str(script)])
    traced = merged_output([sys.executable, "-u", "-m", "tracedpolicy", "run", str(script)])
    assert bare == traced == "out 1\nerr\nout 2\n"


def test_run_keeps_python_i_inspecting_after_the_program(tmp_path: Path) -> None:
    script = tmp_path / "quiet.py"
    script.write_text("import sys\nprint('inspect', sys.flags.inspect)\n")
    line = "print('repl says', 6 * 7)\n"
    bare = merged_output([sys.executable, "-i", str(script)], line)
    traced = merged_output([sys.executable, "-i", "-m", "tracedpolicy", "run", str(script)], line)
    for output in (bare, traced):
        assert "inspect 1" in output and "repl says 42" in output


LAUNCHER = f"""
import sys
sys.path.insert(0, {ROOT!r})
from tracedpolicy.__main__ import main
sys.exit(main(["run", sys.argv[1]]))
"""


@pytest.mark.parametrize("flag", ["-E", "-I"])
def test_run_refuses_a_flag_that_would_leave_the_program_untraced(
    flag: str, tmp_path: Path
) -> None:
    script = tmp_path / "app.py"
    script.write_text("print('program ran')\n")
    done = subprocess.run(
        [sys.executable, flag, "-c", LAUNCHER, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [message] = done.stderr.splitlines()
    assert f"cannot trace under python {flag}" in message
