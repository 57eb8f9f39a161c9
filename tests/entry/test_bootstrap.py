"""`run`'s bootstrap: the flags the program gets, free until asyncio, every loop seen, the roles."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tracedpolicy

#: The folder tracedpolicy is imported from, for launchers whose flags hide PYTHONPATH.
ROOT = str(Path(tracedpolicy.__file__).resolve().parent.parent)

INTERLEAVED = """
import sys
import time
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
import time
sys.path.insert(0, {ROOT!r})
from tracedpolicy.entry.cli import main
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


def run_traced(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracedpolicy", "run", str(script), *args],
        capture_output=True,
        text=True,
        env={**buffered_environment(), **(env or {})},
        timeout=120,
    )


COUNTS = """
def made():
    import tracedpolicy
    counts = tracedpolicy.snapshot().values()
    return tracedpolicy.instrumented(), sum(c["loops.created"] for c in counts)
"""

FREE_UNTIL_ASYNCIO = f"""
import subprocess, sys
{COUNTS}
print("before", "tracedpolicy" in sys.modules)
print("child", subprocess.run([sys.executable, "-c",
      "import sys; print('tracedpolicy' in sys.modules)"], capture_output=True,
      text=True).stdout.strip())
import asyncio.events  # a submodule first: asyncio itself is imported on the way
asyncio.run(asyncio.sleep(0))
print("after", made())
"""


def test_a_process_that_does_not_import_asyncio_does_not_load_tracedpolicy(
    tmp_path: Path,
) -> None:
    script = tmp_path / "app.py"
    script.write_text(FREE_UNTIL_ASYNCIO)
    done = run_traced(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["before False", "child False", "after (True, 1)"]


APPS_SITECUSTOMIZE = """
import asyncio
early = asyncio.new_event_loop()  # made by the application's sitecustomize, at start-up
"""

# The same, through a finder of its own put ahead of every other (one that the bootstrap's
# finder never hears of asyncio from).
APPS_SITECUSTOMIZE_WITH_ITS_FINDER = """
import sys, importlib.machinery

class Finder:
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.PathFinder.find_spec(name, path) if name == "asyncio" else None

sys.meta_path.insert(0, Finder())
import asyncio
"""

SEES_THE_EARLY_LOOP = f"""
import asyncio, sys
{COUNTS}
early = getattr(sys.modules["sitecustomize"], "early", None)
if early is not None:
    early.close()
asyncio.run(asyncio.sleep(0))
print(made())
"""


OURS_FIRST = f"""
{COUNTS}
import tracedpolicy.records.loops  # imports asyncio as it loads: the first import is ours
import asyncio
asyncio.run(asyncio.sleep(0))
print(made())
"""


@pytest.mark.parametrize(
    "first", ["tracedpolicy.records.loops", "tracedpolicy.entry.pytest_plugin"]
)
def test_the_mode_starts_whole_when_a_module_of_ours_imports_asyncio_first(
    first: str, tmp_path: Path
) -> None:
    """As when pytest loads our plugin before anything imports asyncio: the mode must not
    start inside our half-run module (a circular import, and the program untraced)."""
    script = tmp_path / "ours_first.py"
    script.write_text(OURS_FIRST.replace("tracedpolicy.records.loops", first, 1))
    done = run_traced(script)
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout.strip() == "(True, 1)"


@pytest.mark.parametrize(
    "sitecustomize, expected",
    [
        (APPS_SITECUSTOMIZE, "(True, 2)"),  # its loop too, made as the hook had just acted
        (APPS_SITECUSTOMIZE_WITH_ITS_FINDER, "(True, 1)"),
    ],
    ids=["apps-sitecustomize-imports-asyncio", "apps-sitecustomize-with-its-own-finder"],
)
def test_the_mode_sees_the_loops_of_a_program_whose_sitecustomize_imported_asyncio(
    sitecustomize: str, expected: str, tmp_path: Path
) -> None:
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text(sitecustomize)
    script = tmp_path / "app.py"
    script.write_text(SEES_THE_EARLY_LOOP)
    done = run_traced(script, env={"PYTHONPATH": str(own)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_the_mode_starts_at_once_where_asyncio_was_imported_before_the_bootstrap(
    tmp_path: Path,
) -> None:
    """As a ``.pth`` file that imports asyncio would: the bootstrap finds it imported."""
    from tracedpolicy.entry import bootstrap

    code = (
        "import asyncio, runpy\n"
        f"runpy.run_path({os.path.join(bootstrap.FOLDER, 'sitecustomize.py')!r})\n"
        f"{COUNTS}\n"
        "asyncio.new_event_loop().close()\n"
        "print(made())\n"
    )
    env = {**os.environ, bootstrap.TRACEDPOLICY_BOOTSTRAP: bootstrap.MAIN}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(True, 1)"


REEXECS = """
import asyncio, os, sys, tracedpolicy
asyncio.run(asyncio.sleep(0))
server = tracedpolicy.metrics_server()
print(sys.argv[1:], "serves", server is not None, flush=True)
if not sys.argv[1:]:
    os.execv(sys.executable, [sys.executable, __file__, "again"])
"""


def test_a_program_that_execs_itself_keeps_its_server_and_its_report(tmp_path: Path) -> None:
    script = tmp_path / "reexecs.py"
    script.write_text(REEXECS)
    env = {"TRACEDPOLICY_METRICS_PORT": "0", "TRACEDPOLICY_REPORT_AT_EXIT": "1"}
    done = run_traced(script, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[] serves True", "['again'] serves True"]
    assert done.stderr.count("tracedpolicy: metrics on http://127.0.0.1:") == 2
    assert done.stderr.count("tracedpolicy at exit: 1 event loop made, 1 closed, 0 leaked") == 1


DAEMON = """
import asyncio, os, sys, time, tracedpolicy
asyncio.run(asyncio.sleep(0))
if os.fork():
    os._exit(0)  # the parent goes
os.setsid()
if os.fork():
    os._exit(0)
asyncio.run(asyncio.sleep(0))  # the daemon
made = sum(c["loops.created"] for c in tracedpolicy.snapshot().values())
with open(sys.argv[1], "w") as out:
    out.write(f"{tracedpolicy.instrumented()} {tracedpolicy.metrics_server()} {made}")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_daemon_keeps_tracing_without_the_first_process_s_server(tmp_path: Path) -> None:
    """What the README promises a daemon: its loops traced, no server (it was the parent's)."""
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    said = tmp_path / "said"
    done = run_traced(script, str(said), env={"TRACEDPOLICY_METRICS_PORT": "0"})
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 60
    while not (said.exists() and said.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert said.read_text() == "True None 2"


def old_pythons() -> list[str]:
    """Pythons this package cannot serve: pyenv's 2.7 and 3.6, where installed."""
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    found = []
    for version in ("2.7", "3.6"):
        matches = sorted(Path(root or "/nonexistent", "versions").glob(f"{version}.*/bin/python"))
        if matches:
            found.append(str(matches[-1]))
    return found


STARTS_AN_OLD_PYTHON = """
import subprocess, sys
done = subprocess.run([sys.argv[1], "-c", "import sys; print(sys.version_info[0])"],
                      capture_output=True, text=True)
print(repr(done.stdout), repr(done.stderr), done.returncode)
"""


@pytest.mark.parametrize("version", ["2.7", "3.6"])
def test_an_older_python_a_program_starts_finds_the_bootstrap_inert(
    version: str, tmp_path: Path
) -> None:
    pythons = [p for p in old_pythons() if f"/{version}." in p]
    if not pythons:
        pytest.skip(f"no Python {version} here")
    own = tmp_path / "own"
    own.mkdir()
    (own / "sitecustomize.py").write_text("import sys\nsys.stdout.write('own sitecustomize\\n')\n")
    script = tmp_path / "app.py"
    script.write_text(STARTS_AN_OLD_PYTHON)
    env = {"PYTHONPATH": str(own), "PYTHONDONTWRITEBYTECODE": "1"}  # no .pyc of 2.7 in the package
    done = run_traced(script, pythons[0], env=env)
    assert done.returncode == 0, done.stderr
    major = version.split(".")[0]
    assert done.stdout.splitlines()[-1] == f"'own sitecustomize\\n{major}\\n' '' 0"
