"""What ``python -m tracedpolicy run`` and ``import tracedpolicy`` add to a process's start-up.

Each case is a pair of commands, bare and traced, run alternately (so a busy moment of a shared
machine hits both alike) in fresh processes; reported are the medians of the pairs' wall times
and of the child's CPU time (user + system, from ``RUSAGE_CHILDREN`` deltas, which another
process's load barely moves), as the traced one's ratio and milliseconds added::

    python benchmarks/startup.py --runs 21 --python .venv39/bin/python --python .venv314/bin/python
    python benchmarks/startup.py --suite test_subprocess     # CPython's, bare and under run

Every interpreter given (default: this one) must have tracedpolicy installed.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass

ONE_RUN = "import asyncio\nasync def main():\n    pass\nasyncio.run(main())\n"


@dataclass(frozen=True)
class Case:
    name: str
    limit_ms: float
    bare: list[str]
    traced: list[str]
    traced_env: dict[str, str]


def cases(python: str, program: str) -> list[Case]:
    bootstrap = _bootstrap_environment(python)
    health = {"TRACEDPOLICY_HEALTH": "1"}
    return [
        Case("python -c pass", 5, [python, "-c", "pass"], [python, "-c", "pass"], bootstrap),
        Case(
            'python -c "import asyncio"',
            15,
            [python, "-c", "import asyncio"],
            [python, "-c", "import asyncio"],
            bootstrap,
        ),
        Case(
            "one asyncio.run, run + health",
            25,
            [python, program],
            [python, "-m", "tracedpolicy", "run", program],
            health,
        ),
        Case(
            "import tracedpolicy over asyncio",
            25,
            [python, "-c", "import asyncio"],
            [python, "-c", "import asyncio, tracedpolicy"],
            {},
        ),
        Case(
            "tracedpolicy.install() over asyncio",
            25,
            [python, "-c", "import asyncio"],
            [python, "-c", "import asyncio, tracedpolicy; tracedpolicy.install()"],
            {},
        ),
    ]


def suite_case(python: str, test: str) -> Case:
    """CPython's own ``test`` (test_subprocess starts Python ~200 times), bare and under run."""
    command = ["-m", "test", "-q", test]
    return Case(
        f"python -m test {test}",
        0,
        [python, *command],
        [python, "-m", "tracedpolicy", "run", *command],
        {},
    )


def _bootstrap_environment(python: str) -> dict[str, str]:
    """What ``run`` gives the program's process: the bootstrap first on PYTHONPATH, the role."""
    code = "import json, tracedpolicy.entry.bootstrap as b; print(json.dumps(b.environment({})))"
    import json

    found = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    given: dict[str, str] = json.loads(found.stdout)
    return given


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``command`` (CPU: this child's, from rusage)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(case: Case, runs: int) -> dict[str, tuple[float, float, float]]:
    """Median bare, traced and traced-minus-bare seconds, for wall and for CPU."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDPOLICY_")}
    base.pop("PYTHONPATH", None)
    # Bytecode is cached, as an installed package's is (pip compiles it): with
    # PYTHONDONTWRITEBYTECODE set, an editable checkout's modules would be compiled at every run.
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    traced_env = {**base, **case.traced_env}
    walls: list[tuple[float, float]] = []
    cpus: list[tuple[float, float]] = []
    for turn in range(runs + 1):
        pair = [(case.bare, base), (case.traced, traced_env)]
        if turn % 2:
            pair.reverse()
        (wall_a, cpu_a), (wall_b, cpu_b) = (timed(c, e) for c, e in pair)
        if turn % 2:
            wall_a, cpu_a, wall_b, cpu_b = wall_b, cpu_b, wall_a, cpu_a
        if turn:  # the first pair warms the file cache and writes the bytecode
            walls.append((wall_a, wall_b))
            cpus.append((cpu_a, cpu_b))
    return {"wall": _medians(walls), "cpu": _medians(cpus)}


def _medians(pairs: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    bare = statistics.median(a for a, _ in pairs)
    traced = statistics.median(b for _, b in pairs)
    added = statistics.median(b - a for a, b in pairs)
    return bare, traced, added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", action="append", help="an interpreter (repeatable)")
    parser.add_argument("--runs", type=int, default=21, help="alternated pairs per case")
    parser.add_argument("--suite", help="also a CPython test (test_subprocess), under run")
    parser.add_argument("--suite-runs", type=int, default=3, help="alternated pairs for it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        program = os.path.join(folder, "one_run.py")
        with open(program, "w") as file:
            file.write(ONE_RUN)
        for python in args.python or [sys.executable]:
            version = subprocess.run(
                [python, "-c", "import sys; print(sys.version.split()[0])"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            print(f"\nPython {version} ({python}), medians of {args.runs} alternated pairs")
            print(
                f"{'case':36} {'bare ms':>8} {'traced':>8} {'added':>7} {'ratio':>6}"
                f" | {'cpu bare':>8} {'traced':>7} {'added':>7} {'ratio':>6}  limit"
            )
            todo = [(case, args.runs) for case in cases(python, program)]
            if args.suite:
                todo.append((suite_case(python, args.suite), args.suite_runs))
            for case, runs in todo:
                got = measure(case, runs)
                (wb, wt, wa), (cb, ct, ca) = got["wall"], got["cpu"]
                if case.limit_ms:
                    ok = min(wa, ca) * 1000 <= case.limit_ms
                    limit = f"<= {case.limit_ms:g} ms {'ok' if ok else 'OVER'}"
                else:
                    ok = min(wt / wb, ct / cb) <= 1.15
                    limit = f"<= 1.15x {'ok' if ok else 'OVER'}"
                print(
                    f"{case.name:36} {wb * 1000:8.1f} {wt * 1000:8.1f} {wa * 1000:+7.1f}"
                    f" {wt / wb:6.2f} | {cb * 1000:8.1f} {ct * 1000:7.1f} {ca * 1000:+7.1f}"
                    f" {ct / cb:6.2f}  {limit}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
