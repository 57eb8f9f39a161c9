"""Shared fixtures: every test leaves the process-wide policy and its loops as it found them."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import tracedpolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.base.options import Options
from tracedpolicy.exporters import telemetry as tracedpolicy_telemetry


@pytest.fixture(autouse=True)
def restore_process_policy() -> Iterator[None]:
    """Put the process-wide policy back and forget any install() after each test."""
    assert RUNNING.get_policy is not None and RUNNING.set_policy is not None
    before = RUNNING.get_policy()
    yield
    tracedpolicy.uninstrument()
    tracedpolicy.uninstall()
    RUNNING.set_policy(before)


@pytest.fixture
def loops() -> Iterator[list[asyncio.AbstractEventLoop]]:
    """A list to put loops in; each one still open is closed after the test."""
    made: list[asyncio.AbstractEventLoop] = []
    yield made
    for loop in made:
        if not loop.is_closed():
            loop.close()
    gc.collect()


@dataclass
class Telemetry:
    """Real OpenTelemetry SDK providers with in-memory exporters; a fresh Prometheus registry."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    registry: CollectorRegistry
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self, creator: str) -> list[ReadableSpan]:
        """Finished spans about ``creator`` (a policy, factory or loop class label), in order."""
        return [
            span
            for span in self.exporter.get_finished_spans()
            if (span.attributes or {}).get("asyncio.loop.creator") == creator
        ]

    def points(
        self, name: str, creator: str | None = None
    ) -> dict[tuple[tuple[str, Any], ...], Any]:
        """An instrument's data points: attributes -> value (histograms: count, sum, buckets).

        With ``creator``, only the points whose ``creator`` (or, for policy calls, ``policy``)
        label is that.
        """
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name != name:
                        continue
                    point: Any
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        named = attributes.get("creator", attributes.get("policy"))
                        if creator is not None and named != creator:
                            continue
                        key = tuple(sorted(attributes.items()))
                        if hasattr(point, "bucket_counts"):
                            found[key] = (point.count, point.sum, tuple(point.bucket_counts))
                        else:
                            found[key] = point.value
        return found


#: The process-wide options as tests leave them: global providers, spans on, the default registry.
DEFAULT_EXPORTERS = {
    "spans": True,
    "tracer_provider": None,
    "meter_provider": None,
    "prometheus": True,
    "prometheus_registry": None,
    "creation_stack": 0,
}


def restore_exporters() -> None:
    """Point the exporters back where tests expect them (a later call changes only what it gets)."""
    tracedpolicy_telemetry.configure(Options.parse("tests", DEFAULT_EXPORTERS), DEFAULT_EXPORTERS)


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """Point tracedpolicy's exporters at in-memory SDK providers and a fresh registry."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    registry = CollectorRegistry()
    given = {
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
        "prometheus_registry": registry,
    }
    tracedpolicy_telemetry.configure(Options.parse("tests", given), given)
    yield Telemetry(exporter, reader, registry, tracer_provider, meter_provider)
    restore_exporters()
    meter_provider.shutdown()
    tracer_provider.shutdown()
