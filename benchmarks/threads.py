"""Does tracing scale with threads? CPU per loop cycle, 8 threads over 1, bare and traced.

    python benchmarks/threads.py            # the README's figures
    python benchmarks/threads.py --quick    # fewer rounds

A cycle is what a thread does with a loop of its own: make, set, get (a hit), clear, close,
through the process-wide policy (traced by ``install()``, or bare). Each figure is CPU time
(``time.process_time``, every thread's) divided by the cycles made, measured in a fresh process
per set-up, bare and traced alternately; the median of the repeats is kept. On a free-threaded
build (no GIL) the threads run at once: a lock or a shared counter that every thread takes shows
as CPU per cycle growing with threads. With a GIL the threads take turns, and the figures say
what switching costs. Traced scales as well as bare when its ratio is within 1.1x of bare's.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    repeats, cycles = (3, 300) if args.quick else (7, 1000)
    figures: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats):
        for threads in (1, args.threads):
            for mode in ("bare", "traced"):
                figures.setdefault((mode, threads), []).append(cpu_per_cycle(mode, threads, cycles))
    median = {key: statistics.median(values) for key, values in figures.items()}
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    build = "free-threaded, GIL off" if not gil else "with the GIL"
    if sysconfig.get_config_var("Py_GIL_DISABLED") and gil:
        build = "free-threaded build, GIL turned back on"
    print(f"Python {sys.version.split()[0]} ({build}), median of {repeats}, {cycles} cycles")
    print()
    print(f"| CPU per cycle | 1 thread | {args.threads} threads | {args.threads} / 1 |")
    print("|---|---:|---:|---:|")
    ratios = {}
    for mode in ("bare", "traced"):
        one, many = median[(mode, 1)], median[(mode, args.threads)]
        ratios[mode] = many / one
        print(f"| {mode} | {one * 1e6:,.1f} µs | {many * 1e6:,.1f} µs | {ratios[mode]:.2f}x |")
    print()
    print(f"traced scales {ratios['traced'] / ratios['bare']:.2f}x as bare does (1.00x: as well)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
