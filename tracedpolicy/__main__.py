"""``python -m tracedpolicy``: the command line (run, demo, report) of
:mod:`tracedpolicy.entry.cli`."""

from __future__ import annotations

import sys

from tracedpolicy.entry.cli import main as main

if __name__ == "__main__":
    sys.exit(main())
