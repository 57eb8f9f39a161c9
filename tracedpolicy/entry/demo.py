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
from collections.abc import Iterator
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

    with abandoned_loops_finalized_quietly(), warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        thread = threading.Thread(target=short_lived, name="demo-short-lived")
        thread.start()
        thread.join()
        policy.new_event_loop()  # dropped unclosed: gc_unclosed
        gc.collect()  # both are collected here, in the quiet window


#: How long the demo's server loop is blocked, every :data:`BLOCK_EVERY` seconds.
BLOCK_SECONDS, BLOCK_EVERY = 0.25, 2.0


def serve_and_block_now_and_then(stop: threading.Event) -> threading.Thread:
    """A loop serving in a thread of its own (loop health on: its delay, utilization and tasks
    on the dashboard) whose handler, now and then, blocks it with a synchronous call."""
    factory = tracedpolicy.loop_factory(label="demo.server")

    async def handler(blocks: bool) -> None:
        await asyncio.sleep(0.01)  # waiting for I/O
        if blocks:
            time.sleep(BLOCK_SECONDS)  # a synchronous call in a coroutine: the loop is held

    async def serve() -> None:
        last_block = time.monotonic()
        while not stop.is_set():
            blocks = time.monotonic() - last_block >= BLOCK_EVERY
            last_block = time.monotonic() if blocks else last_block
            await asyncio.gather(*(handler(blocks and n == 0) for n in range(5)))

    def run() -> None:
        loop = factory()
        try:
            loop.run_until_complete(serve())
        finally:
            loop.close()

    thread = threading.Thread(target=run, name="demo-server")
    thread.start()
    return thread


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
        from tracedpolicy.records.recorder import recorders

        return sum(
            counter.value
            for recorder in recorders()
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


def _otlp(out: TextIO | None) -> dict[str, Any]:
    """Providers exporting over OTLP/HTTP when the standard variables ask for it (each process
    under a resource of its own), as install() options."""
    from tracedpolicy.exporters import otlp

    options = otlp.export_tracedpolicy(service_name="demo")
    if options and out is not None:
        print("exporting spans and metrics over OTLP", file=out)
    return options


def main(
    port: int = 0,
    addr: str = "127.0.0.1",
    threads: int = 4,
    interval: float = 2.0,
    seconds: float | None = None,
    workers: int = 0,
    out: TextIO = sys.stdout,
) -> int:
    """Run until Ctrl-C or ``seconds``; print the metrics URL, then a summary every interval.

    With ``workers``, the workload runs in that many worker processes (spawned, as uvicorn
    starts its workers) and this one serves their metrics merged, through prometheus_client's
    multi-process mode (a directory of its own unless ``PROMETHEUS_MULTIPROC_DIR`` is set).
    """
    if workers:
        return _main_with_workers(port, addr, threads, interval, seconds, workers, out)
    policy = tracedpolicy.install(metrics_port=port, metrics_addr=addr, health=True, **_otlp(out))
    if not _announce(out):
        return 1  # tracedpolicy said why, and what to do, in one line
    stop = _stop_on_signals()
    try:
        _work_until(policy, threads, interval, seconds, stop, out, summary_line)
    finally:
        _restore_signals(stop)
    print(f"stopped. {summary_line()}", file=out)
    tracedpolicy.uninstall()
    return 0


def _announce(out: TextIO) -> bool:
    """Print where the metrics are served, and the command for the report; False if nowhere."""
    server = tracedpolicy.metrics_server()
    if server is None:
        return False
    host, bound_port = server.server_address[:2]
    print(f"serving metrics on http://{host}:{bound_port}/metrics (Ctrl-C to stop)", file=out)
    print(f"open loops: {_python()} -m tracedpolicy report http://{host}:{bound_port}", file=out)
    out.flush()
    return True


class _Stop(threading.Event):
    """Set by Ctrl-C (and SIGTERM) rather than raising: a KeyboardInterrupt that lands in a
    ``__del__`` or weakref callback during the demo's gc.collect() would be lost."""

    handlers: dict[Any, Any]


def _stop_on_signals() -> _Stop:
    stop = _Stop()
    stop.handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in STOP_SIGNALS}
    return stop


def _restore_signals(stop: _Stop) -> None:
    for sig, handler in stop.handlers.items():
        signal.signal(sig, handler)


def _work_until(
    policy: Any,
    threads: int,
    interval: float,
    seconds: float | None,
    stop: threading.Event,
    out: TextIO | None,
    summary: Any,
) -> None:
    """The workload: worker threads, and the main thread's own loops and leaks, until told."""
    workload = Workload(policy, threads, pause=0.01)
    workload.stop = stop
    workload.start()
    server = serve_and_block_now_and_then(stop)
    factory = tracedpolicy.loop_factory(label="demo.loop_factory")
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            asyncio.run(_tick())
            leak_one_of_each(policy)
            if sys.version_info >= (3, 12):
                asyncio.run(_tick(), loop_factory=factory)
            stop.wait(interval)
            if out is not None:
                print(summary(), file=out)
                out.flush()
    finally:
        stop.set()
        server.join()
        workload.join()


def _worker(threads: int, interval: float, stop: Any) -> None:
    """A worker process of ``--workers``: the workload, its metrics into the shared directory."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process tells it when to stop
    policy = tracedpolicy.install(health=True, **_otlp(None))
    relay = threading.Event()  # the workload waits on a thread event; stop is a process one

    def wait_for_stop() -> None:
        import multiprocessing

        parent = multiprocessing.parent_process()
        # Told to stop, or the main process is gone (killed): a worker never outlives it.
        while not stop.wait(0.5) and (parent is None or parent.is_alive()):
            pass
        relay.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    _work_until(policy, threads, interval, None, relay, None, summary_line)
    tracedpolicy.uninstall()


def _main_with_workers(
    port: int,
    addr: str,
    threads: int,
    interval: float,
    seconds: float | None,
    workers: int,
    out: TextIO,
) -> int:
    import multiprocessing
    import shutil
    import tempfile

    # prometheus_client before the directory is set: this process serves, merging the
    # workers' files; its own metrics stay in memory, it writes none.
    import prometheus_client  # noqa: F401

    from tracedpolicy.exporters import multiprocess

    made_directory = None
    if multiprocess.directory() is None:
        made_directory = tempfile.mkdtemp(prefix="tracedpolicy-demo-")
        os.environ[multiprocess.PROMETHEUS_MULTIPROC_DIR] = made_directory
    try:
        tracedpolicy.install(metrics_port=port, metrics_addr=addr)
        if not _announce(out):
            return 1
        print(f"{workers} worker processes; /metrics adds them up", file=out)
        context = multiprocessing.get_context("spawn")
        stop_workers = context.Event()
        processes = [
            context.Process(
                target=_worker, args=(threads, interval, stop_workers), name=f"demo-worker-{n}"
            )
            for n in range(workers)
        ]
        for process in processes:
            process.start()
        stop = _stop_on_signals()
        deadline = None if seconds is None else time.monotonic() + seconds
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                stop.wait(interval)
                print(workers_summary_line(), file=out)
                out.flush()
        finally:
            _restore_signals(stop)
            stop_workers.set()
            for process in processes:
                process.join()
        print(f"stopped. {workers_summary_line()}", file=out)
        tracedpolicy.uninstall()
        return 0
    finally:
        if made_directory is not None:
            del os.environ[multiprocess.PROMETHEUS_MULTIPROC_DIR]
            shutil.rmtree(made_directory, ignore_errors=True)


def workers_summary_line() -> str:
    """Totals over every process of the multi-process directory, as one scrape sees them."""
    from tracedpolicy.exporters import multiprocess as tracedpolicy_multiprocess

    registry = tracedpolicy_multiprocess.registry_of_every_process()
    totals: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    pids = {
        name.rsplit("_", 1)[1].split(".")[0]
        for name in os.listdir(tracedpolicy_multiprocess.directory() or ".")
        if name.startswith("counter_")
    }

    def total(name: str) -> int:
        return int(totals.get(name, 0))

    return (
        f"processes {len(pids)} | loops created {total('asyncio_loop_created_total')}"
        f" closed {total('asyncio_loop_closed_total')} open {total('asyncio_loop_open')}"
        f" | leaked {total('asyncio_loop_leaked_total')}"
    )


@contextlib.contextmanager
def abandoned_loops_finalized_quietly() -> Iterator[None]:
    """Keep CPython's own failure to close an abandoned loop off the demo's output.

    An unclosed selector loop is freed by the cyclic garbage collector, which may finalize its
    self-pipe sockets first; asyncio's ``__del__`` then fails to close it (``Exception ignored
    in BaseEventLoop.__del__ ... ValueError: Invalid file descriptor: -1``), without
    tracedpolicy too. The demo abandons loops on purpose, so that line is noise there; any
    other unraisable exception is reported as before.
    """
    previous = sys.unraisablehook

    finalizer = asyncio.base_events.BaseEventLoop.__del__.__code__

    def hook(unraisable: Any) -> None:
        trace = unraisable.exc_traceback  # its first frame: where it was raised from
        code = trace.tb_frame.f_code if trace is not None else None
        if code is finalizer and isinstance(unraisable.exc_value, ValueError):
            return
        previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous
