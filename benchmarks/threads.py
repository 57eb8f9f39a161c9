"""Does tracing scale with threads? CPU per loop cycle, 8 threads over 1, bare and traced.

    python benchmarks/threads.py            # the README's figures
    python benchmarks/threads.py --quick    # fewer rounds

A cycle is what a thread does with a loop of its own: make, set, get (a hit), clear, close,
through the process-wide policy (traced by ``install()``, or bare). Each figure is CPU time
(``time.process_time``, every thread's) divided by the cycles made, measured in a fresh process
per set-up. A round measures the four set-ups (bare and traced, 1 and 8 threads) back to back,
in an order that turns each round, and gives one paired figure: traced's 8/1 ratio over bare's.
The median of the rounds is reported with its spread (a shared machine moves single figures by
tens of percent; a pair measured within seconds of each other moves much less).

On a free-threaded build (no GIL) the threads run at once: a lock or a shared counter that every
thread takes shows as CPU per cycle growing with threads. With a GIL the threads take turns, and
the figures say what switching costs. Traced scales as well as bare when the paired figure is
within 1.1x.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import sysconfig
import textwrap

RUN = """
import asyncio, sys, threading, time
if sys.argv[1] == "traced":
    import tracedpolicy
    tracedpolicy.install()
THREADS, CYCLES = int(sys.argv[2]), int(sys.argv[3])
policy = asyncio.get_event_loop_policy()


def cycles(start):
    start.wait()
    for _ in range(CYCLES):
        loop = policy.new_event_loop()
        policy.set_event_loop(loop)
        policy.get_event_loop()
        policy.set_event_loop(None)
        loop.close()


cycles(threading.Barrier(1))  # warm up: classes hooked, recorders made
start = threading.Barrier(THREADS + 1)
threads = [threading.Thread(target=cycles, args=(start,)) for _ in range(THREADS)]
for thread in threads:
    thread.start()
began = time.process_time()
start.wait()
for thread in threads:
    thread.join()
print((time.process_time() - began) / (THREADS * CYCLES))
"""


def cpu_per_cycle(mode: str, threads: int, cycles: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RUN), mode, str(threads), str(cycles)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout.split()[-1])


SETUPS = (("bare", 1), ("bare", 0), ("traced", 1), ("traced", 0))  # 0: --threads


def one_round(turn: int, threads: int, cycles: int) -> dict[tuple[str, int], float]:
    """The four set-ups back to back, starting at a different one each round."""
    order = SETUPS[turn % 4 :] + SETUPS[: turn % 4]
    figures = {}
    for mode, count in order:
        count = count or threads
        figures[(mode, count)] = cpu_per_cycle(mode, count, cycles)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 11, quick 3)")
    parser.add_argument("--cycles", type=int, default=0, help="per thread (default 3000)")
    args = parser.parse_args(argv)
    rounds, cycles = (3, 300) if args.quick else (11, 3000)
    rounds, cycles = args.rounds or rounds, args.cycles or cycles
    many = args.threads
    figures: dict[tuple[str, int], list[float]] = {}
    paired: list[float] = []
    for turn in range(rounds):
        measured = one_round(turn, many, cycles)
        for key, value in measured.items():
            figures.setdefault(key, []).append(value)
        traced = measured[("traced", many)] / measured[("traced", 1)]
        bare = measured[("bare", many)] / measured[("bare", 1)]
        paired.append(traced / bare)
    median = {key: statistics.median(values) for key, values in figures.items()}
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    build = "free-threaded, GIL off" if not gil else "with the GIL"
    if sysconfig.get_config_var("Py_GIL_DISABLED") and gil:
        build = "free-threaded build, GIL turned back on"
    print(f"Python {sys.version.split()[0]} ({build}), {rounds} rounds of {cycles} cycles")
    print()
    print(f"| CPU per cycle (median) | 1 thread | {many} threads | {many} / 1 |")
    print("|---|---:|---:|---:|")
    for mode in ("bare", "traced"):
        one, lots = median[(mode, 1)], median[(mode, many)]
        print(f"| {mode} | {one * 1e6:,.1f} µs | {lots * 1e6:,.1f} µs | {lots / one:.2f}x |")
    print()
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    print(
        f"traced scales {statistics.median(paired):.2f}x as bare does, paired by round "
        f"(1.00x: as well; quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f}, "
        f"range {min(paired):.2f}-{max(paired):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
