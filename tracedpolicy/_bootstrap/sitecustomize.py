"""Turn tracedpolicy's whole-process mode on in every Python process of a ``run``.

``python -m tracedpolicy run`` starts the program with this folder first on ``PYTHONPATH``, so
Python imports this module at startup, in the program's process and in every Python process
it starts in turn (multiprocessing's spawn and forkserver workers, uvicorn's and gunicorn's,
``subprocess`` calls of Python), as ``opentelemetry-instrument`` reaches them. It hides the
sitecustomize that would otherwise have run (a virtualenv's, OpenTelemetry's), so it runs that
one afterwards.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _start() -> None:
    try:
        from tracedpolicy.bootstrap import start
    except ImportError:  # another interpreter without tracedpolicy: nothing to trace with
        return
    start()


def _run_the_hidden_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_start()
_run_the_hidden_sitecustomize()
