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
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time each name is loaded when first asked for: see __getattr__
    from tracedpolicy.errors import internal_errors as internal_errors
    from tracedpolicy.factory import (
        TracedLoopFactory as TracedLoopFactory,
    )
    from tracedpolicy.factory import (
        loop_factory as loop_factory,
    )
    from tracedpolicy.install import (
        install as install,
    )
    from tracedpolicy.install import (
        installed as installed,
    )
    from tracedpolicy.install import (
        uninstall as uninstall,
    )
    from tracedpolicy.instrument import (
        instrument as instrument,
    )
    from tracedpolicy.instrument import (
        instrumented as instrumented,
    )
    from tracedpolicy.instrument import (
        uninstrument as uninstrument,
    )
    from tracedpolicy.policy import (
        TracedEventLoopPolicy as TracedEventLoopPolicy,
    )
    from tracedpolicy.policy import (
        is_traced as is_traced,
    )
    from tracedpolicy.policy import (
        traced as traced,
    )
    from tracedpolicy.recorder import (
        PolicyEvent as PolicyEvent,
    )
    from tracedpolicy.recorder import (
        add_observer as add_observer,
    )
    from tracedpolicy.recorder import (
        remove_observer as remove_observer,
    )
    from tracedpolicy.recorder import (
        snapshot as snapshot,
    )
    from tracedpolicy.report import leak_report as leak_report
    from tracedpolicy.report import open_loops as open_loops
    from tracedpolicy.telemetry import metrics_server as metrics_server

__version__ = "0.1.0"

#: Each public name, by the module that has it. ``import tracedpolicy`` loads none of them (a
#: launcher, ``python -m tracedpolicy``, needs none); the first use loads that module and what
#: it needs, never the exporters (see :mod:`tracedpolicy.telemetry`).
_PUBLIC = {
    "PolicyEvent": "recorder",
    "TracedEventLoopPolicy": "policy",
    "TracedLoopFactory": "factory",
    "add_observer": "recorder",
    "install": "install",
    "installed": "install",
    "instrument": "instrument",
    "instrumented": "instrument",
    "internal_errors": "errors",
    "is_traced": "policy",
    "leak_report": "report",
    "loop_factory": "factory",
    "metrics_server": "telemetry",
    "open_loops": "report",
    "remove_observer": "recorder",
    "snapshot": "recorder",
    "traced": "policy",
    "uninstall": "install",
    "uninstrument": "instrument",
}


def _classes() -> dict[str, type]:
    """The traced stdlib classes this platform has (loads the policies)."""
    from tracedpolicy import hierarchy

    return hierarchy.CLASSES


def __getattr__(name: str) -> Any:
    """The public names, the traced stdlib classes this platform has and the submodules, each
    loaded when first asked for; fail like asyncio for the rest."""
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"tracedpolicy.{_PUBLIC[name]}"), name)
    elif name == "__all__":  # the traced stdlib classes are listed only where they exist
        value = [*_classes(), *sorted(_PUBLIC)]
    elif name.startswith("Traced") and name.endswith("EventLoopPolicy"):
        if name in _classes():
            return _classes()[name]
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    else:
        try:  # a submodule: ``import tracedpolicy`` then ``tracedpolicy.policy``, as before
            return importlib.import_module(f"tracedpolicy.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"tracedpolicy.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """The package, whose functions ``install`` and ``instrument`` stay functions when their
    modules of the same name load (the import system then sets the module on its package)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _PUBLIC.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | set(_classes()))


def _start_a_waiting_bootstrap() -> None:
    """Under ``run``, the mode starts once asyncio is imported. Were that first import one of
    our own modules' (``tracedpolicy.loops`` imports asyncio at its top, and pytest loads our
    plugin before anything imports asyncio), the mode would start inside a half-run module of
    ours; importing asyncio here, where only this package has run, starts it before them."""
    if "asyncio" not in sys.modules and any(
        type(finder).__name__ == "_WhenAsyncioIsImported" for finder in sys.meta_path
    ):
        import asyncio  # noqa: F401  (the bootstrap's finder starts the mode as it runs)


_start_a_waiting_bootstrap()
