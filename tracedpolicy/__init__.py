# ruff: noqa: E402 (the working directory leaves sys.path before the imports, under python -m)
"""tracedpolicy: observable asyncio event loop policies.

Wrap the process-wide policy, whatever it is, and every loop creation, ``set_event_loop`` and
``get_event_loop`` (hit, implicit creation or miss) is recorded, with nothing else changed::

    import asyncio, tracedpolicy

    tracedpolicy.install(metrics_port=9464)     # wraps the current policy (uvloop's, yours, ...)
    asyncio.run(main())                         # spans and metrics; /metrics on 127.0.0.1:9464
    print(tracedpolicy.snapshot())
    print(tracedpolicy.leak_report())           # the loops still open, by creation site

    @tracedpolicy.traced                        # or trace your own policy class
    class MyPolicy(asyncio.DefaultEventLoopPolicy): ...

    asyncio.run(main(), loop_factory=tracedpolicy.loop_factory())   # 3.12+, and past 3.16

(PYTEST_DONT_REWRITE: ``python -m tracedpolicy run -m pytest`` imports this package before
pytest loads its plugin, which pytest would otherwise warn about.)
"""

from __future__ import annotations

from tracedpolicy import _launcher

_launcher.forget_the_working_directory()  # first: before any import a working dir could shadow

from typing import Any

from tracedpolicy import hierarchy
from tracedpolicy.errors import internal_errors
from tracedpolicy.factory import TracedLoopFactory, loop_factory
from tracedpolicy.install import install, installed, uninstall
from tracedpolicy.instrument import instrument, instrumented, uninstrument
from tracedpolicy.policy import TracedEventLoopPolicy, is_traced, traced
from tracedpolicy.recorder import PolicyEvent, add_observer, remove_observer, snapshot
from tracedpolicy.report import leak_report, open_loops
from tracedpolicy.telemetry import metrics_server

__version__ = "0.1.0"

# The traced stdlib classes are listed only where the platform has them, as asyncio does.
__all__ = [
    *hierarchy.CLASSES,
    "PolicyEvent",
    "TracedEventLoopPolicy",
    "TracedLoopFactory",
    "add_observer",
    "install",
    "installed",
    "instrument",
    "instrumented",
    "internal_errors",
    "is_traced",
    "leak_report",
    "loop_factory",
    "metrics_server",
    "open_loops",
    "remove_observer",
    "snapshot",
    "traced",
    "uninstall",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    """Hand out the traced stdlib classes this platform has; fail like asyncio for the rest."""
    if name in hierarchy.CLASSES:
        return hierarchy.CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(hierarchy.CLASSES))
