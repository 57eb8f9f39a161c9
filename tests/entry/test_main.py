"""``python -m tracedpolicy run``: any program under a traced policy, configured by variables."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..processes import run_python

PROGRAM = """
import asyncio, sys, tracedpolicy
from tracedpolicy.base._compat import RUNNING

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


@pytest.mark.parametrize("command", [["run", "app.py"], ["demo", "--seconds", "1"]])
def test_every_command_that_uses_the_variables_refuses_a_bad_variable_in_one_line(
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
    done = run_python(code, env={**os.environ, "TRACEDPOLICY_METRICS_PORT": "http"})
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(BAD_PORT)
    help_text = tracedpolicy_command("--help", env={"TRACEDPOLICY_METRICS_PORT": "http"})
    assert help_text.returncode == 0 and "``" not in help_text.stdout


def test_run_without_a_target_says_what_is_needed() -> None:
    done = tracedpolicy_command("run")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "python -m tracedpolicy run: error: the following argument is required: target"
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
            assert done.stderr == (
                f"tracedpolicy: no /metrics on 127.0.0.1:{port} (Address already in use): choose"
                " a free port (0: any free one); tracing goes on\n"
            )
        else:  # the demo is nothing without its metrics: it stops, and does not say otherwise
            done = tracedpolicy_command("demo", "--port", port, "--seconds", "1", cwd=tmp_path)
            assert (done.returncode, done.stdout) == (1, "")
            assert done.stderr == (
                f"tracedpolicy demo: cannot serve /metrics on 127.0.0.1:{port} (Address already"
                " in use): choose a free port (--port 0: any free one)\n"
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


SHOWS_ARGV = "import sys\nprint(sys.argv)\n"


@pytest.mark.parametrize(
    "arguments",
    [["--", "a"], ["a", "--", "-m", "b"], ["--"], ["-m", "x", "--help"], ["-", "--", "--"]],
)
def test_run_passes_the_programs_arguments_on_exactly_as_python_does(
    arguments: list[str], tmp_path: Path
) -> None:
    (tmp_path / "args.py").write_text(SHOWS_ARGV)
    (tmp_path / "showargs.py").write_text(SHOWS_ARGV)
    for target in (["args.py"], ["-m", "showargs"], ["-mshowargs"]):
        bare = subprocess.run(
            [sys.executable, *target, *arguments],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        traced = tracedpolicy_command("run", *target, *arguments, cwd=tmp_path)
        assert (traced.returncode, traced.stdout, traced.stderr) == (
            bare.returncode,
            bare.stdout,
            bare.stderr,
        )
        assert "'--'" in bare.stdout or "--" not in arguments


def test_run_of_pytest_gets_the_command_line_bare_pytest_gets(tmp_path: Path) -> None:
    """``-- -k x``: what pytest makes of it, traced as bare (``--`` included)."""
    (tmp_path / "test_one.py").write_text("def test_x():\n    pass\n")
    shows = "def pytest_configure(config):\n    print('args', config.invocation_params.args)\n"
    (tmp_path / "conftest.py").write_text(shows)
    outputs = []
    for launcher in ([sys.executable], [sys.executable, "-m", "tracedpolicy", "run"]):
        command = [*launcher, "-m", "pytest", "--", "-k", "nothing"]
        env = {**os.environ, "PYTEST_ADDOPTS": "-p no:cacheprovider"}
        done = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
        )
        timeless = re.sub(r" in [0-9.]+s ", " in Ts ", done.stdout)
        outputs.append((done.returncode, timeless, done.stderr))
    assert outputs[0] == outputs[1]
    assert "args ('--', '-k', 'nothing')" in outputs[0][1]


def at_a_terminal(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run ``command`` with its stderr (and stdin, stdout) on a pseudo-terminal: its output."""
    import pty

    primary, secondary = pty.openpty()
    try:
        process = subprocess.Popen(
            command,
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env={**os.environ, **env},
            cwd=cwd,
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: every end of the terminal is closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        return process.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n")
    finally:
        os.close(primary)


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal is POSIX")
def test_run_at_a_terminal_says_in_one_line_what_is_on_and_where_to_look(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("print('app ran')\n")
    command = [sys.executable, "-m", "tracedpolicy", "run", "app.py"]
    code, shown = at_a_terminal(command, {}, tmp_path)
    assert code == 0
    banner, ran = shown.splitlines()
    assert ran == "app ran"
    assert banner == (
        "tracedpolicy: tracing every event loop of app.py; loop health off"
        " (TRACEDPOLICY_HEALTH=1); no /metrics (TRACEDPOLICY_METRICS_PORT=9464 serves one)"
        " (TRACEDPOLICY_QUIET=1 hides this line)"
    )
    env = {"TRACEDPOLICY_HEALTH": "1", "TRACEDPOLICY_METRICS_PORT": "0"}
    code, shown = at_a_terminal([*command[:-1], "-m", "app"], env, tmp_path)
    lines = shown.splitlines()
    assert code == 0 and lines[0] == (
        "tracedpolicy: tracing every event loop of -m app; loop health on; /metrics and /loops"
        " on 127.0.0.1:any free port (TRACEDPOLICY_QUIET=1 hides this line)"
    )
    assert lines[1].startswith("tracedpolicy: metrics on http://127.0.0.1:") and lines[2:] == [
        "app ran"
    ]
    code, shown = at_a_terminal(command, {"TRACEDPOLICY_QUIET": "1"}, tmp_path)
    assert (code, shown) == (0, "app ran\n")


def test_run_help_names_every_variable_and_the_help_is_plain_text() -> None:
    from tracedpolicy.base.options import VARIABLES

    top = tracedpolicy_command("--help")
    assert top.returncode == 0
    assert top.stdout.splitlines()[0] == "usage: python -m tracedpolicy [-h] {run,demo,report} ..."
    help_text = tracedpolicy_command("run", "--help")
    assert help_text.returncode == 0
    for name in VARIABLES:
        assert f"\n  {name} " in help_text.stdout
    demo_help = tracedpolicy_command("demo", "--help").stdout
    assert "Worker threads make, set, hit, miss and leak event loops" in demo_help
    for text in (top.stdout, help_text.stdout, demo_help):
        assert "``" not in text and ":func:" not in text and ":mod:" not in text


def test_a_misspelt_variable_is_said_once_with_the_closest_name(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("import asyncio\nasyncio.run(asyncio.sleep(0))\nprint('ok')\n")
    done = tracedpolicy_command("run", "app.py", env={"TRACEDPOLICY_HELTH": "1"}, cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "ok\n")
    assert done.stderr == (
        "tracedpolicy: unknown environment variable TRACEDPOLICY_HELTH is ignored;"
        " did you mean TRACEDPOLICY_HEALTH?\n"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="console scripts are .exe files there")
def test_run_of_a_console_script_runs_it_as_the_shell_would(tmp_path: Path) -> None:
    """``run uvicorn app:app``, as ``opentelemetry-instrument uvicorn app:app`` teaches."""
    pytest.importorskip("uvicorn")
    path = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    bare = subprocess.run(
        ["uvicorn", "--version"], capture_output=True, text=True, env={**os.environ, **path}
    )
    traced = tracedpolicy_command("run", "uvicorn", "--version", env=path, cwd=tmp_path)
    assert bare.returncode == 0 and "uvicorn" in bare.stdout
    assert (traced.returncode, traced.stdout, traced.stderr) == (0, bare.stdout, bare.stderr)


def test_run_of_a_module_named_as_a_file_says_what_was_meant(tmp_path: Path) -> None:
    done = tracedpolicy_command("run", "json.tool", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "tracedpolicy run: no file 'json.tool', but a module of that name: run it with -m"
        " (python -m tracedpolicy run -m json.tool)\n"
    )


@pytest.mark.parametrize("given", ["{port}", "127.0.0.1:{port}", "http://127.0.0.1:{port}/"])
def test_report_takes_a_port_or_an_address_and_ignores_this_processs_variables(
    given: str,
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    done = tracedpolicy_command(
        "report", given.format(port=port), env={"TRACEDPOLICY_METRICS_PORT": "http"}
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        f"tracedpolicy report: could not read http://127.0.0.1:{port}/loops: "
    )


def test_report_of_something_not_an_address_is_one_line() -> None:
    done = tracedpolicy_command("report", "ftp://host")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("tracedpolicy report: expected an http URL with a port")
