"""``python -m tracedpolicy run``: any program under a traced policy, configured by variables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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


BAD_PORT = "environment variable TRACEDPOLICY_METRICS_PORT is 'http'; accepted: a port number"


def tracedpolicy_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracedpolicy", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [["run", "app.py"], ["demo", "--seconds", "1"], ["report", "http://127.0.0.1:1"]],
)
def test_every_command_refuses_a_bad_variable_in_one_line(
    command: list[str], tmp_path: Path
) -> None:
    (tmp_path / "app.py").write_text("print('started')")
    done = tracedpolicy_command(*command, env={"TRACEDPOLICY_METRICS_PORT": "http"}, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith(f"tracedpolicy: {BAD_PORT}") and done.stderr.count("\n") == 1


def test_a_bad_variable_never_breaks_the_import_and_fails_the_policy_it_configures() -> None:
    code = (
        "import tracedpolicy\n"
        "try:\n    tracedpolicy.TracedDefaultEventLoopPolicy()\n"
        "except ValueError as error:\n    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TRACEDPOLICY_METRICS_PORT": "http"},
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(BAD_PORT)
    help_text = tracedpolicy_command("--help", env={"TRACEDPOLICY_METRICS_PORT": "http"})
    assert help_text.returncode == 0 and "``" not in help_text.stdout


def test_run_without_a_target_says_what_is_needed() -> None:
    done = tracedpolicy_command("run")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "tracedpolicy run: error: the following argument is required: target"
        " (a script, or -m and a module)"
    )


@pytest.mark.parametrize("target", [["nonexistent.py"], ["-m", "no_such_module"]])
def test_run_of_a_missing_target_answers_as_python_does(target: list[str], tmp_path: Path) -> None:
    bare = subprocess.run(
        [sys.executable, *target], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    traced = tracedpolicy_command("run", *target, cwd=tmp_path)
    assert (traced.returncode, traced.stdout, traced.stderr) == (
        bare.returncode,
        bare.stdout,
        bare.stderr,
    )
    assert bare.returncode != 0 and bare.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["run", "demo"])
def test_a_busy_metrics_port_is_one_line_saying_what_to_do(command: str, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('app ran')")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        if command == "run":
            done = tracedpolicy_command(
                "run", "app.py", env={"TRACEDPOLICY_METRICS_PORT": port}, cwd=tmp_path
            )
            assert (done.returncode, done.stdout) == (0, "app ran\n")  # the app goes on
        else:
            done = tracedpolicy_command("demo", "--port", port, "--seconds", "1", cwd=tmp_path)
            assert done.returncode == 1
    assert done.stderr == (
        f"tracedpolicy: no /metrics on 127.0.0.1:{port} (Address already in use): choose a free"
        " port (0: any free one); tracing goes on\n"
    )


SEES_ITSELF = """
import atexit, os, pickle, sys, threading, warnings

class Job:
    pass

def later():
    thread.done = pickle.loads(pickle.dumps(Job())).__class__.__name__

thread = threading.Timer(0.2, later)
thread.start()
atexit.register(lambda: print("atexit", hasattr(sys.modules["__main__"], "Job"), thread.done))
print("file", __file__)
print("path0", sys.path[0])
print("calendar", __import__("calendar").__file__.endswith("calendar.py") and "stdlib"
      if "decoy" not in __import__("calendar").__file__ else "decoy")
warnings.warn("something")
"""


def test_run_gives_the_program_what_python_gives_it(tmp_path: Path) -> None:
    """__main__ after the body returns, sys.path, __file__, warnings: as bare python."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "sees_itself.py").write_text(SEES_ITSELF)
    work = tmp_path / "work"
    work.mkdir()
    (work / "calendar.py").write_text("decoy = True\n")  # must not shadow the stdlib's
    outputs = []
    for command in (
        [sys.executable, "../app/sees_itself.py"],
        [sys.executable, "-m", "tracedpolicy", "run", "../app/sees_itself.py"],
    ):
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs.append((done.stdout, done.stderr))
    assert outputs[0] == outputs[1]
    assert "atexit True Job" in outputs[1][0]


def test_run_of_pytest_adds_no_warning_of_ours(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    assert True\n")
    command = [sys.executable, "-m", "tracedpolicy", "run", "-m", "pytest", "-q", "-W", "error"]
    command += ["-p", "no:cacheprovider", "-p", "no:asyncio", "test_nothing.py"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "warning" not in done.stdout


SPAWNS = """
import asyncio, multiprocessing, tracedpolicy

def child():
    asyncio.run(asyncio.sleep(0))
    return tracedpolicy.instrumented(), sum(
        c["loops.created"] for c in tracedpolicy.snapshot().values())

if __name__ == "__main__":
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        print(pool.apply(child))
"""


def test_run_reaches_the_python_processes_the_program_starts(tmp_path: Path) -> None:
    script = tmp_path / "spawns.py"
    script.write_text(SPAWNS)
    done = run(str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(True, 1)"


def test_the_launcher_imports_nothing_from_the_working_directory(tmp_path: Path) -> None:
    """``python -m`` puts the working directory first on sys.path; the launcher drops it."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.py").write_text("print('program ran')\n")
    work = tmp_path / "work"
    work.mkdir()
    for shadow in ("logging", "typing", "argparse"):
        (work / f"{shadow}.py").write_text(f"print('!! {shadow}.py of the working directory')\n")
    outputs = []
    for command in (
        [sys.executable, "../app/app.py"],
        [sys.executable, "-m", "tracedpolicy", "run", "../app/app.py"],
    ):
        done = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=60)
        outputs.append((done.returncode, done.stdout, done.stderr))
    assert outputs[0] == outputs[1] == (0, "program ran\n", "")
