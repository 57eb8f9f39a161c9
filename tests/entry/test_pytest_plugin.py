"""The pytest plugin, run for real with pytester (and the real pytest-asyncio)."""

from __future__ import annotations

import pytest
import pytest_asyncio.plugin

HAS_FACTORY_HOOK = hasattr(pytest_asyncio.plugin, "PytestAsyncioSpecs")

LEAKY = """
import asyncio


def test_clean():
    loop = asyncio.new_event_loop()
    loop.close()


def test_leaky():
    global kept
    kept = asyncio.new_event_loop()  # LEAK


def test_drops_an_unclosed_loop():
    asyncio.new_event_loop()  # DROPPED
"""


def line(source: str, marker: str) -> int:
    """The line of ``marker`` in the file pytester writes (it drops the leading newline)."""
    lines = source.lstrip("\n").splitlines()
    return next(n for n, text in enumerate(lines, 1) if f"# {marker}" in text)


def test_off_by_default_a_leaky_test_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaks=LEAKY)
    result = pytester.runpytest_subprocess("-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=3)


def test_a_leaky_test_fails_naming_its_line_and_a_clean_one_passes(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_leaks=LEAKY)
    result = pytester.runpytest_subprocess("--loop-leaks", "-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaky*",
            "test_leaks.py::test_leaky left 1 unclosed event loop(s) (tracedpolicy --loop-leaks):",
            f"  *SelectorEventLoop #* made at test_leaks.py:{line(LEAKY, 'LEAK')} in test_leaky, "
            "thread 'MainThread', still open",
            "*ERROR at teardown of test_drops_an_unclosed_loop*",
            f"  *made at test_leaks.py:{line(LEAKY, 'DROPPED')} in test_drops_an_unclosed_loop, "
            "thread 'MainThread', leaked: gc_unclosed",
        ]
    )
    assert "test_clean left" not in result.stdout.str()


def test_warn_mode_warns_instead(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaks=LEAKY)
    pytester.makeini("[pytest]\nloop_leaks = warn\n")
    result = pytester.runpytest_subprocess("-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=3, warnings=2)
    result.stdout.fnmatch_lines(["*LoopLeakWarning: test_leaks.py::test_leaky left 1 unclosed*"])


@pytest.mark.parametrize(
    ("arguments", "outcomes"),
    [
        (["--loop-leaks", "tests/"], {"passed": 3, "errors": 2}),  # the path is not swallowed
        (["tests/", "--loop-leaks"], {"passed": 3, "errors": 2}),
        (["--loop-leaks=fail", "tests/"], {"passed": 3, "errors": 2}),
        (["--loop-leaks=warn", "tests/"], {"passed": 3, "warnings": 2}),
        (["--loop-leaks=off", "tests/"], {"passed": 3}),
    ],
)
def test_the_flag_works_wherever_it_stands(
    pytester: pytest.Pytester, arguments: list[str], outcomes: dict[str, int]
) -> None:
    pytester.mkdir("tests")
    (pytester.path / "tests" / "test_leaks.py").write_text(LEAKY.lstrip("\n"))
    pytester.makepyfile(test_elsewhere="def test_not_collected():\n    raise AssertionError\n")
    result = pytester.runpytest_subprocess(*arguments, "-W", "ignore::ResourceWarning")
    result.assert_outcomes(**outcomes)


def test_a_bad_mode_on_the_command_line_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--loop-leaks=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--loop-leaks*sometimes*"])


def test_a_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaks=LEAKY)
    pytester.makeini("[pytest]\nloop_leaks = sometimes\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*ini option loop_leaks is 'sometimes'; accepted: off, fail, warn*"]
    )


ASYNC_TESTS = """
import asyncio
import pytest


@pytest.mark.asyncio
async def test_async_clean():
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_async_leaky():
    global kept
    kept = asyncio.new_event_loop()  # ASYNC-LEAK
"""


def test_pytest_asyncio_tests_keep_passing_and_leaks_are_still_found(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_async=ASYNC_TESTS)
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("--loop-leaks", "-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [f"  *made at test_async.py:{line(ASYNC_TESTS, 'ASYNC-LEAK')} in test_async_leaky, *"]
    )
    assert "test_async_clean left" not in result.stdout.str()


CUSTOM_POLICY = """
import asyncio
import pytest
import tracedpolicy


class MyPolicy(asyncio.DefaultEventLoopPolicy):
    pass


@pytest.fixture(scope="session")
def event_loop_policy():
    return MyPolicy()


@pytest.mark.asyncio
async def test_runs_under_the_traced_custom_policy():
    policy = asyncio.get_event_loop_policy()
    assert tracedpolicy.is_traced(policy) and isinstance(policy, MyPolicy)


@pytest.mark.asyncio
async def test_its_leak_is_found():
    global kept
    kept = asyncio.new_event_loop()  # CUSTOM-LEAK
"""


def test_an_overriding_event_loop_policy_fixture_is_traced(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_custom=CUSTOM_POLICY)
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess(
        "--loop-leaks", "-W", "ignore::ResourceWarning", "-W", "ignore::DeprecationWarning"
    )
    result.assert_outcomes(passed=2, errors=1)
    leak_line = line(CUSTOM_POLICY, "CUSTOM-LEAK")
    result.stdout.fnmatch_lines(
        [f"  *made at test_custom.py:{leak_line} in test_its_leak_is_found, *"]
    )


FACTORY_HOOK = """
import asyncio
import pytest
import tracedpolicy


def pytest_asyncio_loop_factories(config, item):
    return {"selector": asyncio.SelectorEventLoop}
"""

FACTORY_TESTS = """
import asyncio
import pytest
import tracedpolicy


@pytest.mark.asyncio
async def test_runs_on_a_traced_factory_loop():
    loop = asyncio.get_running_loop()
    assert tracedpolicy.loops.REGISTRY.knows(loop)
"""


@pytest.mark.skipif(not HAS_FACTORY_HOOK, reason="this pytest-asyncio has no loop-factory hook")
def test_loop_factories_from_the_pytest_asyncio_hook_are_traced(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(FACTORY_HOOK)
    pytester.makepyfile(test_factory=FACTORY_TESTS)
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    result = pytester.runpytest_subprocess("--loop-leaks", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=1)


SESSION_FIXTURE = """
import asyncio
import pytest


@pytest.fixture(scope="session")
def shared_loop():
    loop = asyncio.new_event_loop()  # SESSION
    yield loop


def test_uses_the_shared_loop(shared_loop):
    assert not shared_loop.is_closed()
"""


def test_a_wider_scoped_fixture_loop_is_reported_at_the_end_not_on_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_session=SESSION_FIXTURE)
    result = pytester.runpytest_subprocess("--loop-leaks", "-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*event loops left open at the end of the session*",
            f"  *made at test_session.py:{line(SESSION_FIXTURE, 'SESSION')} in shared_loop, *",
        ]
    )


CYCLIC_OWNER = """
import asyncio
import gc


class Client:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.on_done = self.close_soon  # a bound method on itself: a reference cycle

    def close_soon(self):
        pass

    def __del__(self):
        self.loop.close()


def test_client():
    gc.disable()  # see the test below
    try:
        client = Client()
        assert not client.loop.is_closed()
    finally:
        gc.enable()
"""


def test_a_loop_closed_by_its_cyclic_owners_del_is_no_leak(pytester: pytest.Pytester) -> None:
    """The collection clears the loop's weakref before it runs the owner's ``__del__``.

    A collection finalizes a garbage cycle's objects in the order they sit in its lists. An
    automatic collection between the owner's allocation and its loop's can put the loop (a
    cycle of its own, through its self-pipe's handler) first; asyncio's own ``__del__`` then
    warns "unclosed event loop", bare as traced (seen on 3.9). The test's owner and loop are
    made with automatic collection off, so the plugin's collection at teardown finds the owner
    first, as it would wherever no collection came between.
    """
    pytester.makepyfile(test_cyclic_owner=CYCLIC_OWNER)
    result = pytester.runpytest_subprocess("--loop-leaks=fail", "-W", "error::ResourceWarning")
    result.assert_outcomes(passed=1)


LOGS_OPEN_AFTER_CLOSE = """
import tracedpolicy


def log_open_after_close(event):
    if event.kind == "loop_closed":
        print("open loops:", len(tracedpolicy.open_loops()))


tracedpolicy.add_observer(log_open_after_close)
"""

LEAK_THEN_CLOSE = """
import asyncio
import gc


def test_leaks_then_closes_another():
    other = asyncio.new_event_loop()
    asyncio.new_event_loop()  # dropped unclosed
    gc.collect()
    other.close()
"""


def test_a_leak_a_projects_observer_flushes_still_fails_the_test(
    pytester: pytest.Pytester,
) -> None:
    """The project's observer reads the counts on each close, flushing the queued leak."""
    pytester.makeconftest(LOGS_OPEN_AFTER_CLOSE)
    pytester.makepyfile(test_leaks=LEAK_THEN_CLOSE)
    result = pytester.runpytest_subprocess("--loop-leaks=fail", "-W", "ignore::ResourceWarning")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*leaked: gc_unclosed*"])
