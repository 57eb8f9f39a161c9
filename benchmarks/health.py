"""What loop health costs: callback-heavy loops bare and watched, side by side in one run.

    python benchmarks/health.py            # the README's figures (a million callbacks)
    python benchmarks/health.py --quick    # fewer callbacks and rounds (CI runs this)

Two workloads: a ``call_soon`` ping-pong (each callback schedules the next: one callback per
loop iteration, the worst case for anything done per iteration) and a loopback echo server
answering many short requests over a few connections. Each runs on a fresh selector loop:

- ``bare``: asyncio's own loop, nothing added;
- ``tracedpolicy health``: made through ``tracedpolicy.loop_factory()`` with ``health=True``
  (delay probe, timed wait for utilization, blocking watchdog, all three);
- ``loopmon``: aiodebug's successor, a 10 ms sleep probe (lag only), if installed;
- ``monitored-ioloop``: wraps every callback, if installed.

Each round measures every variant in turn (a different one first each round); the table shows
each variant's best time and two ratios against ``bare``: best over best, and the median over
rounds of the ratio within a round (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import tracedpolicy

LoopMaker = Callable[[], asyncio.AbstractEventLoop]


def ping_pong(loop: asyncio.AbstractEventLoop, callbacks: int) -> None:
    """``callbacks`` callbacks, each scheduling the next."""
    done = loop.create_future()
    left = [callbacks]

    def ping() -> None:
        left[0] -= 1
        if left[0]:
            loop.call_soon(ping)
        else:
            done.set_result(None)

    loop.call_soon(ping)
    loop.run_until_complete(done)


class Echo(asyncio.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def echo(loop: asyncio.AbstractEventLoop, requests: int, connections: int = 8) -> None:
    """``requests`` short request/answer round trips over loopback, spread on connections."""

    async def client(port: int, count: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(count):
            writer.write(b"ping\n")
            await reader.readexactly(5)
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        share = requests // connections
        await asyncio.gather(*(client(port, share) for _ in range(connections)))
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


def variants() -> dict[str, tuple[LoopMaker, Callable[[asyncio.AbstractEventLoop], Any]]]:
    """Each variant: how its loop is made, and what to do in it before the workload."""
    watched = tracedpolicy.loop_factory(
        asyncio.SelectorEventLoop, label="benchmark", health=True, prometheus=False
    )
    chosen: dict[str, tuple[LoopMaker, Callable[[asyncio.AbstractEventLoop], Any]]] = {
        "bare": (asyncio.SelectorEventLoop, lambda loop: None),
        "tracedpolicy health": (watched, lambda loop: None),
    }
    try:
        import loopmon

        def start_loopmon(loop: asyncio.AbstractEventLoop) -> Callable[[], Any]:
            async def start() -> Any:
                return loopmon.create(loop, interval=0.01, callbacks=[])

            monitor = loop.run_until_complete(start())

            def finish() -> None:
                loop.run_until_complete(monitor.stop())
                loop.run_until_complete(asyncio.gather(*asyncio.all_tasks(loop)))  # its sleep

            return finish

        chosen["loopmon 10 ms"] = (asyncio.SelectorEventLoop, start_loopmon)
    except ImportError:
        print("(loopmon not installed: pip install loopmon)")
    try:
        from monitored_ioloop import monitored_asyncio_loop_factory

        chosen["monitored-ioloop"] = (
            monitored_asyncio_loop_factory(lambda state: None),
            lambda loop: None,
        )
    except Exception:  # ImportError, or its own NoUvLoopInstalled
        print("(monitored-ioloop not installed: pip install 'monitored-ioloop[uvloop]')")
    return chosen


def measure(
    workload: Callable[[asyncio.AbstractEventLoop], None],
    chosen: dict[str, tuple[LoopMaker, Callable[[asyncio.AbstractEventLoop], Any]]],
    rounds: int,
) -> tuple[dict[str, float], dict[str, float]]:
    """Each variant's best time, and the median over rounds of its time over bare's in that
    same round (a round's variants share the machine's state, so the paired ratio is steadier)."""
    times: dict[str, list[float]] = {name: [] for name in chosen}
    names = list(chosen)
    for turn in range(rounds):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:  # each goes first
            make, prepare = chosen[name]
            loop = make()
            try:
                finish = prepare(loop)
                began = time.perf_counter()
                workload(loop)
                times[name].append(time.perf_counter() - began)
                if callable(finish):
                    finish()
            finally:
                loop.close()
    best = {name: min(values) for name, values in times.items()}
    ratios = {
        name: statistics.median(t / b for t, b in zip(values, times["bare"]))
        for name, values in times.items()
    }
    return best, ratios


def print_table(
    title: str, unit: str, count: int, best: dict[str, float], ratios: dict[str, float]
) -> None:
    print(f"\n{title}")
    print(f"{'variant':<24}{unit:>16}{'best vs bare':>14}{'median paired':>15}")
    for name, seconds in best.items():
        print(
            f"{name:<24}{seconds * 1e9 / count:>13.0f} ns"
            f"{seconds / best['bare']:>13.3f}x{ratios[name]:>14.3f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer callbacks and rounds, for CI")
    args = parser.parse_args(argv)
    callbacks, requests, rounds = (200_000, 4_000, 3) if args.quick else (1_000_000, 20_000, 7)
    print(f"CPython {sys.version.split()[0]}, best of {rounds} rounds")
    chosen = variants()
    best, ratios = measure(lambda loop: ping_pong(loop, callbacks), chosen, rounds)
    title = f"call_soon ping-pong, {callbacks:,} callbacks"
    print_table(title, "per callback", callbacks, best, ratios)
    best, ratios = measure(lambda loop: echo(loop, requests), chosen, rounds)
    print_table(f"loopback echo, {requests:,} requests", "per request", requests, best, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
