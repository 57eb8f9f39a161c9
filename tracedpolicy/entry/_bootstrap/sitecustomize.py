# ruff: noqa: F401, UP004, UP031, UP036 (Python 2 reads this file: no f-strings, annotations)
"""Turn tracedpolicy's whole-process mode on in every Python process of a ``run``, when needed.

``python -m tracedpolicy run`` starts the program with this folder first on ``PYTHONPATH``, so
Python imports this module at startup, in the program's process and in every Python process
it starts in turn (multiprocessing's spawn and forkserver workers, uvicorn's and gunicorn's,
``subprocess`` calls of Python), as ``opentelemetry-instrument`` reaches them.

It costs next to nothing: it imports no tracedpolicy, only puts a finder on ``sys.meta_path``
that turns the mode on once ``asyncio`` has been imported (uvloop imports asyncio first), so a
process that never imports asyncio never loads tracedpolicy. The mode starts at once where
asyncio is already imported (by a ``.pth`` file, say) or the first process is asked for a
metrics port or loop health (see _serves_from_the_start), and after the sitecustomize this one
hides (a virtualenv's, OpenTelemetry's, the application's), which runs next, if that imported
asyncio without the finder seeing it.

Written for any Python (no annotations, no f-strings): one it cannot serve (2.7, 3.6, ...) only
runs the hidden sitecustomize, silently.
"""

import os
import sys

TYPE_CHECKING = False  # typing's would cost an import
if TYPE_CHECKING:
    from typing import Any, Optional

ROLE = "TRACEDPOLICY_BOOTSTRAP"  # tracedpolicy.entry.bootstrap.TRACEDPOLICY_BOOTSTRAP
MAIN = "main"
OLDEST = (3, 9)


def _first_of_the_run():
    # type: () -> bool
    """Whether this is the process ``run`` started, in whatever image it has exec'd into.

    ``run`` marks it ``main``; it writes its pid in its place, so a process it starts (another
    pid) is a worker, and an ``os.exec*`` of itself (the same pid) is still the first.
    (tracedpolicy.entry.bootstrap.first_of_its_family, for this module, which imports nothing.)
    """
    mark, here = os.environ.get(ROLE, ""), str(os.getpid())
    if mark == MAIN:
        os.environ[ROLE] = mark = here
    return mark == here


def _serves_from_the_start():
    # type: () -> bool
    """Whether the first process is asked for a port (its URL is printed as the program starts)
    or for loop health (its thread starts with the mode: at start-up, not inside whichever code,
    a test say, happens to import asyncio first)."""
    health = os.environ.get("TRACEDPOLICY_HEALTH", "").strip().lower()
    return bool(os.environ.get("TRACEDPOLICY_METRICS_PORT")) or health in ("1", "true", "on", "yes")


def _start():
    # type: () -> None
    """The whole-process mode on, now; a failure is one line on stderr, the program goes on."""
    try:
        from tracedpolicy.entry.bootstrap import start
    except ImportError:  # an interpreter without tracedpolicy: nothing to trace with
        return
    try:
        start()
    except Exception as error:  # the program's import of asyncio must not fail for us
        sys.stderr.write("tracedpolicy: the whole-process mode did not start: %s\n" % (error,))


class _StartAfter(object):
    """asyncio's own loader, which starts the mode once asyncio has run; it answers every
    other question as the real loader, and the module names the real one."""

    def __init__(self, loader, finder):
        # type: (Any, _WhenAsyncioIsImported) -> None
        self.loader, self.finder = loader, finder

    def __getattr__(self, name):
        # type: (str) -> Any
        return getattr(self.loader, name)

    def create_module(self, spec):
        # type: (Any) -> Any
        return self.loader.create_module(spec)

    def exec_module(self, module):
        # type: (Any) -> None
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.finder.remove()
        _start()


class _WhenAsyncioIsImported(object):
    """Finds nothing itself: hands asyncio's spec over with a loader that starts the mode."""

    def find_spec(self, fullname, path=None, target=None):
        # type: (str, Any, Any) -> Any
        if fullname != "asyncio":
            return None
        for finder in list(sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is None:
                continue
            if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader = _StartAfter(spec.loader, self)
            return spec
        return None

    def remove(self):
        # type: () -> None
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def _turn_on():
    # type: () -> Optional[_WhenAsyncioIsImported]
    """Start the mode now if it is needed already, else when asyncio is imported."""
    role = os.environ.get(ROLE, "")
    if not role or sys.version_info < OLDEST:
        return None
    if "asyncio" in sys.modules or (_first_of_the_run() and _serves_from_the_start()):
        _start()
        return None
    finder = _WhenAsyncioIsImported()
    sys.meta_path.insert(0, finder)
    return finder


def _run_the_hidden_sitecustomize():
    # type: () -> None
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    if sys.version_info[0] < 3:
        import imp  # Python 2, which has no find_spec

        try:
            found = imp.find_module("sitecustomize", rest)
        except ImportError:
            return
        try:
            imp.load_module("sitecustomize", *found)
        finally:
            if found[0] is not None:
                found[0].close()
        return
    # The import system's own modules, always loaded: importlib.util would cost an import.
    machinery = sys.modules["_frozen_importlib_external"]
    spec = machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = sys.modules["_frozen_importlib"].module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


_finder = _turn_on()
_run_the_hidden_sitecustomize()
if _finder is not None and "asyncio" in sys.modules and _finder in sys.meta_path:
    _finder.remove()  # the hidden one imported asyncio past the finder (a finder of its own)
    _start()
del _finder
