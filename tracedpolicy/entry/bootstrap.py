"""The whole-process mode in every process of ``python -m tracedpolicy run``.

``run`` does not run the program itself: it starts it anew, as ``python [-m] target args``
with the same interpreter and flags, with :mod:`tracedpolicy._bootstrap` first on
``PYTHONPATH`` and ``TRACEDPOLICY_BOOTSTRAP`` set. The program is then ``__main__``, its
``sys.path``, ``__file__`` and warnings are what ``python`` gives them, and every Python process
it starts is traced as well. On POSIX the program replaces ``run`` (same pid, same signals).

The process ``run`` started serves the metrics (``TRACEDPOLICY_METRICS_PORT``) and prints the
tally at exit, and so does any image it ``os.exec*``'s into (the same pid); processes it starts
in turn trace their own loops without serving, so nobody fights over the port. A daemon (forked
twice, its parents gone) is a forked child: it traces, but the server was a thread of the first.
The mode starts as asyncio is first imported (see the sitecustomize), so a process that never
imports it never loads tracedpolicy. ``python -E``, ``-I`` or ``-S`` ignore ``PYTHONPATH`` or
``site``: there the mode cannot start, so ``run`` refuses them (:func:`unstartable_under`).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from typing import Any, NoReturn

#: Set by ``run`` for the processes of a traced program: ``main`` for the one it starts, which
#: writes its pid there: the processes it starts in turn (other pids) are workers, and the
#: images it exec's into (its pid) still the first.
TRACEDPOLICY_BOOTSTRAP = "TRACEDPOLICY_BOOTSTRAP"
MAIN = "main"

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")


def start() -> None:
    """In a process of a ``run``: turn the whole-process mode on (sitecustomize calls this)."""
    if os.environ.get(TRACEDPOLICY_BOOTSTRAP, ""):
        start_here(announce=True)


def first_of_its_family() -> bool:
    """Whether this process is the first of its family (unmarked yet, or marked with its pid),
    in whatever image it has exec'd into; marks the environment for the processes it starts."""
    mark, here = os.environ.get(TRACEDPOLICY_BOOTSTRAP, ""), str(os.getpid())
    if mark in ("", MAIN):
        os.environ[TRACEDPOLICY_BOOTSTRAP] = mark = here
    return mark == here


def start_here(announce: bool = False, **options: Any) -> None:
    """Turn the whole-process mode on in this process, as the first of its family or not.

    The first (``run``'s program, or the first process ``opentelemetry-instrument`` starts)
    serves the metrics and prints the tally at exit, and marks the environment so that the
    processes it starts in turn trace their own loops without fighting over the port.
    """
    import tracedpolicy
    from tracedpolicy.exporters import otlp

    options = {**otlp.export_tracedpolicy(), **options}  # OTEL_EXPORTER_OTLP_*: each its own
    if not first_of_its_family():
        tracedpolicy.instrument(metrics_port=None, report_at_exit=False, **options)
        return
    tracedpolicy.instrument(**options)
    server = tracedpolicy.metrics_server()
    if announce and server is not None:
        host, port = server.server_address[:2]
        print(f"tracedpolicy: metrics on http://{host}:{port}/metrics", file=sys.stderr)


def environment(base: dict[str, str]) -> dict[str, str]:
    """``base`` with the bootstrap on: the folder first on PYTHONPATH, the role ``main``."""
    paths = [FOLDER, *(p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {**base, "PYTHONPATH": os.pathsep.join(paths), TRACEDPOLICY_BOOTSTRAP: MAIN}


def run(target: str, arguments: list[str], as_module: bool) -> NoReturn:
    """Start ``python [-m] target arguments`` traced, in place of this process where it can."""
    command = [
        sys.executable,
        *_interpreter_flags(),
        *(["-m", target] if as_module else [target]),
        *arguments,
    ]
    env = environment(dict(os.environ))
    if os.name == "posix":
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, command, env)
    # Windows keeps no process across an exec: a child, whose exit code becomes ours.
    sys.exit(subprocess.call(command, env=env))


def unstartable_under() -> str | None:
    """The flag this interpreter runs with that keeps the bootstrap from starting, if any.

    The program would run untraced without a word: ``-E`` and ``-I`` ignore ``PYTHONPATH``
    (where the bootstrap's ``sitecustomize`` is), ``-S`` imports no ``sitecustomize``.
    """
    if sys.flags.isolated:
        return "-I"
    if sys.flags.ignore_environment:
        return "-E"
    if sys.flags.no_site:
        return "-S"
    return None


def _interpreter_flags() -> list[str]:
    """The flags this interpreter runs with (-W, -X, -O, -u, -i, ...), for the program's.

    subprocess's list leaves out what ``sys.flags`` does not show. ``-x`` cannot be seen at
    all; it only skips the first line of the launcher's own source, so it is not passed on.
    """
    flags: Any = getattr(subprocess, "_args_from_interpreter_flags", None)
    found = list(flags()) if callable(flags) else []
    if _unbuffered():
        found.append("-u")
    if sys.flags.inspect:  # -i, or PYTHONINSPECT (which the program inherits anyway)
        found.append("-i")
    return found


def _unbuffered() -> bool:
    """Whether this interpreter runs with ``-u`` (or ``PYTHONUNBUFFERED``, inherited anyway).

    ``sys.flags`` does not say; but only then are the standard streams written straight to
    their raw file: their binary layer is an ``io.FileIO``, not a buffered writer.
    """
    streams = (sys.__stdout__, sys.__stderr__)
    return any(isinstance(getattr(s, "buffer", None), io.FileIO) for s in streams)
