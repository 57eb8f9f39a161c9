"""What loads when: `import tracedpolicy` and a traced policy load no exporter until it is used."""

from __future__ import annotations

import subprocess
import sys

import pytest


def python(code: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout.splitlines()


EXPORTERS = (
    "prometheus_client",
    "http.server",
    "wsgiref",
    "tracedpolicy.exporters.prometheus",
    "tracedpolicy.exporters.multiprocess",
    "tracedpolicy.exporters.report",
    "opentelemetry",
    "opentelemetry.sdk",
)

LOADED = f"""
import sys
def loaded():
    return sorted(name for name in {EXPORTERS!r} if name in sys.modules)
"""


def test_import_tracedpolicy_loads_none_of_the_package() -> None:
    code = LOADED + (
        "import tracedpolicy\n"
        "print(sorted(m for m in sys.modules if m.startswith('tracedpolicy')))\n"
        "print('asyncio' in sys.modules)\n"
    )
    assert python(code) == ["['tracedpolicy', 'tracedpolicy._launcher']", "False"]


@pytest.mark.parametrize("call", ["install()", "instrument(health=True)", "loop_factory()"])
def test_a_traced_loop_loads_no_exporter_nobody_uses(call: str) -> None:
    code = LOADED + (
        "import asyncio, tracedpolicy\n"
        f"tracedpolicy.{call}\n"
        "loop = asyncio.new_event_loop()\n"
        "loop.close()\n"
        "print(loaded())\n"
    )
    assert python(code) == ["[]"]


HEALTH_WATCHING = ("monitor", "wait", "stack", "watchdog")


@pytest.mark.parametrize("health", [False, True])
def test_loop_health_s_watching_loads_only_once_it_is_turned_on(health: bool) -> None:
    code = (
        "import asyncio, sys, tracedpolicy\n"
        "tracedpolicy.instrument(blocking_threshold=0.5)\n"
        "asyncio.run(asyncio.sleep(0))\n"
        f"tracedpolicy.instrument(health={health})\n"
        "asyncio.run(asyncio.sleep(0))\n"
        f"print([n for n in {HEALTH_WATCHING!r} if 'tracedpolicy.health.' + n in sys.modules])\n"
        "from tracedpolicy.health import probe\n"
        "print(probe.enabled(), probe._settings.threshold)\n"
    )
    loaded = list(HEALTH_WATCHING) if health else []
    # The threshold given before health was on is the one in force once it is.
    assert python(code) == [repr(loaded), f"{health} 0.5" if health else "False 0.1"]


COLLECTOR_LATER = """
import asyncio, tracedpolicy
tracedpolicy.install()
asyncio.new_event_loop().close()
import prometheus_client  # the application's, after the loop: its registry has the collector
print(prometheus_client.REGISTRY.get_sample_value(
    "asyncio_loop_created_total",
    {"origin": "policy", "creator": "asyncio.unix_events._UnixDefaultEventLoopPolicy",
     "loop_class": "asyncio.unix_events._UnixSelectorEventLoop"}))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="the Unix default policy's label")
def test_the_collector_is_in_prometheus_client_s_registry_once_the_application_imports_it() -> None:
    assert python(COLLECTOR_LATER) == ["1"]


SPANS_LATER = """
import asyncio, tracedpolicy
tracedpolicy.install()
asyncio.new_event_loop().close()  # no SDK yet: nobody to send to
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
asyncio.new_event_loop().close()
print([span.name for span in spans.get_finished_spans()], tracedpolicy.internal_errors())
"""


def test_spans_reach_an_sdk_the_application_sets_up_after_the_first_loop() -> None:
    assert python(SPANS_LATER) == ["['asyncio.policy.new_event_loop'] {}"]


def test_a_port_loads_the_server_and_prints_nothing_of_the_rest() -> None:
    code = LOADED + (
        "import tracedpolicy\n"
        "tracedpolicy.install(metrics_port=0)\n"
        "print('prometheus_client' in loaded(), 'tracedpolicy.exporters.report' in loaded())\n"
        "tracedpolicy.uninstall()\n"
    )
    assert python(code) == ["True False"]
