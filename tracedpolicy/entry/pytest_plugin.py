"""pytest plugin: a test that leaves unclosed event loops behind fails, naming where they came from.

Off unless asked for: ``pytest --loop-leaks`` (or ``--loop-leaks=warn``), or ``loop_leaks = fail``
(``warn``, ``off``) in the ini file. When on, the process-wide policy is traced for the session,
and after each test's teardown the loops made by its body or its function-scoped fixtures that
are still open, or that leaked meanwhile, fail the test (``fail``) or warn (``warn``), each named
with its creation site. Loops of wider-scoped fixtures are left to their own teardown and are
reported at the end of the session if they outlive it.

Works alongside pytest-asyncio: its default ``event_loop_policy`` fixture hands out the traced
process-wide policy, a policy that an overriding fixture returns is traced, and loop factories
from the ``pytest_asyncio_loop_factories`` hook are wrapped with :func:`tracedpolicy.loop_factory`
(both by tracing the value of the pytest-asyncio fixture that carries them).
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Generator
from typing import Any, Callable

import pytest

import tracedpolicy
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.record import LoopRecord
from tracedpolicy.records.sites import printable

MODES = ("off", "fail", "warn")


class LoopLeakWarning(UserWarning):
    """A test left unclosed event loops behind (``--loop-leaks=warn``)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tracedpolicy", "event loop leaks (tracedpolicy)")
    # A flag, as pytest's own: an optional value would swallow the path after it
    # (``pytest --loop-leaks tests/``). The explicit forms are options of their own, which
    # argparse matches whole before it splits at "=".
    group.addoption(
        "--loop-leaks",
        action="store_const",
        const="fail",
        dest="loop_leaks",
        default=None,
        help="fail a test that leaves unclosed event loops (as --loop-leaks=fail)",
    )
    for mode in MODES:
        group.addoption(
            f"--loop-leaks={mode}",
            action="store_const",
            const=mode,
            dest="loop_leaks",
            help=f"{mode}: the mode for tests that leave unclosed event loops",
        )
    parser.addini("loop_leaks", "off, fail or warn: the mode without --loop-leaks", default="off")


def pytest_configure(config: pytest.Config) -> None:
    mode = config.getoption("loop_leaks") or str(config.getini("loop_leaks")).strip().lower()
    if mode not in MODES:
        raise pytest.UsageError(f"ini option loop_leaks is {mode!r}; accepted: {', '.join(MODES)}")
    if mode != "off":
        config.pluginmanager.register(LoopLeakChecker(config, mode), "tracedpolicy-loop-leaks")


class LoopLeakChecker:
    """Marks loop ids around each test's body and function-scoped fixtures, then checks them."""

    def __init__(self, config: pytest.Config, mode: str) -> None:
        self.config = config
        self.mode = mode
        self.ranges: list[tuple[int, int]] = []
        self.session_start = 0
        #: Leaked loops that were garbage-collected: their records left the registry.
        self.collected_leaks: list[LoopRecord] = []
        #: Loops a test was already told about, so the session summary does not repeat them.
        self.reported: set[int] = set()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        tracedpolicy.instrument(prometheus=False)
        tracedpolicy.add_observer(self._remember_collected_leak)
        self.session_start = REGISTRY.last_id()

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        gc.collect()
        left = [
            r for r in self._unclosed_since(self.session_start) if r.loop_id not in self.reported
        ]
        if left:
            session.config.stash[_LEFT_AT_END] = left
        tracedpolicy.remove_observer(self._remember_collected_leak)
        tracedpolicy.uninstrument()

    def _remember_collected_leak(self, event: tracedpolicy.PolicyEvent) -> None:
        if event.kind == "loop_leaked" and event.record is not None and event.record.loop is None:
            self.collected_leaks.append(event.record)

    def _unclosed_since(self, loop_id: int) -> list[LoopRecord]:
        """Loops newer than ``loop_id`` that are open, or that leaked since it."""
        REGISTRY.flush()
        collected, self.collected_leaks = self.collected_leaks, []
        return [
            r
            for r in REGISTRY.records() + collected
            if r.loop_id > loop_id and r.tracked and not r.closed and not r.inherited
        ]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, None]:
        before = REGISTRY.last_id()
        outcome = yield
        if fixturedef.scope == "function":
            self.ranges.append((before, REGISTRY.last_id()))
        if outcome.excinfo is None and fixturedef.argname in _TRACED_FIXTURES:
            _trace_fixture_value(fixturedef, outcome, _TRACED_FIXTURES[fixturedef.argname])

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, None]:
        before = REGISTRY.last_id()
        yield
        self.ranges.append((before, REGISTRY.last_id()))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        if call.when != "teardown":
            return
        ranges, self.ranges = self.ranges, []
        gc.collect()  # an unclosed loop dropped by the test is a leak now, not at some later GC
        oldest = min((start for start, _ in ranges), default=REGISTRY.last_id())
        leaks = [
            r for r in self._unclosed_since(oldest) if _in(r, ranges) and not _made_by_tooling(r)
        ]
        if not leaks:
            return
        self.reported.update(r.loop_id for r in leaks)
        message = _describe(item.nodeid, leaks, str(self.config.rootpath))
        report = outcome.get_result()
        if self.mode == "fail" and report.outcome == "passed":
            report.outcome = "failed"
            report.longrepr = message
        else:
            item.warn(LoopLeakWarning(message))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        left = self.config.stash.get(_LEFT_AT_END, [])
        if left:
            terminalreporter.section("event loops left open at the end of the session")
            terminalreporter.write_line(_describe("the session", left, str(self.config.rootpath)))


_LEFT_AT_END = pytest.StashKey[list[LoopRecord]]()


def _tooling_dirs() -> tuple[str, ...]:
    """Where pytest and its plugins live: a loop they make is not the test's to close."""
    dirs = []
    for name in ("_pytest", "pluggy", "pytest_asyncio"):
        filename = getattr(sys.modules.get(name), "__file__", None)
        if filename:
            dirs.append(os.path.dirname(os.path.abspath(filename)) + os.sep)
    return tuple(dirs)


def _made_by_tooling(record: LoopRecord) -> bool:
    # pytest-asyncio before 1.3 calls asyncio.get_event_loop() in its fixtures, which makes a
    # loop implicitly on 3.9-3.13; it is reported at the end of the session if left open.
    site = record.site
    return site is not None and os.path.abspath(site.filename).startswith(_tooling_dirs())


def _in(record: LoopRecord, ranges: list[tuple[int, int]]) -> bool:
    return any(start < record.loop_id <= end for start, end in ranges)


def _describe(who: str, records: list[LoopRecord], root: str) -> str:
    lines = [f"{who} left {len(records)} unclosed event loop(s) (tracedpolicy --loop-leaks):"]
    for record in sorted(records, key=lambda r: r.loop_id):
        site = "an unknown site"
        if record.site is not None:
            filename = record.site.filename
            if filename.startswith(root + os.sep):
                filename = os.path.relpath(filename, root)
            site = printable(f"{filename}:{record.site.lineno} in {record.site.function}")
        state = f"leaked: {record.leaked}" if record.leaked else "still open"
        lines.append(
            f"  {record.loop_class} #{record.loop_id} made at {site}, "
            f"thread {record.thread_name!r}, {state}"
        )
    return "\n".join(lines)


def _traced_policy(policy: Any) -> Any:
    return policy if tracedpolicy.is_traced(policy) else tracedpolicy.traced(policy)


def _traced_factory(factory: Any) -> Any:
    return factory if factory is None else tracedpolicy.loop_factory(factory)


#: pytest-asyncio's fixtures whose values make loops: the policy fixture users override, and
#: the (private) fixture that carries a loop factory from the pytest_asyncio_loop_factories hook.
_TRACED_FIXTURES: dict[str, Callable[[Any], Any]] = {
    "event_loop_policy": _traced_policy,
    "_asyncio_loop_factory": _traced_factory,
}


def _trace_fixture_value(fixturedef: Any, outcome: Any, trace: Callable[[Any], Any]) -> None:
    """Replace a fixture's value with its traced twin, in pytest's cache too.

    ``cached_result`` is ``(value, cache_key, exc_info)`` in the pytest versions supported; if
    it is not, the value is left alone (the loops then go untraced, which hides nothing else).
    """
    value = outcome.get_result()
    cached = getattr(fixturedef, "cached_result", None)
    if not isinstance(cached, tuple) or not cached or cached[0] is not value:
        return
    traced = trace(value)
    if traced is not value:
        fixturedef.cached_result = (traced, *cached[1:])
        outcome.force_result(traced)
