"""Push: each process exports its own spans and metrics over OTLP, under a resource of its own.

When the standard ``OTEL_EXPORTER_OTLP_*`` variables ask for OTLP and no OpenTelemetry SDK is set
up in the process (``opentelemetry-instrument`` with a distro sets one up; then its providers are
used as they are), ``python -m tracedpolicy run`` and the demo give tracedpolicy providers of
its own: OTLP over HTTP (the ``otlp`` extra), with a resource that tells processes apart
(``service.instance.id``, a new one per process, ``process.pid`` and the process detector's
attributes, over ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``). A forked child gets new
ones, with its own resource; every process flushes them as it exits, multiprocessing's forked
workers too.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tracedpolicy.base import forksafe

logger = logging.getLogger("tracedpolicy")

#: Any of these asks for OTLP export.
OTLP_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
)


def wanted() -> bool:
    """Whether the environment asks for OTLP and nobody set up an SDK tracer provider yet."""
    if not any(os.environ.get(name) for name in OTLP_VARIABLES):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    return not isinstance(trace.get_tracer_provider(), TracerProvider)


def process_resource(service_name: str | None = None) -> Any:
    """The resource of this process: its own instance id and pid, over the standard variables."""
    import uuid

    from opentelemetry.sdk.resources import (
        OTELResourceDetector,
        ProcessResourceDetector,
        Resource,
    )

    attributes: dict[str, Any] = {"service.instance.id": str(uuid.uuid4())}
    if service_name and not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = service_name
    # The detectors one by one: Resource.create() runs them in a thread pool, which cannot be
    # used while a forked child starts (where a child's own resource is made).
    detected = ProcessResourceDetector().detect().merge(OTELResourceDetector().detect())
    return Resource.get_empty().merge(detected).merge(Resource(attributes))


def providers(service_name: str | None = None) -> tuple[Any, Any] | None:
    """A tracer and a meter provider exporting over OTLP/HTTP, flushed at exit; None (said
    once) without the exporter."""
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        logger.warning(
            "tracedpolicy: OTEL_EXPORTER_OTLP_* is set but the OTLP exporter is not installed:"
            " pip install 'tracedpolicy[otlp]'"
        )
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = process_resource(service_name)
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = MeterProvider(
        resource=resource,
        metric_readers=[PeriodicExportingMetricReader(OTLPMetricExporter())],
        shutdown_on_exit=False,
    )
    made = (tracer_provider, meter_provider)
    _shut_down_at_exit(made)
    return made


class _ShutDownAtExit:
    """Flush and stop the providers as the process that made them exits (once)."""

    def __init__(self, made: tuple[Any, Any]) -> None:
        self.made, self.pid, self.done = made, os.getpid(), False

    def __call__(self) -> None:
        if self.done or os.getpid() != self.pid:
            return  # done already, or a forked child: it flushes its own providers
        self.done = True
        for provider in self.made:
            provider.shutdown()


def _shut_down_at_exit(made: tuple[Any, Any]) -> None:
    forksafe.at_exit(_ShutDownAtExit(made))


_service_name: str | None = None
_exporting = False


def export_tracedpolicy(service_name: str | None = None) -> dict[str, Any]:
    """Providers of tracedpolicy's own for this process, as options; {} if not wanted.

    A forked child gets new ones (a resource of its own), set up as it starts.
    """
    global _service_name, _exporting
    if not wanted():
        return {}
    made = providers(service_name)
    if made is None:
        return {}
    _service_name, _exporting = service_name, True
    return {"tracer_provider": made[0], "meter_provider": made[1]}


def _after_fork_in_child() -> None:
    if not _exporting:
        return
    made = providers(_service_name)
    if made is not None:
        from tracedpolicy.base.options import Options
        from tracedpolicy.exporters import telemetry

        given = {"tracer_provider": made[0], "meter_provider": made[1]}
        telemetry.configure(Options.parse("tracedpolicy (forked)", given), given)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
