"""Everything that reads the records and health out of the process: the metrics table
(``metrics``), OpenTelemetry (``otel``, ``otlp``), Prometheus (``prometheus``, ``multiprocess``,
``fleet``, ``fleetvalues``), the leak report (``report``) and where they point (``telemetry``).
Each loads when first used, so a process pays only for the exporters it uses.

May import: ``tracedpolicy.base``, ``tracedpolicy.records``, ``tracedpolicy.health``.
(Docstring only: importing a subpackage loads nothing else.)
"""
