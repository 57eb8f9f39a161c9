"""Where the process's exporters are pointed: OpenTelemetry providers, Prometheus, /metrics.

Exporters are per process, like the recorders they read. The first traced policy, install()
or loop_factory() sets them up from its options and the TRACEDPOLICY_* variables; a later one
changes only the exporter options it passes itself.

Each loads when first used, so that ``import tracedpolicy`` is little more than a loop event
needs: the Prometheus collector as ``prometheus_client`` is imported (by the application, or
here for a port, a registry given, or the multi-process directory), the HTTP server for a
port, the multi-process files with ``PROMETHEUS_MULTIPROC_DIR``, the report's renderer at exit.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import sys
from collections.abc import Mapping
from typing import Any

from tracedpolicy.base import forksafe, imports
from tracedpolicy.base.options import TRACEDPOLICY_MULTIPROC_DIR, Options, warn_of_unknown_variables
from tracedpolicy.records.errors import record_internal_error
from tracedpolicy.records.loops import REGISTRY

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
        "health",
        "health_resolution",
        "blocking_threshold",
    }
)

_lock = forksafe.lock()
_in_force: Options | None = None
"""The process-wide options in force: the first call's, then each later one's given ones."""
_server: Any | None = None
_report_registered = False


def configure(options: Options, given: Mapping[str, Any]) -> None:
    """Apply the process-wide ``options``: all of them the first time, later only ``given``.

    A later ``loop_factory(metrics_port=0)`` starts a server and changes nothing else: not the
    providers, not the spans switch, not the creation stack. Each exporter fails alone, counted
    under its own kind. A server binds the address of the call that gave its port.
    """
    global _in_force
    with _lock:
        if _in_force is None:
            warn_of_unknown_variables()  # the variables are read now: a misspelt one is said
            names: set[str] = set(PROCESS_OPTIONS)
            _in_force = options
        else:
            names = _server_options(set(PROCESS_OPTIONS.intersection(given)))
            if not names:
                return
            _in_force = dataclasses.replace(
                _in_force, **{name: getattr(options, name) for name in names}
            )
        _apply(_in_force, names)


def _configure_health(options: Options) -> None:
    """Loop health's settings; its modules load only once it is turned on (off, it has nothing
    to stop, and its settings go with the call that turns it on)."""
    if options.health or "tracedpolicy.health.monitor" in sys.modules:
        from tracedpolicy.health import monitor

        settings = monitor.Settings(options.health_resolution, options.blocking_threshold)
        monitor.configure(options.health, settings)


def _server_options(names: set[str]) -> set[str]:
    """A later call's ``metrics_addr`` alone starts no server (nor moves one); its
    ``metrics_port`` starts one on that same call's address (given, or the default)."""
    if "metrics_port" in names:
        return names | {"metrics_addr"}
    return names - {"metrics_addr"}


def _apply(options: Options, names: set[str]) -> None:
    global _server, _report_registered
    if names & {"health", "health_resolution", "blocking_threshold"}:
        _configure_health(options)
    if "creation_stack" in names:
        REGISTRY.stack_depth = options.creation_stack
    if "report_at_exit" in names and options.report_at_exit and not _report_registered:
        atexit.register(_report_at_exit)
        _report_registered = True
    # The global providers are the API's until an SDK is set, which imports the API: until
    # then there is nobody to send to, and the API waits for its first importer.
    if names & {"spans", "tracer_provider"}:
        _configure_otel("tracer", "opentelemetry.trace", options.tracer_provider is None)
    if "meter_provider" in names:
        _configure_otel("meter", "opentelemetry.metrics", options.meter_provider is None)
    if names & {"prometheus", "prometheus_registry"} and options.prometheus:
        registry = options.prometheus_registry
        if registry is None and options.metrics_port is None and not _multiprocess_wanted():
            # No multi-process directory now: the files stay off, as they would have been.
            imports.when_imported("prometheus_client", _register_in_the_default_registry)
            if os.environ.get(TRACEDPOLICY_MULTIPROC_DIR):
                _join_fleet()  # started by a serving process: its file, without prometheus_client
        else:
            _register(registry, files=True)
    if "metrics_port" in names and options.metrics_port is not None:
        from tracedpolicy.exporters import prometheus

        _server = prometheus.serve(
            options.metrics_port, options.metrics_addr, options.prometheus_registry
        )
        if _report_registered:  # atexit runs the last registered first: the report reads
            atexit.unregister(_report_at_exit)  # the fleet the server gathers, which goes at
            atexit.register(_report_at_exit)  # the serving process's exit, after it


def _configure_otel(kind: str, api: str, wait: bool) -> None:
    """Configure the ``tracer`` or ``meter`` side now, or (``wait``) once ``api`` is imported."""
    _otel_pending.add(kind)
    if wait:
        imports.when_imported(api, _otel_imported)
    else:
        _otel_imported(None)


_otel_pending: set[str] = set()
_otel_busy = False


def _otel_imported(_: Any) -> None:
    """What is pending, as the options in force say. Loading tracedpolicy.otel imports both
    APIs, and so calls back here; the outer call does it all."""
    global _otel_busy
    if _otel_busy or _in_force is None:
        return
    _otel_busy = True
    try:
        while _otel_pending:
            kind = _otel_pending.pop()
            try:
                from tracedpolicy.exporters import otel

                if kind == "tracer":
                    otel.configure_tracing(_in_force.tracer_provider, _in_force.spans)
                else:
                    otel.configure_metrics(_in_force.meter_provider)
            except Exception as failure:  # a provider that fails must not fail the policy
                record_internal_error(kind, failure)
    finally:
        _otel_busy = False


def _join_fleet() -> None:
    try:
        from tracedpolicy.exporters import fleet

        fleet.join()
    except Exception as failure:
        record_internal_error("multiprocess", failure)


def stop_copying() -> None:
    """End the threads that copy counts into the multi-process files or the fleet's, if those
    were loaded (each starts again with the next count to copy)."""
    multiprocess = sys.modules.get("tracedpolicy.exporters.multiprocess")
    if multiprocess is not None:
        multiprocess.stop_thread()
    fleet = sys.modules.get("tracedpolicy.exporters.fleet")
    if fleet is not None:
        fleet.pause()


def _multiprocess_wanted() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))  # multiprocess.directory()'s


def _register(registry: Any, files: bool) -> None:
    """The collector in ``registry`` (None: prometheus_client's), and (``files``) with
    ``PROMETHEUS_MULTIPROC_DIR`` set, the files too."""
    try:
        from tracedpolicy.exporters import prometheus

        prometheus.register(registry)
        if files:
            from tracedpolicy.exporters import multiprocess

            multiprocess.start()
    except Exception as failure:
        record_internal_error("collector", failure)


def _register_in_the_default_registry(_: Any) -> None:
    """prometheus_client was imported: the collector in its registry, if still wanted."""
    if _in_force is not None and _in_force.prometheus:
        _register(None, files=False)


def _report_at_exit() -> None:
    from tracedpolicy.exporters import report

    report.report_at_exit()


def metrics_server() -> Any | None:
    """The /metrics server the options started, if any."""
    return _server


def stop_metrics_server(server: Any) -> None:
    """Stop ``server`` if it is the one the options started (install() started it, uninstall()
    stops it); a later port option starts another."""
    global _in_force, _server
    with _lock:
        if server is None or server is not _server:
            return
        _server = None
        if _in_force is not None:
            _in_force = dataclasses.replace(_in_force, metrics_port=None)
    from tracedpolicy.exporters import prometheus

    prometheus.stop(server)


def reset_for_tests() -> None:
    """Forget the options in force, as if nothing had been configured. Only use in tests."""
    global _in_force
    with _lock:
        _in_force = None


def _forget_server_in_child() -> None:
    """A forked child has no server thread, and must not keep the parent's port."""
    global _server
    _server = None
    prometheus = sys.modules.get("tracedpolicy.exporters.prometheus")
    if prometheus is not None:  # no server without it
        prometheus.forget_servers_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_server_in_child)
