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

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time each name is loaded when first asked for: see __getattr__
    from tracedpolicy.base.version import __version__ as __version__
    from tracedpolicy.exporters.report import leak_report as leak_report
    from tracedpolicy.exporters.report import open_loops as open_loops
    from tracedpolicy.exporters.telemetry import metrics_server as metrics_server
    from tracedpolicy.records.errors import internal_errors as internal_errors
    from tracedpolicy.records.events import PolicyEvent as PolicyEvent
    from tracedpolicy.records.events import add_observer as add_observer
    from tracedpolicy.records.events import remove_observer as remove_observer
    from tracedpolicy.records.recorder import (
        snapshot as snapshot,
    )
    from tracedpolicy.sources.factory import (
        TracedLoopFactory as TracedLoopFactory,
    )
    from tracedpolicy.sources.factory import (
        loop_factory as loop_factory,
    )
    from tracedpolicy.sources.install import (
        install as install,
    )
    from tracedpolicy.sources.install import (
        installed as installed,
    )
    from tracedpolicy.sources.install import (
        uninstall as uninstall,
    )
    from tracedpolicy.sources.instrument import (
        instrument as instrument,
    )
    from tracedpolicy.sources.instrument import (
        instrumented as instrumented,
    )
    from tracedpolicy.sources.instrument import (
        uninstrument as uninstrument,
    )
    from tracedpolicy.sources.policy import (
        TracedEventLoopPolicy as TracedEventLoopPolicy,
    )
    from tracedpolicy.sources.policy import (
        is_traced as is_traced,
    )
    from tracedpolicy.sources.subclass import traced as traced

#: Each public name, by the module that has it. ``import tracedpolicy`` loads none of them (a
#: launcher, ``python -m tracedpolicy``, needs none); the first use loads that module and what
#: it needs, never the exporters (see :mod:`tracedpolicy.telemetry`).
_PUBLIC = {
    "PolicyEvent": "records.events",
    "TracedEventLoopPolicy": "sources.policy",
    "TracedLoopFactory": "sources.factory",
    "add_observer": "records.events",
    "install": "sources.install",
    "installed": "sources.install",
    "instrument": "sources.instrument",
    "instrumented": "sources.instrument",
    "internal_errors": "records.errors",
    "is_traced": "sources.policy",
    "leak_report": "exporters.report",
    "loop_factory": "sources.factory",
    "metrics_server": "exporters.telemetry",
    "open_loops": "exporters.report",
    "remove_observer": "records.events",
    "snapshot": "records.recorder",
    "traced": "sources.subclass",
    "uninstall": "sources.install",
    "uninstrument": "sources.instrument",
}

#: The modules of the flat layout before the layers (see the README's Layout), by the module
#: that is now theirs: ``tracedpolicy.policy`` and the like still answer, as attributes.
_MOVED = {
    "_compat": "base._compat",
    "bootstrap": "entry.bootstrap",
    "construction": "sources.construction",
    "demo": "entry.demo",
    "errors": "records.errors",
    "factory": "sources.factory",
    "fleet": "exporters.fleet",
    "fleetvalues": "exporters.fleetvalues",
    "forksafe": "base.forksafe",
    "hierarchy": "sources.hierarchy",
    "imports": "base.imports",
    "loops": "records.loops",
    "making": "records.making",
    "metrics": "exporters.metrics",
    "multiprocess": "exporters.multiprocess",
    "options": "base.options",
    "otel": "exporters.otel",
    "otlp": "exporters.otlp",
    "patching": "base.patching",
    "policy": "sources.policy",
    "prometheus": "exporters.prometheus",
    "pytest_plugin": "entry.pytest_plugin",
    "recorder": "records.recorder",
    "report": "exporters.report",
    "stats": "records.stats",
    "telemetry": "exporters.telemetry",
}


def _classes() -> dict[str, type]:
    """The traced stdlib classes this platform has (loads the policies)."""
    from tracedpolicy.sources import hierarchy

    return hierarchy.CLASSES


def __getattr__(name: str) -> Any:
    """The public names, the traced stdlib classes this platform has and the submodules, each
    loaded when first asked for; fail like asyncio for the rest."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"tracedpolicy.{_PUBLIC[name]}"), name)
    elif name == "__version__":  # from the bottom layer, which every module may read
        value = importlib.import_module("tracedpolicy.base.version").__version__
    elif name == "__all__":  # the traced stdlib classes are listed only where they exist
        value = [*_classes(), *sorted(_PUBLIC)]
    elif name.startswith("Traced") and name.endswith("EventLoopPolicy"):
        if name in _classes():
            return _classes()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:
        try:  # a submodule: ``import tracedpolicy`` then ``tracedpolicy.policy``, as before
            return importlib.import_module(f"tracedpolicy.{_MOVED.get(name, name)}")
        except ModuleNotFoundError as error:
            if error.name != f"tracedpolicy.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | set(_classes()))


def _start_a_waiting_bootstrap() -> None:
    """Under ``run``, the mode starts once asyncio is imported. Were that first import one of
    our own modules' (``tracedpolicy.records.record`` imports asyncio at its top, and pytest
    loads our plugin before anything imports asyncio), the mode would start inside a half-run
    module of ours; importing asyncio here, where only this package has run, starts it before
    them."""
    if "asyncio" not in sys.modules and any(
        type(finder).__name__ == "_WhenAsyncioIsImported" for finder in sys.meta_path
    ):
        import asyncio  # noqa: F401  (the bootstrap's finder starts the mode as it runs)


_start_a_waiting_bootstrap()
