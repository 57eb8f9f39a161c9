"""Run a small program bare and traced, each in a process of its own, and compare what is seen.

What a program shows the world must not change when the whole-process mode watches it: its
stdout, its stderr (warnings and tracebacks included), its exit code and ``sys.argv``. The
traced runs are ``python -m tracedpolicy run prog.py args`` and the program calling
``tracedpolicy.instrument()`` itself, on its first line (so every line keeps its number).

A ``sitecustomize`` put first on ``PYTHONPATH`` notes, at exit, each process's ``sys.argv`` and,
where tracedpolicy is loaded, its tally of loops made, closed and leaked (after a collection,
which the bare run makes too): a traced run of a program that closes its loops must count
each one closed and none leaked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The traced ways to run a program.
RUN = "run"
INSTRUMENT = "instrument"
MODES = (RUN, INSTRUMENT)

#: Warnings shown once per place, DeprecationWarnings included: a change anywhere shows.
PYTHON_OPTIONS = ("-W", "default")

SITECUSTOMIZE = """
import atexit, gc, json, os, sys

def _note():
    gc.collect()
    seen = {"argv": sys.argv}
    if "tracedpolicy.records.loops" in sys.modules:  # the mode is on (it loads the report lazily)
        import tracedpolicy.exporters.report
        seen["tally"] = list(tracedpolicy.report.totals())
    with open(os.environ["DIFFERENTIAL_SEEN"], "a") as out:
        out.write(json.dumps(seen) + "\\n")

atexit.register(_note)  # first registered, so the last to run
"""


@dataclass
class Seen:
    """What one run showed, and what its processes noted at exit (one entry per process)."""

    stdout: str
    stderr: str
    returncode: int
    argv: list[list[str]]
    tallies: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def visible(self) -> tuple[str, str, int, list[list[str]]]:
        """Everything the program or its user can see."""
        return self.stdout, self.stderr, self.returncode, self.argv


def run_program(
    tmp_path: Path,
    source: str,
    *args: str,
    mode: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Seen:
    """Run ``source`` as ``prog.py`` with ``args``: bare (``mode`` None) or traced."""
    source = textwrap.dedent(source).lstrip("\n")
    first = source.splitlines()[0] if source else ""
    if not first or first[0].isspace() or first.startswith(("from __future__", "#", '"')):
        raise ValueError("a program's first line must be a plain statement (instrument() joins it)")
    directory = tmp_path / (mode or "bare")
    directory.mkdir()
    (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
    seen_path = directory / "seen.jsonl"
    script = tmp_path / "prog.py"
    if mode == INSTRUMENT:
        source = "import tracedpolicy; tracedpolicy.instrument(); " + source
    script.write_text(source)
    command = [sys.executable, *PYTHON_OPTIONS]
    if mode == RUN:
        command += ["-m", "tracedpolicy", "run"]
    elif mode not in (None, INSTRUMENT):
        raise ValueError(f"unknown mode {mode!r}; known: {MODES}")
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(
        [*command, str(script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **(env or {}), "PYTHONPATH": path, "DIFFERENTIAL_SEEN": str(seen_path)},
        timeout=timeout,
    )
    notes: list[dict[str, Any]] = []
    if seen_path.exists():
        notes = [json.loads(line) for line in seen_path.read_text().splitlines()]
    return Seen(
        done.stdout,
        done.stderr,
        done.returncode,
        sorted(note["argv"] for note in notes),
        [tuple(note["tally"]) for note in notes if "tally" in note],
    )


def compare(
    tmp_path: Path,
    source: str,
    *args: str,
    modes: tuple[str, ...] = MODES,
    all_closed: bool = True,
    env: dict[str, str] | None = None,
) -> Seen:
    """Run ``source`` bare and in each traced mode; each traced run must show what the bare
    one did, and (``all_closed``: the program closes every loop it makes) count every loop it
    made as closed and none as leaked. Returns the bare run, for checks of its own."""
    bare = run_program(tmp_path, source, *args, env=env)
    for mode in modes:
        traced = run_program(tmp_path, source, *args, mode=mode, env=env)
        assert traced.visible == bare.visible, f"{mode}: {traced} differs from bare: {bare}"
        if all_closed:
            assert traced.tallies, f"{mode}: no process noted its tally: {traced}"
            for made, closed, leaked in traced.tallies:
                assert (closed, leaked) == (made, 0), f"{mode}: {traced.tallies}"
    return bare
