"""The README's main job: a workload under a traced policy, with live metrics on loopback.

Worker threads make loops, set and clear them, hit and miss, and one leaves some loops unclosed
(up to a cap, so the demo's own file descriptors stay bounded). The main thread runs
``asyncio.run`` and, on 3.12+, a traced loop factory. Metrics are served by prometheus_client on
127.0.0.1 (the port is printed on start) and a one-line summary is printed every interval.
Ctrl-C (or ``--seconds``) ends it cleanly. With ``OTEL_EXPORTER_OTLP_*`` set and the ``otlp``
extra installed, spans and metrics also go out over OTLP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import threading
import time
import warnings
from typing import Any, TextIO

import tracedpolicy

#: How many loops the leaking worker keeps open at most.
LEAK_CAP = 20

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def _tick() -> None:
    await asyncio.sleep(0)


class Workload:
    """Worker threads exercising a policy until told to stop."""

    def __init__(self, policy: Any, threads: int, pause: float) -> None:
        self.policy = policy
        self.pause = pause
        self.stop = threading.Event()
        self.leaked: list[asyncio.AbstractEventLoop] = []
        self.threads = [
            threading.Thread(target=self._work, args=(index == 0,), name=f"demo-worker-{index}")
            for index in range(threads)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()
        for loop in self.leaked:
            loop.close()

    def _work(self, leaks: bool) -> None:
        policy = self.policy
        while not self.stop.is_set():
            with contextlib.suppress(RuntimeError):
                policy.get_event_loop()  # this thread has no loop now: a miss
            loop = policy.new_event_loop()
            policy.set_event_loop(loop)
            for _ in range(100):
                policy.get_event_loop()
            loop.run_until_complete(_tick())
            policy.set_event_loop(None)
            if leaks and len(self.leaked) < LEAK_CAP:
                self.leaked.append(loop)
            else:
                loop.close()
            self.stop.wait(self.pause)  # pacing, so the demo does not spin a core


def leak_one_of_each(policy: Any) -> None:
    """Leak a loop the two ways that need no help: a thread that ends, an unclosed loop dropped.

    asyncio's ``__del__`` closes both when they are collected, so nothing piles up.
    """

    def short_lived() -> None:
        policy.set_event_loop(policy.new_event_loop())  # ends without closing it: thread_exit

    thread = threading.Thread(target=short_lived, name="demo-short-lived")
    thread.start()
    thread.join()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        policy.new_event_loop()  # dropped unclosed: gc_unclosed
        gc.collect()


def _python() -> str:
    """This interpreter, as a command that works where it is printed (the venv's, not PATH's)."""
    relative = os.path.relpath(sys.executable)
    if relative.startswith(os.pardir) or len(relative) >= len(sys.executable):
        return sys.executable
    return relative if os.sep in relative else os.path.join(os.curdir, relative)


def summary_line() -> str:
    """Totals over every policy label, in one line."""
    totals: dict[str, int] = {}
    for counts in tracedpolicy.snapshot().values():
        for key, value in counts.items():
            totals[key] = totals.get(key, 0) + value

    def leaked() -> int:
        return sum(
            counter.value
            for recorder in tracedpolicy.recorder.recorders()
            for stats in recorder.loop_classes().values()
            for counter in stats.leaked.values()
        )

    def calls(prefix: str) -> int:
        return sum(v for k, v in totals.items() if k.startswith(prefix))

    return (
        f"loops created {totals.get('loops.created', 0)} closed {totals.get('loops.closed', 0)}"
        f" open {totals.get('loops.open', 0)} | get hit {calls('get_event_loop.hit')}"
        f" created {calls('get_event_loop.created')} miss {calls('get_event_loop.miss')}"
        f" | set {totals.get('set_event_loop.set', 0)}"
        f" clear {totals.get('set_event_loop.clear', 0)} | leaked {leaked()}"
    )


def _configure_otlp(out: TextIO) -> None:
    """Export over OTLP/HTTP when the standard variables ask for it and the exporter exists."""
    if not any(name.startswith("OTEL_EXPORTER_OTLP_") for name in os.environ):
        return
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        print("OTEL_EXPORTER_OTLP_* is set: pip install 'tracedpolicy[otlp]' to export", file=out)
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "demo")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    print("exporting spans and metrics over OTLP", file=out)


def main(
    port: int = 0,
    addr: str = "127.0.0.1",
    threads: int = 4,
    interval: float = 2.0,
    seconds: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Run until Ctrl-C or ``seconds``; print the metrics URL, then a summary every interval."""
    _configure_otlp(out)
    policy = tracedpolicy.install(metrics_port=port, metrics_addr=addr)
    server = tracedpolicy.metrics_server()
    if server is None:
        return 1  # tracedpolicy said why, and what to do, in one line
    host, bound_port = server.server_address[:2]
    print(f"serving metrics on http://{host}:{bound_port}/metrics (Ctrl-C to stop)", file=out)
    print(f"open loops: {_python()} -m tracedpolicy report http://{host}:{bound_port}", file=out)
    out.flush()
    workload = Workload(policy, threads, pause=0.01)
    workload.start()
    factory = tracedpolicy.loop_factory(label="demo.loop_factory")
    deadline = None if seconds is None else time.monotonic() + seconds
    # Ctrl-C (and SIGTERM) set the stop event rather than raise: a KeyboardInterrupt that
    # lands in a __del__ or weakref callback during the demo's gc.collect() would be lost.
    stop = workload.stop
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            asyncio.run(_tick())
            leak_one_of_each(policy)
            if sys.version_info >= (3, 12):
                asyncio.run(_tick(), loop_factory=factory)
            stop.wait(interval)
            print(summary_line(), file=out)
            out.flush()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    workload.join()
    print(f"stopped. {summary_line()}", file=out)
    tracedpolicy.uninstall()
    return 0
