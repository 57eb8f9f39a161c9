"""The package's version, at the bottom: what OpenTelemetry's tracer and meter are named with
(:mod:`tracedpolicy.exporters.otel`) and ``tracedpolicy.__version__``, with no import up a layer."""

from __future__ import annotations

__version__ = "0.1.0"
