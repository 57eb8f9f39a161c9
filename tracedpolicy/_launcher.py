"""Keep the working directory out of the imports of ``python -m tracedpolicy`` itself.

``python -m`` puts the working directory first on ``sys.path``; a ``logging.py`` there would
run in the launcher as it imports its dependencies, and could abort ``run``. The program that
``run`` starts gets python's own ``sys.path`` anyway (it is started anew), so the launcher drops
that entry before the package imports anything else. Importing tracedpolicy from another
``python -m`` program changes nothing.
"""

from __future__ import annotations

import os
import sys

#: The names ``python -m`` is given to run this package.
LAUNCHERS = ("tracedpolicy", "tracedpolicy.__main__")


def forget_the_working_directory() -> None:
    """In ``python -m tracedpolicy``'s own start, drop the working directory from sys.path."""
    if sys.argv[:1] != ["-m"] or getattr(sys.flags, "safe_path", False) or sys.flags.isolated:
        return  # not being found by python -m, or no working directory on sys.path
    if not _being_run_as_main():
        return
    try:
        here = os.getcwd()
    except OSError:
        return
    if sys.path and sys.path[0] in ("", here):
        del sys.path[0]


def _being_run_as_main() -> bool:
    """Whether runpy is importing this package to run it as ``__main__``."""
    runpy = sys.modules.get("runpy")
    code = getattr(getattr(runpy, "_run_module_as_main", None), "__code__", None)
    frame: object = sys._getframe(1)
    while frame is not None:
        if getattr(frame, "f_code", None) is code:
            return getattr(frame, "f_locals", {}).get("mod_name") in LAUNCHERS
        frame = getattr(frame, "f_back", None)
    return False
