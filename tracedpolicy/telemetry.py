"""Where the process's exporters are pointed: OpenTelemetry providers, Prometheus, /metrics.

Exporters are per process, like the recorders they read. The first traced policy, install()
or loop_factory() sets them up from its options and the TRACEDPOLICY_* variables; a later one
changes them only if it passes an exporter option itself.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any

from tracedpolicy import otel, prometheus, report
from tracedpolicy.errors import record_internal_error
from tracedpolicy.loops import REGISTRY
from tracedpolicy.options import Options

#: The options that configure the process's exporters rather than one policy.
PROCESS_OPTIONS = frozenset(
    {
        "spans",
        "tracer_provider",
        "meter_provider",
        "prometheus",
        "prometheus_registry",
        "metrics_port",
        "metrics_addr",
        "creation_stack",
        "report_at_exit",
    }
)

_lock = threading.Lock()
_configured = False
_server: Any | None = None
_report_registered = False


def configure(options: Options, given: Mapping[str, Any]) -> None:
    """Apply ``options`` if this is the first call or ``given`` names an exporter option."""
    global _configured, _server, _report_registered
    with _lock:
        if _configured and not PROCESS_OPTIONS.intersection(given):
            return
        _configured = True
        REGISTRY.stack_depth = options.creation_stack
        if options.report_at_exit and not _report_registered:
            atexit.register(report.report_at_exit)
            _report_registered = True
        try:
            otel.configure(options.tracer_provider, options.meter_provider, options.spans)
        except Exception as failure:  # a provider that fails must not fail the policy
            record_internal_error("meter", failure)
        if options.prometheus:
            try:
                prometheus.register(options.prometheus_registry)
            except Exception as failure:
                record_internal_error("collector", failure)
        if options.metrics_port is not None:
            _server = prometheus.serve(
                options.metrics_port, options.metrics_addr, options.prometheus_registry
            )


def metrics_server() -> Any | None:
    """The /metrics server the options started, if any."""
    return _server
