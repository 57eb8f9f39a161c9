"""tracedpolicy for ``opentelemetry-instrument``: the whole-process mode as an instrumentor.

``opentelemetry-instrument python app.py`` (or ``opentelemetry-instrument uvicorn app:app``)
finds :class:`TracedPolicyInstrumentor` through the ``opentelemetry_instrumentor`` entry point
and calls :meth:`~TracedPolicyInstrumentor.instrument`, which turns on
:func:`tracedpolicy.instrument`; ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=tracedpolicy`` keeps
it off. The ``TRACEDPOLICY_*`` variables configure it, as under ``python -m tracedpolicy run``.
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from tracedpolicy.base import forksafe
from tracedpolicy.base.options import Options
from tracedpolicy.entry.bootstrap import start_here
from tracedpolicy.sources.instrument import uninstrument

#: Keyword arguments an OpenTelemetry distro may pass that tracedpolicy takes as options.
_PASSED_ON = ("tracer_provider", "meter_provider")


class TracedPolicyInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Trace every event loop of the process (see :mod:`tracedpolicy.sources.instrument`)."""

    _guard = forksafe.lock()

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # asyncio is the standard library's

    def instrument(self, **kwargs: Any) -> None:
        # BaseInstrumentor's own flag is read and written without a lock.
        with self._guard:
            super().instrument(**kwargs)

    def uninstrument(self, **kwargs: Any) -> None:
        with self._guard:
            super().uninstrument(**kwargs)

    def _instrument(self, **kwargs: Any) -> None:
        # As under ``run``: the first process serves the metrics (and prints their URL), the
        # ones it starts (which opentelemetry-instrument reaches too) trace their own loops
        # without the port. A bad variable is one line, as under ``run``, not the launcher's
        # traceback; the program runs untraced, since the launcher cannot be stopped from here.
        try:
            Options.parse("opentelemetry-instrument", {})
        except (TypeError, ValueError) as error:
            print(f"tracedpolicy: {error}; event loops are not traced", file=sys.stderr)
            return
        passed = {name: kwargs[name] for name in _PASSED_ON if kwargs.get(name) is not None}
        start_here(announce=True, **passed)

    def _uninstrument(self, **kwargs: Any) -> None:
        uninstrument()
