"""What loop health costs: callback-heavy loops bare and watched, side by side in one run.

    python benchmarks/health.py            # the README's figures (a million callbacks)
    python benchmarks/health.py --quick    # fewer callbacks and rounds (CI runs this)

Two workloads: a ``call_soon`` ping-pong (each callback schedules the next: one callback per
loop iteration, the worst case for anything done per iteration) and a loopback echo server
answering many short requests over a few connections. Each runs on a fresh selector loop:

- ``bare``: asyncio's own loop, nothing added;
- ``tracedpolicy health``: made through ``tracedpolicy.loop_factory()`` with ``health=True``
  (delay probe, timed wait for utilization, blocking watchdog, all three); health is turned off
  for every other variant, so its class hooks (``select``, ``run_forever``) are not in theirs;
- ``loopmon``: aiodebug's successor, a 10 ms sleep probe (lag only), if installed;
- ``monitored-ioloop``: wraps every callback, if installed.

Each round measures every variant in turn (a different one first each round), by CPU time
(``time.process_time``: every thread of the process, the watchdog's included) and wall time.
The table shows each variant's best CPU time per operation and, against ``bare`` in the same
round, the median of the paired CPU ratios with their spread (the middle half of the rounds,
and the extremes), and the median paired wall-time ratio beside it. CPU time is what health
costs; it is also much less moved than wall time by other work on a shared machine.
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
from tracedpolicy.health import monitor as health

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

    def health_on() -> asyncio.AbstractEventLoop:
        health.configure(True, health.Settings())
        return watched()

    chosen: dict[str, tuple[LoopMaker, Callable[[asyncio.AbstractEventLoop], Any]]] = {
        "bare": (asyncio.SelectorEventLoop, lambda loop: None),
        "tracedpolicy health": (health_on, lambda loop: None),
    }
    try:
        import loopmon

        def start_loopmon(loop: asyncio.AbstractEventLoop) -> Callable[[], Any]:
            async def start() -> Any:
                return loopmon.create(loop, interval=0.01, callbacks=[])

            monitor = loop.run_until_complete(start())

            def finish() -> None:
                loop.run_until_complete(monitor.stop())
                left = asyncio.all_tasks(loop)  # its sleep, unless it ended already
                if left:  # (gather() of nothing would make its future on another loop)
                    loop.run_until_complete(asyncio.gather(*left))

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


Timings = dict[str, list[tuple[float, float]]]
"""Per variant, each round's (CPU seconds, wall seconds)."""


def measure(
    workload: Callable[[asyncio.AbstractEventLoop], None],
    chosen: dict[str, tuple[LoopMaker, Callable[[asyncio.AbstractEventLoop], Any]]],
    rounds: int,
) -> Timings:
    """Every variant once per round, a different one first each round."""
    times: Timings = {name: [] for name in chosen}
    names = list(chosen)
    for turn in range(rounds):
        for name in names[turn % len(names) :] + names[: turn % len(names)]:
            make, prepare = chosen[name]
            # Health's class hooks stay on while it is on: every other variant runs with it off.
            health.configure(False, health.Settings())
            loop = make()
            try:
                finish = prepare(loop)
                cpu, wall = time.process_time(), time.perf_counter()
                workload(loop)
                times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
                if callable(finish):
                    finish()
            finally:
                loop.close()
    return times


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """The first quartile, median and third quartile."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, middle, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, middle, high


def print_table(title: str, unit: str, count: int, times: Timings) -> None:
    bare = times["bare"]
    print(f"\n{title}")
    print(
        f"{'variant':<22}{'CPU ' + unit:>18}{'CPU paired':>12}{'middle half':>14}"
        f"{'extremes':>14}{'wall paired':>13}"
    )
    for name, values in times.items():
        cpu = [t[0] / b[0] for t, b in zip(values, bare)]
        wall = [t[1] / b[1] for t, b in zip(values, bare)]
        low, middle, high = quartiles(cpu)
        best = min(t[0] for t in values)
        print(
            f"{name:<22}{best * 1e9 / count:>15.0f} ns{middle:>11.3f}x"
            f"{f'{low:.3f}-{high:.3f}':>14}{f'{min(cpu):.3f}-{max(cpu):.3f}':>14}"
            f"{statistics.median(wall):>12.3f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer callbacks and rounds, for CI")
    parser.add_argument("--rounds", type=int, help="rounds (default: 15, quick: 3)")
    args = parser.parse_args(argv)
    callbacks, requests, rounds = (200_000, 4_000, 3) if args.quick else (1_000_000, 20_000, 15)
    rounds = args.rounds or rounds
    print(f"CPython {sys.version.split()[0]}, {rounds} rounds; ratios are paired with bare's")
    chosen = variants()
    times = measure(lambda loop: ping_pong(loop, callbacks), chosen, rounds)
    print_table(f"call_soon ping-pong, {callbacks:,} callbacks", "per callback", callbacks, times)
    times = measure(lambda loop: echo(loop, requests), chosen, rounds)
    print_table(f"loopback echo, {requests:,} requests", "per request", requests, times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
