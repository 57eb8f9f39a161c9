"""What tracing costs: each policy call bare and traced, side by side in one run, as ratios.

    python benchmarks/overhead.py            # the README's figures
    python benchmarks/overhead.py --quick    # fewer rounds (CI runs this; never a gate)

Two set-ups: no OpenTelemetry SDK configured (the API's no-op proxies), and the SDK configured
as in production (a batch span processor, a periodic metric reader), both exporting to nowhere
so the figures measure tracedpolicy and the SDK, not a network. Each figure is the best of
several repeats, bare and traced measured alternately to share the machine's state.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any, Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.records.sites import capture_site


class DiscardSpans(SpanExporter):
    """Exports to nowhere: the cost measured is ours and the SDK's, not a network's."""

    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class DiscardMetrics(MetricExporter):
    """Exports to nowhere, like :class:`DiscardSpans`."""

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


#: The loops the timed calls share, closed at the end.
SHARED_LOOPS: list[Any] = []


def operations(policy: Any) -> dict[str, Callable[[], Any]]:
    """The calls to time on ``policy``, each leaving the policy as it found it."""
    loop = policy.new_event_loop()
    SHARED_LOOPS.append(loop)

    def get_hit() -> Any:
        return policy.get_event_loop()

    def get_miss() -> None:
        policy.set_event_loop(None)
        try:  # noqa: SIM105 - contextlib.suppress would add its own cost to the timing
            policy.get_event_loop()
        except RuntimeError:
            pass
        policy.set_event_loop(loop)

    def set_loop() -> None:
        policy.set_event_loop(loop)

    def new_and_close() -> None:
        policy.new_event_loop().close()

    policy.set_event_loop(loop)
    return {
        "get (hit)": get_hit,
        # Through asyncio (C) with this policy process-wide: see measure().
        "asyncio.get_event_loop() (hit)": asyncio.get_event_loop,
        "get (miss) + 2 sets": get_miss,
        "set": set_loop,
        "new + close": new_and_close,
    }


def best_ns(call: Callable[[], Any], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e9


def measure(make_traced: Callable[[], Any], quick: bool) -> list[tuple[str, float, float]]:
    bare_policy, traced_policy = RUNNING.default_policy(), make_traced()  # type: ignore[misc]
    bare_ops, traced_ops = operations(bare_policy), operations(traced_policy)
    before = RUNNING.get_policy()  # type: ignore[misc]
    rows = []
    for name in bare_ops:
        number = {"get (hit)": 200_000, "set": 50_000}.get(name, 2_000)
        if name.startswith("asyncio.get_event_loop"):
            number = 200_000
        if quick:
            number //= 10
        bare = traced = float("inf")
        for _ in range(3 if quick else 7):
            RUNNING.set_policy(bare_policy)  # type: ignore[misc]
            bare = min(bare, best_ns(bare_ops[name], number, 1))
            RUNNING.set_policy(traced_policy)  # type: ignore[misc]
            traced = min(traced, best_ns(traced_ops[name], number, 1))
        rows.append((name, bare, traced))
    RUNNING.set_policy(before)  # type: ignore[misc]
    return rows


def hit_breakdown(quick: bool) -> list[tuple[str, float]]:
    """A hit's cost, one piece at a time: each step adds one thing the real fast path does.

    The steps are closures shaped like ``tracedpolicy.sources.policy._fast_get`` with pieces left
    out, called through the same wrapper instance, so the differences are what each piece costs.
    The last row is the real traced policy, measured in the same run.
    """
    policy_class: Any = RUNNING.default_policy
    stock = RUNNING.stock_get_event_loop
    bare = policy_class()
    bare.set_event_loop(bare.new_event_loop())
    SHARED_LOOPS.append(bare.get_event_loop())
    traced = TracedEventLoopPolicy(policy_class(), prometheus=False)
    base = traced.base
    base.set_event_loop(base.new_event_loop())
    SHARED_LOOPS.append(base.get_event_loop())
    hits = itertools.count()
    cls = type(base)
    own = base.__dict__

    def read_only() -> Any:
        loop = base._local._loop
        if loop is not None:
            return loop
        return None

    def counted() -> Any:
        loop = base._local._loop
        if loop is not None:
            next(hits)
            return loop
        return None

    def class_checked() -> Any:
        if cls.get_event_loop is stock:
            loop = base._local._loop
            if loop is not None:
                next(hits)
                return loop
        return None

    def fully_checked() -> Any:
        if cls.get_event_loop is stock and "get_event_loop" not in own:
            loop = base._local._loop
            if loop is not None:
                next(hits)
                return loop
        return None

    stand_in = TracedEventLoopPolicy(policy_class(), prometheus=False)
    steps: list[tuple[str, Any]] = [
        ("our function, reading the base's loop (no counting, no checks)", read_only),
        ("+ counting the hit (one itertools.count)", counted),
        ("+ checking the class's get_event_loop is CPython's (class patches)", class_checked),
        ("+ checking the instance has no get_event_loop of its own (instance patches)",
         fully_checked),
    ]  # fmt: skip
    number = 20_000 if quick else 200_000
    rows = {"the bare policy's get_event_loop()": float("inf")}
    rows.update((name, float("inf")) for name, _ in steps)
    rows["the traced wrapper"] = float("inf")
    for _ in range(3 if quick else 9):
        rows["the bare policy's get_event_loop()"] = min(
            rows["the bare policy's get_event_loop()"],
            best_ns(lambda: bare.get_event_loop(), number, 1),
        )
        for name, step in steps:
            object.__setattr__(stand_in, "get_event_loop", step)
            rows[name] = min(rows[name], best_ns(lambda: stand_in.get_event_loop(), number, 1))
        rows["the traced wrapper"] = min(
            rows["the traced wrapper"], best_ns(lambda: traced.get_event_loop(), number, 1)
        )
    return list(rows.items())


def creation_costs(quick: bool) -> list[tuple[str, float, float]]:
    """A loop's creation and close under two set-ups, measured alternately.

    The whole-process mode records a directly constructed loop in the constructor's hook, and a
    loop from the policy once (the hook inside passes it through): the last row compares it
    with ``install()`` for the same call.
    """

    def nothing() -> None:
        return None

    def install() -> None:
        tracedpolicy.install(prometheus=False)

    def instrument() -> None:
        tracedpolicy.instrument(prometheus=False)

    def construct() -> None:
        asyncio.SelectorEventLoop().close()

    def new() -> None:
        asyncio.new_event_loop().close()

    rows_to_measure = [
        ("`SelectorEventLoop()` + close: untraced, instrument()", construct, nothing, instrument),
        ("`new_event_loop()` + close: untraced, install()", new, nothing, install),
        ("`new_event_loop()` + close: install(), instrument()", new, install, instrument),
    ]
    number = 200 if quick else 2_000
    rows = []
    for name, call, first, second in rows_to_measure:
        times = [float("inf"), float("inf")]
        for _ in range(3 if quick else 7):
            for index, set_up in enumerate((first, second)):
                set_up()
                times[index] = min(times[index], best_ns(call, number, 1))
                tracedpolicy.uninstrument()
                tracedpolicy.uninstall()
        rows.append((name, times[0], times[1]))
    return rows


HELLO_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
"""


def server_throughput(quick: bool) -> list[tuple[str, float, float]] | None:
    """Requests per second of a uvicorn hello-world over loopback, bare and with every loop
    traced (``python -m tracedpolicy run``), measured alternately with wrk; None without wrk."""
    if shutil.which("wrk") is None:
        return None
    seconds, rounds = (2, 2) if quick else (8, 3)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "hello.py").write_text(HELLO_APP)
        for loop in ("asyncio", "uvloop"):
            best = {"bare": 0.0, "traced": 0.0}
            for _ in range(rounds):
                for mode in best:
                    best[mode] = max(best[mode], _requests_per_second(folder, loop, mode, seconds))
            rows.append((f"uvicorn `--loop {loop}`", best["bare"], best["traced"]))
    return rows


def _requests_per_second(folder: str, loop: str, mode: str, seconds: int) -> float:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launcher = ["-m", "tracedpolicy", "run"] if mode == "traced" else []
    command = [sys.executable, *launcher, "-m", "uvicorn", "hello:app", "--port", str(port)]
    command += ["--loop", loop, "--no-access-log", "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": folder, "TRACEDPOLICY_PROMETHEUS": "off"}
    server = subprocess.Popen(command, cwd=folder, env=env)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"uvicorn did not start: {command}") from None
                time.sleep(0.05)
        done = subprocess.run(
            ["wrk", "-t1", "-c32", f"-d{seconds}s", url], capture_output=True, text=True
        )
        match = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
        if match is None:
            raise RuntimeError(f"wrk said: {done.stdout}{done.stderr}")
        return float(match.group(1))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def nested(depth: int, call: Callable[[], Any]) -> Any:
    """Call ``call`` from ``depth`` frames down, as a loop is made deep in an application."""
    return call() if depth == 0 else nested(depth - 1, call)


def capture_costs(quick: bool) -> list[tuple[str, float]]:
    """What finding a loop's creation site adds to every traced loop creation."""
    number = 2_000 if quick else 20_000
    baseline = best_ns(lambda: nested(10, lambda: None), number, 5)
    site_only = best_ns(lambda: nested(10, lambda: capture_site(0)), number, 5)
    deep = best_ns(lambda: nested(10, lambda: capture_site(16)), number, 5)
    return [
        ("the site only (the default)", site_only - baseline),
        ("the site and 16 frames above it (creation_stack=16)", deep - baseline),
    ]


def print_table(title: str, rows: list[tuple[str, float, float]]) -> None:
    print(f"\n{title}\n")
    print("| operation | bare | traced | ratio |")
    print("|---|---:|---:|---:|")
    for name, bare, traced in rows:
        print(f"| {name} | {bare:,.0f} ns | {traced:,.0f} ns | {traced / bare:.2f}x |")


def main(argv: list[str] | None = None) -> int:
    # Timing loops make spans faster than a batch processor exports them: it drops some, as in
    # production under such load, and says so on every drop. The figures do not need that.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, for CI")
    quick = parser.parse_args(argv).quick
    print(f"Python {sys.version.split()[0]}, tracedpolicy {tracedpolicy.__version__}")
    policy_class = RUNNING.default_policy
    assert policy_class is not None

    def wrapper(**options: Any) -> Callable[[], Any]:
        return lambda: TracedEventLoopPolicy(policy_class(), prometheus=False, **options)

    print_table("No OpenTelemetry SDK configured (default options)", measure(wrapper(), quick))

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(DiscardSpans()))
    reader = PeriodicExportingMetricReader(DiscardMetrics(), export_interval_millis=60_000)
    meter_provider = MeterProvider(metric_readers=[reader])
    sdk = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    print_table(
        "SDK configured as in production (batch span processor, periodic metric reader)",
        measure(wrapper(**sdk), quick),
    )
    print_table(
        "SDK configured, and a span for 1% of hits (get_spans='sampled')",
        measure(wrapper(**sdk, get_spans="sampled", get_span_sample_rate=0.01), quick)[:1],
    )
    traced_subclass = tracedpolicy.TracedDefaultEventLoopPolicy
    print_table(
        "SDK configured, the traced hierarchy class instead of the wrapper",
        measure(traced_subclass, quick),
    )
    print("\n*Creation-site capture, part of every traced loop creation*\n")
    print("| capture | cost |")
    print("|---|---:|")
    for name, cost in capture_costs(quick):
        print(f"| {name} | {cost:,.0f} ns |")
    print_table("Loop creation, bare and in the whole-process mode (no SDK)", creation_costs(quick))
    served = server_throughput(quick)
    if served is None:
        print("\n(server throughput skipped: wrk is not installed)")
    else:
        print("\n*A real server: uvicorn hello-world over loopback, wrk -t1 -c32*\n")
        print("| server | bare | every loop traced | ratio |")
        print("|---|---:|---:|---:|")
        for name, bare, traced in served:
            print(f"| {name} | {bare:,.0f} req/s | {traced:,.0f} req/s | {traced / bare:.3f}x |")
    print("\n*Where a hit's nanoseconds go (each row adds one piece of the real fast path)*\n")
    print("| step | per hit | against bare |")
    print("|---|---:|---:|")
    breakdown = hit_breakdown(quick)
    bare_ns = breakdown[0][1]
    for name, cost in breakdown:
        print(f"| {name} | {cost:,.0f} ns | {cost / bare_ns:.2f}x |")
    for loop in SHARED_LOOPS:
        loop.close()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
