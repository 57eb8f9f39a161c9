"""Tests of tracedpolicy.exporters: OpenTelemetry, Prometheus, multi-process, the fleet,
the report, telemetry."""
