"""Running the multi-process scripts, and reading a scrape: the steps the tests share."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tracedpolicy.base.options import TRACEDPOLICY_MULTIPROC_DIR


def run_python(
    source: str,
    *arguments: str,
    flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python [flags] -c source [arguments]`` with this interpreter; the outcome is the
    caller's to check."""
    return subprocess.run(
        [sys.executable, *flags, "-c", source, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def outside_any_fleet(**extra: str) -> dict[str, str]:
    """This environment with ``extra`` and neither multi-process directory: the processes
    started with it make a fleet of their own."""
    env = {**os.environ, **extra}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop(TRACEDPOLICY_MULTIPROC_DIR, None)
    return env


def run_script(
    folder: Path,
    name: str,
    source: str,
    *arguments: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    traced: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Write ``source`` as ``folder/name`` and run it there (under ``python -m tracedpolicy
    run`` if ``traced``), which must succeed; its output is the caller's to parse."""
    (folder / name).write_text(source)
    launcher = ["-m", "tracedpolicy", "run"] if traced else []
    done = subprocess.run(
        [sys.executable, *launcher, name, *arguments],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy() if env is None else env,
    )
    assert done.returncode == 0, done.stderr
    return done


def scrape(url: str) -> dict[str, float]:
    """Each metric's samples at ``url``, summed over label sets."""
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


#: Python source for scripts that fork under threads: ``fork_each(forks, child, deadline)``
#: forks ``forks`` times, one at a time; each child runs ``child()`` and exits with the code it
#: returns (1 if it raised). Returns (hung, failed): children killed after ``deadline`` seconds,
#: children that exited non-zero. The script imports os, signal and time.
FORK_EACH = """
def fork_each(forks, child, deadline):
    hung = failed = 0
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = child()
            finally:
                os._exit(code)
        ends = time.monotonic() + deadline
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                failed += status != 0
                break
            if time.monotonic() > ends:
                hung += 1
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.001)
    return hung, failed
"""
