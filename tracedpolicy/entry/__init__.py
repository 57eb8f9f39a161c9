"""The ways in, leaves nothing imports: the command line (``cli``: run, demo, report), the demo,
``run``'s start-up in each process (``bootstrap``, its sitecustomize in ``_bootstrap/``), the
pytest plugin and the OpenTelemetry instrumentor.

May import: any layer and the package itself. (Docstring only: importing a subpackage loads
nothing else.)
"""
