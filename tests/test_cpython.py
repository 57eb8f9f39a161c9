"""CPython's own asyncio tests for runners and policies pass with the whole-process mode on.

They run in a subprocess under ``python -m tracedpolicy run -m test``, CPython's own test
runner, which also checks that no test changed the process's asyncio state (the policy global
included). They need CPython's test package: pyenv builds have it, Debian ships it as
``libpython3.X-testsuite``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

TESTS = ("test_asyncio.test_runners", "test_asyncio.test_events")
#: With loop health on, asyncio's event loop tests as well: the probe, the timed wait and the
#: run hook must change nothing they check.
HEALTH_TESTS = (*TESTS, "test_asyncio.test_base_events")
REGRTEST_OPTIONS = ("--fail-env-changed", "--timeout", "120")

#: Runs the command after it with SIGINT's default disposition. Some of CPython's tests
#: interrupt themselves (``_thread.interrupt_main()``) and wait for the KeyboardInterrupt, which
#: never comes where SIGINT is ignored: a suite started in the background, under nohup, or by
#: some CI runners. An ignored signal stays ignored across exec, a default one stays default.
WITH_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL);"
    " os.execv(sys.argv[1], sys.argv[1:])"
)
LAUNCHER = (sys.executable, "-m", "tracedpolicy", "run", "-m", "test")


@pytest.mark.skipif(
    importlib.util.find_spec("test.test_asyncio") is None,
    reason="CPython's test package is not installed (Debian: libpython3.X-testsuite)",
)
@pytest.mark.parametrize("health", [False, True], ids=["traced", "traced with loop health"])
def test_cpythons_runner_and_policy_tests_pass_with_every_loop_traced(health: bool) -> None:
    tests = HEALTH_TESTS if health else TESTS
    done = subprocess.run(
        # --timeout: a test that hangs dumps every thread's stack and fails, instead of hanging.
        [sys.executable, "-c", WITH_SIGINT_DEFAULT, *LAUNCHER, *REGRTEST_OPTIONS, *tests],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TRACEDPOLICY_HEALTH": "1" if health else "0"},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "SUCCESS" in done.stdout


def test_cpythons_tests_get_sigints_default_handler_even_where_it_is_ignored() -> None:
    """Where SIGINT is ignored, test_asyncio_run_without_uncancel interrupts itself in vain and
    spins until its timeout, its memory growing by gigabytes (bare CPython, measured)."""
    shows = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    ignoring = (
        "import signal, subprocess, sys; signal.signal(signal.SIGINT, signal.SIG_IGN);"
        " sys.exit(subprocess.call(sys.argv[1:]))"
    )
    outputs = []
    for wrapper in ((), (sys.executable, "-c", WITH_SIGINT_DEFAULT)):
        command = [sys.executable, "-c", ignoring, *wrapper, sys.executable, "-c", shows]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        outputs.append(done.stdout)
    assert outputs == ["False\n", "True\n"]
