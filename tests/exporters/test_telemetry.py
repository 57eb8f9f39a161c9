"""Exporters are per process: the first traced policy sets them up, later ones only if asked."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.base.options import Options
from tracedpolicy.exporters import telemetry
from tracedpolicy.records import events

from ..conftest import Telemetry, restore_exporters

DefaultPolicy: Any = RUNNING.default_policy


def test_a_policy_without_exporter_options_keeps_the_exporters_as_they_are(
    telemetry: Telemetry,
) -> None:
    hook = events._span_hook
    TracedEventLoopPolicy(DefaultPolicy(), label="tests.telemetry.keep", get_spans="all")
    assert events._span_hook is hook  # per-policy options only: nothing re-pointed
    TracedEventLoopPolicy(DefaultPolicy(), label="tests.telemetry.keep").new_event_loop().close()
    assert [s.name for s in telemetry.spans("tests.telemetry.keep")] == [
        "asyncio.policy.new_event_loop"
    ]


def test_a_policy_with_exporter_options_re_points_them(telemetry: Telemetry) -> None:
    registry = CollectorRegistry()
    TracedEventLoopPolicy(
        DefaultPolicy(), label="tests.telemetry.move", prometheus_registry=registry
    )
    assert b"asyncio_loop_created_total" in generate_latest(registry)
    TracedEventLoopPolicy(DefaultPolicy(), label="tests.telemetry.move", spans=False)
    assert events._span_hook is None


def test_process_options_are_named_and_per_policy_ones_are_not() -> None:
    per_policy = {"label", "get_spans", "get_span_sample_rate"}
    fields = set(vars(Options()))
    assert fields - per_policy == telemetry.PROCESS_OPTIONS


def test_a_later_call_changes_only_the_process_options_it_passes(telemetry: Telemetry) -> None:
    """install(meter_provider=..., spans=False, creation_stack=5), then a factory with a port."""
    from tracedpolicy import loop_factory
    from tracedpolicy.exporters.prometheus import shutdown_servers
    from tracedpolicy.records.loops import REGISTRY

    TracedEventLoopPolicy(
        DefaultPolicy(),
        label="tests.telemetry.first",
        meter_provider=telemetry.meter_provider,
        spans=False,
        creation_stack=5,
    )
    try:
        factory = loop_factory(label="tests.telemetry.later", metrics_port=0)
        assert telemetry_module_server() is not None
        assert events._span_hook is None and REGISTRY.stack_depth == 5
        factory().close()
        assert list(telemetry.points("asyncio.loop.created", "tests.telemetry.later").values()) == [
            1
        ]
    finally:
        shutdown_servers()


def telemetry_module_server() -> Any:
    return telemetry.metrics_server()


@pytest.mark.parametrize("order", ["address first", "port first"])
def test_an_address_alone_starts_no_server_and_a_port_binds_its_own_calls_address(
    order: str,
) -> None:
    """A library's ``metrics_addr`` (no port) and the application's ``metrics_port=0`` (no
    address): one server, on the default loopback address, whichever call comes first."""
    from tracedpolicy.exporters.prometheus import _servers, shutdown_servers

    library: dict[str, Any] = {"metrics_addr": "127.0.0.2"}  # not the default; still loopback
    application: dict[str, Any] = {"metrics_port": 0}
    calls = [library, application] if order == "address first" else [application, library]
    shutdown_servers()
    telemetry.reset_for_tests()
    try:
        for given in calls:
            telemetry.configure(Options.parse("tests", given), given)
        server = telemetry.metrics_server()
        assert server is not None and server.server_address[0] == "127.0.0.1"
        assert len({id(running) for running in _servers.values()}) == 1
    finally:
        shutdown_servers()
        telemetry.reset_for_tests()
        restore_exporters()
