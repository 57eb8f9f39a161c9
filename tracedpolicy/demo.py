"""A small workload under a traced policy: what the README's main command runs.

Worker threads make loops, set and clear them, hit and miss, and some leave their loop
unclosed; the main thread runs ``asyncio.run`` and a loop factory. Everything goes through
``tracedpolicy.install()``, so the counts printed at the end are what a service would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from typing import Any, TextIO

import tracedpolicy


async def _tick() -> None:
    await asyncio.sleep(0)


def _worker(policy: Any, rounds: int, leak: bool) -> None:
    """One worker thread's life: a miss, then loops made, used, cleared and (mostly) closed."""
    with contextlib.suppress(RuntimeError):
        policy.get_event_loop()  # no loop yet in this thread: a miss
    for _ in range(rounds):
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        for _ in range(100):
            policy.get_event_loop()
        loop.run_until_complete(_tick())
        policy.set_event_loop(None)
        if not leak:
            loop.close()


def run_workload(threads: int = 4, rounds: int = 5) -> list[asyncio.AbstractEventLoop]:
    """Run the workload under the installed traced policy; return the loops left open."""
    policy = tracedpolicy.install()
    made: list[asyncio.AbstractEventLoop] = []

    def remember_new_loops(event: tracedpolicy.PolicyEvent) -> None:
        if event.kind == "new_event_loop" and event.loop is not None:
            made.append(event.loop)

    tracedpolicy.add_observer(remember_new_loops)
    workers = [
        threading.Thread(
            target=_worker, args=(policy, rounds, index == 0), name=f"demo-worker-{index}"
        )
        for index in range(threads)
    ]
    for worker in workers:
        worker.start()
    asyncio.run(_tick())
    if sys.version_info >= (3, 12):
        asyncio.run(_tick(), loop_factory=tracedpolicy.loop_factory(label="demo.loop_factory"))
    for worker in workers:
        worker.join()
    tracedpolicy.remove_observer(remember_new_loops)
    return [loop for loop in made if not loop.is_closed()]


def print_summary(out: TextIO = sys.stdout) -> None:
    """Print every label's counts as an aligned table."""
    for label, counts in tracedpolicy.snapshot().items():
        print(label, file=out)
        for key, value in sorted(counts.items()):
            print(f"  {key:<32} {value:>8}", file=out)
    errors = tracedpolicy.internal_errors()
    if errors:
        print(f"internal errors: {errors}", file=out)


def main(threads: int = 4, rounds: int = 5, out: TextIO = sys.stdout) -> int:
    left_open = run_workload(threads, rounds)
    print_summary(out)
    print(f"loops left open by the workload: {len(left_open)}", file=out)
    for loop in left_open:
        loop.close()
    tracedpolicy.uninstall()
    return 0
