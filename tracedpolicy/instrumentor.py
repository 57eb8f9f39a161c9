"""The documented path of the OpenTelemetry instrumentor (``opentelemetry_instrumentor`` entry
point): :mod:`tracedpolicy.entry.instrumentor` has it."""

from __future__ import annotations

from tracedpolicy.entry.instrumentor import TracedPolicyInstrumentor as TracedPolicyInstrumentor
