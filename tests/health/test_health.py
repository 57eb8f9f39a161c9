"""Loop health: delay, utilization, blocking callbacks and tasks, found on real loops blocked for
a known time, in the loop's own thread and in a worker thread, for asyncio's loop and uvloop.

Tolerances: the probe runs every 10 ms, so a block of 0.3 s shows as one probe between 0.25 and
0.5 s late (a loaded machine may delay others a little, never that much); the blocked span lasts
the block within [-20, +60] ms; a loop busy 1.2 s of 2.4 s shows 1.2 s active within 120 ms.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tracedpolicy
from tracedpolicy.base.options import Options
from tracedpolicy.exporters.telemetry import configure as configure_telemetry
from tracedpolicy.health import monitor as health
from tracedpolicy.health import probe

from ..asgi import asgi_app
from ..conftest import Telemetry
from ..test_servers import free_port, serve

BLOCK = 0.3
THRESHOLD = 0.1
SLACK = 0.06


def loop_makers() -> list[Any]:
    makers: list[Any] = [pytest.param(asyncio.SelectorEventLoop, id="asyncio")]
    try:
        import uvloop

        makers.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    except ImportError:  # pragma: no cover - uvloop is a test dependency where it builds
        pass
    return makers


#: The health options as every test finds them (a later call changes only what it passes).
DEFAULT_HEALTH = {"health": False, "health_resolution": 0.01, "blocking_threshold": 0.1}


@pytest.fixture(autouse=True)
def health_off_afterwards() -> Iterator[None]:
    yield
    configure_telemetry(Options.parse("tests", DEFAULT_HEALTH), DEFAULT_HEALTH)
    health.reset_for_tests()


def watched_factory(base: Any, label: str, **options: Any) -> Any:
    return tracedpolicy.loop_factory(
        base, label=label, health=True, blocking_threshold=THRESHOLD, **options
    )


def labels_of(label: str) -> dict[str, Any]:
    """The health totals of the loops made by the factory labelled ``label``."""
    found = {key: value for key, value in health.totals().items() if key[1] == label}
    assert len(found) == 1, found
    return next(iter(found.values())).__dict__


async def blocking_then_idle(block: float, idle: float) -> None:
    await asyncio.sleep(0.05)  # the probe is running
    time.sleep(block)  # holds the loop: what every blocking call does
    await asyncio.sleep(idle)


def run_in(thread: bool, body: Callable[[], None]) -> None:
    if not thread:
        body()
        return
    worker = threading.Thread(target=body)
    worker.start()
    worker.join(30)
    assert not worker.is_alive()


@pytest.mark.parametrize("make", loop_makers())
@pytest.mark.parametrize("thread", [False, True], ids=["own thread", "worker thread"])
def test_a_blocked_loop_shows_its_delay_and_one_blocking_callback(
    make: Any, thread: bool, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    label = f"tests.health.blocked.{thread}"
    factory = watched_factory(make, label)

    def body() -> None:
        loop = factory()
        try:
            loop.run_until_complete(blocking_then_idle(BLOCK, 0.2))
        finally:
            loop.close()

    with caplog.at_level(logging.WARNING, logger="tracedpolicy"):
        run_in(thread, body)
    totals = labels_of(label)
    delay = totals["delay"].snapshot()
    counts = dict(zip(delay.bounds, delay.cumulative_counts))
    assert delay.total - counts[0.25] == 1  # one probe ran more than 0.25 s late: the block
    assert counts[0.5] == delay.total  # and none more than 0.5 s
    assert totals["blocked"] == 1
    lines = [r.getMessage() for r in caplog.records if "held for over" in r.getMessage()]
    assert len(lines) == 1
    assert "test_health.py" in lines[0] and "in blocking_then_idle" in lines[0]
    assert "(blocking_then_idle)" in lines[0]  # the task stepping
    spans = [s for s in telemetry.exporter.get_finished_spans() if s.name.endswith("blocked")]
    assert len(spans) == 1
    (span,) = spans
    assert span.end_time is not None and span.start_time is not None
    held = (span.end_time - span.start_time) / 1e9
    assert held >= BLOCK - 0.02  # the hold, at least (it ends at the watchdog's next look)
    (event,) = span.events
    assert event.name == "blocked"
    assert "in blocking_then_idle" in str((event.attributes or {})["code.stacktrace"])


def test_utilization_is_the_share_outside_the_wait(telemetry: Telemetry) -> None:
    label = "tests.health.utilization"
    factory = watched_factory(asyncio.SelectorEventLoop, label)
    loop = factory()
    seen: list[float] = []

    async def half_busy() -> None:
        for _ in range(8):  # 0.15 s busy, 0.15 s waiting, for 2.4 s
            time.sleep(0.15)
            await asyncio.sleep(0.15)
        seen.extend(value for _, value in health.utilization())

    began = time.monotonic()
    try:
        loop.run_until_complete(half_busy())
    finally:
        loop.close()
    ran = time.monotonic() - began
    totals = labels_of(label)
    assert totals["timed"]
    (active, idle) = next((a, i) for labels, a, i in health.time_spent() if labels[1] == label)
    assert abs(active - 1.2) <= SLACK * 2
    assert abs(active + idle - ran) <= SLACK
    assert seen and all(0.3 <= value <= 0.7 for value in seen)


def test_uvloop_gets_delay_but_no_utilization_since_its_wait_is_libuvs() -> None:
    uvloop = pytest.importorskip("uvloop")
    label = "tests.health.uvloop-time"
    loop = watched_factory(uvloop.new_event_loop, label)()
    try:
        loop.run_until_complete(blocking_then_idle(0.05, 0.05))
    finally:
        loop.close()
    assert labels_of(label)["delay"].snapshot().total > 0
    assert not labels_of(label)["timed"]
    assert not [labels for labels, _, _ in health.time_spent() if labels[1] == label]


@pytest.mark.parametrize("make", loop_makers())
def test_held_and_tasks_are_read_while_the_loop_is_held(make: Any) -> None:
    label = "tests.health.held"
    loop = watched_factory(make, label)()
    release, held_seen = threading.Event(), threading.Event()
    observed: dict[str, float] = {}

    def watcher() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts = {labels[1]: n for labels, n in health.held()}
            if counts.get(label) == 1:
                observed["tasks"] = {labels[1]: n for labels, n in health.tasks()}[label]
                observed["age"] = {labels[1]: a for labels, a in health.pending_age()}[label]
                held_seen.set()
                break
            time.sleep(0.01)
        release.set()

    async def main() -> None:
        sleepers = [asyncio.ensure_future(asyncio.sleep(60)) for _ in range(4)]
        await asyncio.sleep(0.05)
        release.wait(10)  # held until the other thread saw it held
        for task in sleepers:
            task.cancel()
        await asyncio.gather(*sleepers, return_exceptions=True)

    thread = threading.Thread(target=watcher)
    thread.start()
    try:
        loop.run_until_complete(main())
    finally:
        thread.join(15)
        loop.close()
    assert held_seen.is_set()
    assert observed["tasks"] == 5  # main and its four sleepers
    assert observed["age"] > THRESHOLD  # the probe, due since the hold began
    deadline = time.monotonic() + 5
    while {labels[1]: n for labels, n in health.held()}.get(label) and time.monotonic() < deadline:
        time.sleep(0.01)  # the watchdog notices the catch-up at its next look
    assert {labels[1]: n for labels, n in health.held()}[label] == 0
    assert {labels[1]: a for labels, a in health.pending_age()}[label] == 0


def test_tasks_are_counted_at_most_every_few_seconds_not_at_each_scrape() -> None:
    """asyncio's all_tasks() walks every task of every loop (and on free-threaded builds
    stops every thread): scrapes in a row read one count."""
    label = "tests.health.tasks-cached"
    loop = watched_factory(asyncio.SelectorEventLoop, label)()
    try:
        loop.run_until_complete(asyncio.sleep(0))
        with mock.patch.object(asyncio, "all_tasks", wraps=asyncio.all_tasks) as counting:
            read = [{labels[1]: n for labels, n in health.tasks()}[label] for _ in range(3)]
        assert read == [0, 0, 0]
        assert counting.call_count == 1
    finally:
        loop.close()


def stored(thing: object) -> list[str]:
    """How an object's attributes are stored, seen without reading its ``__dict__`` (which on
    3.11 and 3.12 would turn inline values into a dict for good): a ``dict`` among its
    referents means they were turned."""
    return sorted(type(referent).__name__ for referent in gc.get_referents(thing))


@pytest.mark.parametrize("make", loop_makers())
def test_a_watched_loop_and_its_selector_have_nothing_a_bare_one_lacks(make: Any) -> None:
    """No instance attribute: on 3.11/3.12 one alone makes CPython give up the object's inline
    values (every attribute access of the loop's run slower). Methods stay methods, with their
    signatures; the loops here are thrown away (``vars()`` is read at the end)."""
    bare, watched = make(), watched_factory(make, "tests.health.attributes")()
    try:
        for loop in (bare, watched):
            loop.run_until_complete(asyncio.sleep(0.02))  # the hooks are set at the first run
        assert stored(watched) == stored(bare)
        selectors: list[Any] = [getattr(loop, "_selector", None) for loop in (bare, watched)]
        if selectors[0] is not None:
            assert stored(selectors[1]) == stored(selectors[0])
            assert inspect.signature(selectors[1].select) == inspect.signature(selectors[0].select)
            assert inspect.ismethod(selectors[1].select)
        assert inspect.ismethod(watched.run_forever)
        assert inspect.signature(watched.run_forever) == inspect.signature(bare.run_forever)
        assert sorted(vars(watched)) == sorted(vars(bare))
        if selectors[0] is not None:
            assert sorted(vars(selectors[1])) == sorted(vars(selectors[0]))
        assert [key for key in health.totals() if key[1] == "tests.health.attributes"]
    finally:
        bare.close()
        watched.close()


def test_health_off_puts_every_class_back_exactly() -> None:
    import selectors

    selector_class = type(selectors.DefaultSelector())
    owners = [c for c in selector_class.__mro__ if "select" in vars(c)][:1]
    hooked_names = [(asyncio.base_events.BaseEventLoop, "run_forever"), (owners[0], "select")]
    before = {(owner, name): vars(owner).get(name) for owner, name in hooked_names}
    loop = watched_factory(asyncio.SelectorEventLoop, "tests.health.undo")()
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    hooked = {key: vars(key[0]).get(key[1]) for key in before}
    assert all(hooked[key] is not before[key] for key in before)  # hooked, on the class
    configure_telemetry(Options.parse("tests", DEFAULT_HEALTH), DEFAULT_HEALTH)  # health off
    assert {key: vars(key[0]).get(key[1]) for key in before} == before


def test_off_by_default_nothing_is_added_to_a_loop() -> None:
    loop = tracedpolicy.loop_factory(asyncio.SelectorEventLoop, label="tests.health.off")()
    try:
        assert "run_forever" not in vars(loop)
        assert "select" not in vars(loop._selector)  # type: ignore[attr-defined]
        loop.run_until_complete(asyncio.sleep(0.02))
        assert not [key for key in health.totals() if key[1] == "tests.health.off"]
    finally:
        loop.close()


def script(loop: asyncio.AbstractEventLoop) -> list[str]:
    """What a loop answers to runs that fail, succeed, nest and come after close."""
    outcomes: list[str] = []

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("same error")

    async def nested() -> None:
        loop.run_forever()

    steps: list[Callable[[], Any]] = [
        lambda: loop.run_until_complete(fails()),
        lambda: loop.run_until_complete(asyncio.sleep(0, "result")),
        lambda: (loop.stop(), loop.run_forever()),  # stopped before it runs: one iteration
        lambda: loop.run_until_complete(nested()),
        loop.close,
        loop.run_forever,
    ]
    for step in steps:
        try:
            outcomes.append(repr(step()))
        except BaseException as error:
            outcomes.append(f"{type(error).__name__}: {error}")
    return outcomes


@pytest.mark.parametrize("make", loop_makers())
def test_a_watched_loop_behaves_as_before(make: Any) -> None:
    assert script(watched_factory(make, "tests.health.faithful")()) == script(make())


@pytest.mark.parametrize("make", loop_makers())
def test_a_watched_loop_is_freed_by_reference_counting(make: Any) -> None:
    loop = watched_factory(make, "tests.health.freed")()
    loop.run_until_complete(asyncio.sleep(0.03))
    loop.close()
    ref = weakref.ref(loop)
    deadline = time.monotonic() + 5
    while probe._running and time.monotonic() < deadline:
        time.sleep(0.005)  # the watchdog's look at the stopped loop (which holds it a moment)
    gc.disable()
    try:
        del loop
        assert ref() is None  # no reference cycle through the probe or the hooks
    finally:
        gc.enable()


def test_prometheus_and_opentelemetry_names_follow_the_node_conventions(
    telemetry: Telemetry,
) -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider

    reader = PrometheusMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    label = "tests.health.names"
    try:
        factory = watched_factory(
            asyncio.SelectorEventLoop,
            label,
            meter_provider=meter_provider,
            prometheus_registry=telemetry.registry,
        )
        loop = factory()
        try:
            loop.run_until_complete(blocking_then_idle(0.15, 1.1))
        finally:
            loop.close()
        loop = factory()  # open, for the tasks gauge

        def names(families: Any) -> set[tuple[str, str]]:
            return {
                (family.name, family.type)
                for family in families
                if family.name.startswith("asyncio_eventloop")
                and any(s.labels.get("creator") == label for s in family.samples)
            }

        ours = names(text_string_to_metric_families(generate_latest(telemetry.registry).decode()))
        theirs = names(reader._collector.collect())
        loop.close()
    finally:
        meter_provider.shutdown()
    assert ours == theirs
    assert {name for name, _ in ours} == {
        "asyncio_eventloop_delay_seconds",
        "asyncio_eventloop_time_seconds",
        "asyncio_eventloop_blocked",
        "asyncio_eventloop_held",
        "asyncio_eventloop_tasks",
        "asyncio_eventloop_pending_age_seconds",
    }  # utilization: no loop is running now


@pytest.mark.parametrize(
    ("option", "value"),
    [("health_resolution", "fast"), ("blocking_threshold", 0), ("health_resolution", 600)],
)
def test_bad_durations_are_refused_in_one_line(option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"option {option} is .*seconds from 0.001 to 60.0$"):
        tracedpolicy.loop_factory(asyncio.SelectorEventLoop, **{option: value})


BLOCKING_APP = asgi_app(
    prelude="import time\n",
    respond="""
    if scope["path"] == "/block":
        time.sleep(1.5)  # a synchronous call in a handler: the server's loop is held
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
    """,
)


BLOCKED = "asyncio_eventloop_blocked_total"


def total(samples: dict[Any, float], *names: str, le: str | None = None) -> list[float]:
    """Each name's samples summed over label sets (only the bucket ``le``, if given)."""
    return [
        sum(
            value
            for (name, labels), value in samples.items()
            if name == wanted and (le is None or dict(labels).get("le") == le)
        )
        for wanted in names
    ]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_real_server_under_run_shows_its_blocking_handler(loop: str, tmp_path: Path) -> None:
    """uvicorn, unchanged, under ``TRACEDPOLICY_HEALTH=1 python -m tracedpolicy run``."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    (tmp_path / "app.py").write_text(BLOCKING_APP)
    port = free_port()
    command = [sys.executable, "-m", "tracedpolicy", "run", "-m", "uvicorn", "app:app"]
    command += ["--port", str(port), "--loop", loop]
    # The server's own start-up and first request (imports, compiling them on a first run, on
    # a busy machine) may hold its loop too, truly: what /block adds is counted from there.
    environment = {"TRACEDPOLICY_HEALTH": "1", "TRACEDPOLICY_BLOCKING_THRESHOLD": "0.75"}
    names = ("asyncio_eventloop_blocked_total", "asyncio_eventloop_held")
    late = ("asyncio_eventloop_delay_seconds_count", "asyncio_eventloop_delay_seconds_bucket")

    def settled(served: Any) -> tuple[dict[Any, float], float, float]:
        deadline = time.monotonic() + 10
        while True:  # the watchdog counts at its next look, and releases at the one after
            samples = served.scrape()
            blocked, held = total(samples, *names)
            if held == 0 or time.monotonic() > deadline:
                return samples, blocked, held
            time.sleep(0.05)

    with serve(command, tmp_path, port, environment) as served:
        served.wait_until_serving()
        assert served.get("/") == "hello"
        samples, blocked_before, _ = settled(served)
        probes, on_time = total(samples, late[0]), total(samples, late[1], le="1.0")
        late_before = probes[0] - on_time[0]
        assert served.get("/block") == "hello"
        deadline = time.monotonic() + 10
        while True:
            samples, blocked, held = settled(served)
            if blocked > blocked_before or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        output = served.interrupt()
    assert (blocked - blocked_before, held) == (1, 0), output
    probes, on_time = total(samples, late[0]), total(samples, late[1], le="1.0")
    assert probes[0] - on_time[0] - late_before == 1  # one more probe over 1 s late: the block
    sleeping = 1 + next(n for n, text in enumerate(BLOCKING_APP.splitlines()) if "sleep" in text)
    (line,) = [line for line in output.splitlines() if f"app.py:{sleeping} in app" in line]
    assert "held for over" in line, line
    states = {
        dict(labels)["state"]
        for (name, labels), _ in samples.items()
        if name == "asyncio_eventloop_time_seconds_total"
    }
    assert states == ({"active", "idle"} if loop == "asyncio" else set())
    assert served.process.returncode == 0, output


def test_turning_health_off_while_a_loop_runs_counts_no_false_block() -> None:
    label = "tests.health.off-while-running"
    loop = watched_factory(asyncio.SelectorEventLoop, label)()

    async def main() -> None:
        await asyncio.sleep(0.05)
        health.configure(False, health.Settings())  # the probe stops; the loop is not held
        await asyncio.sleep(THRESHOLD * 4)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert labels_of(label)["blocked"] == 0


def test_watched_loops_that_come_and_go_leave_nothing_behind() -> None:
    factory = watched_factory(asyncio.SelectorEventLoop, "tests.health.churn")
    for _ in range(2000):
        loop = factory()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    del loop
    gc.collect()
    assert len(health.watched()) == 0
    assert len(probe._running) == 0 or all(h.running for h in probe._running.values())
    (totals,) = [t for labels, t in health.totals().items() if labels[1] == "tests.health.churn"]
    assert totals.delay.snapshot().total > 0  # probed as they ran
    # None is held once every loop is closed and gone (a hold while one ran is possible on a
    # busy machine: a loop whose thread is not scheduled for the threshold is late, truly).
    assert all(count == 0 for labels, count in health.held() if labels[1] == "tests.health.churn")
    (active, idle) = next(
        (a, i) for labels, a, i in health.time_spent() if labels[1] == "tests.health.churn"
    )
    assert 0 < active + idle < 60  # the time of the 2000 runs, folded in as they went


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_reports_its_own_health_not_its_parents() -> None:
    label = "tests.health.fork"
    factory = watched_factory(asyncio.SelectorEventLoop, label)
    loop = factory()
    loop.run_until_complete(blocking_then_idle(THRESHOLD * 2, 0.1))
    loop.close()
    assert labels_of(label)["blocked"] == 1
    read, write = os.pipe()
    with warnings.catch_warnings():  # the watchdog thread waits on an event: forking is safe
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: what it inherited, then a block of its own
        try:
            inherited = labels_of(label)["blocked"]
            child_loop = factory()
            child_loop.run_until_complete(blocking_then_idle(THRESHOLD * 2, 0.1))
            child_loop.close()
            os.write(write, f"{inherited} {labels_of(label)['blocked']}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        said = answer.read()
    os.waitpid(pid, 0)
    assert said == "0 1"
    assert labels_of(label)["blocked"] == 1  # the parent's own count, unchanged


# Found by trying to break it: patches, subclasses, waits under way, quick runs, fork.


def patch_script(make: Any) -> list[str]:
    """A selector class patched after the loop's first run, and one patched before it."""
    out: list[str] = []
    loop = make()
    loop.run_until_complete(asyncio.sleep(0.01))
    boom = OSError("boom")
    with (
        mock.patch.object(type(loop._selector), "select", side_effect=boom),
        pytest.raises(OSError),
    ):
        loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    loop = make()
    with mock.patch.object(type(loop._selector), "select", return_value=[]) as patched:
        loop.call_soon(loop.stop)
        loop.run_forever()
        out.append(repr(patched.call_args))
    calls = patched.call_count
    loop.run_until_complete(asyncio.sleep(0.01))
    out.append(f"calls after the patch: {patched.call_count - calls}")
    loop.close()
    return out


# The sleep a raising select never let run is collected later, bare and watched alike.
@pytest.mark.filterwarnings("ignore:coroutine 'sleep' was never awaited:RuntimeWarning")
def test_patches_of_the_selector_and_run_forever_classes_are_called_as_bare() -> None:
    watched = watched_factory(asyncio.SelectorEventLoop, "tests.health.patched")
    assert patch_script(watched) == patch_script(asyncio.SelectorEventLoop)
    gc.collect()  # the sleeps the raising select never let run: collected here, not later
    calls = []
    for make in (asyncio.SelectorEventLoop, watched):
        loop = make()
        with mock.patch.object(type(loop), "run_forever") as patched:
            loop.run_forever()
            calls.append(patched.call_args)
        loop.close()
    assert calls[0] == calls[1] == mock.call()


def test_idle_time_counts_a_wait_under_way_and_never_goes_down() -> None:
    label = "tests.health.wait-under-way"
    loop = watched_factory(asyncio.SelectorEventLoop, label, health_resolution=0.5)()
    readings: list[tuple[float, float]] = []

    def read() -> None:
        readings.extend((a, i) for labels, a, i in health.time_spent() if labels[1] == label)

    def read_twice() -> None:
        for _ in range(2):
            time.sleep(0.2)
            read()

    thread = threading.Thread(target=read_twice)
    try:
        thread.start()
        loop.run_until_complete(asyncio.sleep(0.6))  # one long wait: no probe, no callback
        thread.join()
        read()
    finally:
        loop.close()
    (active_1, idle_1), (active_2, idle_2), (active_3, idle_3) = readings
    assert idle_1 >= 0.15 and idle_2 >= idle_1 + 0.15 and idle_3 >= idle_2  # the wait, as it goes
    assert active_1 <= active_2 <= active_3 < 0.1


def test_a_held_loop_freed_before_the_watchdog_looks_again_ends_its_span(
    telemetry: Telemetry,
) -> None:
    make = watched_factory(asyncio.SelectorEventLoop, "tests.health.freed-held")

    async def blocks(_: int) -> None:
        await asyncio.sleep(0.02)
        time.sleep(THRESHOLD * 3)

    for body in (blocks, asyncio.sleep):  # the second loop's watch() folds the first in
        loop = make()
        loop.run_until_complete(body(0))
        loop.close()
        del loop
    gc.collect()
    deadline = time.monotonic() + 5
    while not finished_blocked_spans(telemetry) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(finished_blocked_spans(telemetry)) == 1
    assert {labels[1]: n for labels, n in health.held()}["tests.health.freed-held"] == 0


def finished_blocked_spans(telemetry: Telemetry) -> list[Any]:
    return [s for s in telemetry.exporter.get_finished_spans() if s.name.endswith("blocked")]


class Flushing(asyncio.SelectorEventLoop):
    """A subclass that works a while after its loop has stopped (a flush, a join)."""

    def run_forever(self) -> None:
        try:
            super().run_forever()
        finally:
            time.sleep(THRESHOLD * 3)


def test_a_subclass_working_outside_its_loop_is_not_held_and_leaves_no_probe() -> None:
    label = "tests.health.subclass"
    loop = watched_factory(Flushing, label)()
    try:
        loop.run_until_complete(asyncio.sleep(0.05))
        assert list(loop._ready) == []
    finally:
        loop.close()
    assert labels_of(label)["blocked"] == 0


def test_loops_run_briefly_and_closed_are_all_freed() -> None:
    make = watched_factory(asyncio.SelectorEventLoop, "tests.health.brief", health_resolution=0.001)
    refs = []
    for _ in range(300):
        loop = make()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        refs.append(weakref.ref(loop))
        del loop
    gc.collect()
    assert [ref for ref in refs if ref() is not None] == []
    assert len(health.watched()) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_counts_only_its_own_time_on_a_loop_its_parent_ran() -> None:
    label = "tests.health.fork-time"
    loop = watched_factory(asyncio.SelectorEventLoop, label)()
    loop.run_until_complete(asyncio.sleep(0.3))
    read, write = os.pipe()
    with warnings.catch_warnings():  # the watchdog thread waits on an event: forking is safe
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        try:
            loop.run_until_complete(asyncio.sleep(0.05))
            spent = sum(a + i for labels, a, i in health.time_spent() if labels[1] == label)
            os.write(write, repr(spent).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        spent = float(answer.read())
    os.waitpid(pid, 0)
    loop.close()
    assert 0.04 <= spent <= 0.2  # its own 0.05 s, not the parent's 0.3 s


def test_in_debug_mode_no_probe_is_handed_to_the_loop() -> None:
    """asyncio's debug mode logs slow callbacks (CPython's own tests read that log): a probe
    would show up in it, so a loop in debug mode gets none."""
    label = "tests.health.debug"
    loop = watched_factory(asyncio.SelectorEventLoop, label)()
    loop.set_debug(True)
    try:
        loop.run_until_complete(asyncio.sleep(0.1))
    finally:
        loop.close()
    assert labels_of(label)["delay"].snapshot().total == 0


THREADS_AFTER_UNINSTRUMENT = """
import asyncio, sys, threading
import tracedpolicy
from tracedpolicy.health import monitor as health

options = eval(sys.argv[1])
before = threading.enumerate()
tracedpolicy.instrument(**options)
print("no thread before a loop runs:", threading.enumerate() == before or options)
async def main():
    await asyncio.sleep(0.05)
    return [t.name for t in threading.enumerate() if "health" in t.name]
print("watchdog while a loop runs:", asyncio.run(main()))
print("and after:", threading.enumerate() == before or options)
tracedpolicy.uninstrument()
print("threads as before:", threading.enumerate() == before)
loop = tracedpolicy.loop_factory(asyncio.SelectorEventLoop)()
loop.run_until_complete(asyncio.sleep(0.05))
loop.close()
print("later loops watched:", len(health.watched()), threading.enumerate() == before)
"""


@pytest.mark.parametrize(
    ("options", "many_processes"),
    [({"health": True}, False), ({"health": True, "metrics_port": 0}, False), ({}, True)],
    ids=["health", "health and metrics port", "multi-process directory"],
)
def test_uninstrument_leaves_the_threads_as_before_and_later_loops_unwatched(
    options: dict[str, Any], many_processes: bool, tmp_path: Path
) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDPOLICY_")}
    if many_processes:
        environment["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
        environment["TRACEDPOLICY_HEALTH"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", THREADS_AFTER_UNINSTRUMENT, repr(options)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )
    assert done.returncode == 0, done.stderr
    first = "True" if "metrics_port" not in options else repr(options)
    after = "True" if not (many_processes or "metrics_port" in options) else repr(options)
    assert done.stdout.splitlines() == [
        f"no thread before a loop runs: {first}",
        "watchdog while a loop runs: ['tracedpolicy-health']",
        f"and after: {after}",
        "threads as before: True",
        # (a later loop_factory's counts are copied to the directory again: by a thread)
        f"later loops watched: 0 {not many_processes}",
    ], done.stderr


FORKS = """
import os, sys
if sys.argv[1:] == ["health"]:
    import tracedpolicy
    tracedpolicy.instrument(health=True)
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
print("forked")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_single_threaded_program_with_health_on_forks_without_a_warning(tmp_path: Path) -> None:
    """CPython 3.12+ warns at a fork in a multi-threaded process (at the program's line): the
    watchdog thread waits for the first watched loop to run."""
    program = tmp_path / "forks.py"
    program.write_text(FORKS)
    runs = [
        subprocess.run(
            [sys.executable, str(program), *mode],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("TRACEDPOLICY_")},
        )
        for mode in ([], ["health"])
    ]
    assert [(run.returncode, run.stdout, run.stderr) for run in runs] == [(0, "forked\n", "")] * 2


async def hold() -> None:
    time.sleep(BLOCK)  # the loop is held here, two coroutines deep


async def blocker() -> None:
    await asyncio.sleep(0.05)
    await hold()


async def gatherer() -> None:
    await asyncio.gather(asyncio.get_running_loop().create_task(blocker(), name="blocking"))


async def grouped() -> None:
    async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined,unused-ignore]
        group.create_task(gatherer(), name="gathering")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is 3.11's")
def test_a_held_task_is_named_with_its_coroutines_and_who_awaits_it(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """The span (and log line) names the held task's coroutine stack; from 3.14, asyncio's call
    graph also names each task awaiting it, nearest first: through the gather, the TaskGroup."""
    loop = watched_factory(asyncio.SelectorEventLoop, "tests.health.chain")()
    try:
        with caplog.at_level(logging.WARNING, logger="tracedpolicy"):
            loop.run_until_complete(loop.create_task(grouped(), name="grouping"))
    finally:
        loop.close()
    deadline = time.monotonic() + 5
    while not finished_blocked_spans(telemetry) and time.monotonic() < deadline:
        time.sleep(0.01)
    (span,) = finished_blocked_spans(telemetry)
    (event,) = span.events
    attributes = dict(event.attributes or {})
    assert str(attributes["asyncio.task"]).startswith("blocking (")
    coroutines = [
        str(where).rpartition(" in ")[2] for where in attributes["asyncio.task.coroutines"]
    ]
    assert coroutines == ["blocker", "hold"]
    (line,) = [r.getMessage() for r in caplog.records if "held for over" in r.getMessage()]
    stack = line.partition("; coroutines ")[2]
    assert stack.index("in blocker") < stack.index("in hold"), line
    if sys.version_info >= (3, 14):
        awaiting = [str(entry) for entry in attributes["asyncio.task.awaited_by"]]
        tasks = [entry.split(" ")[1] for entry in awaiting if entry.startswith("task ")]
        assert tasks == ["gathering", "grouping"], awaiting
        assert "in gatherer" in awaiting[-2] and "in grouped" in awaiting[-1], awaiting
        assert "awaited by " in line and line.index("task gathering") < line.index("task grouping")
    else:
        assert "asyncio.task.awaited_by" not in attributes  # no call graph before 3.14
