"""Where loops come from, and how tracedpolicy sees them made: the traced policy (``policy``)
and stdlib hierarchy (``hierarchy``), loop factories (``factory``), constructor hooks
(``construction``), ``install()`` and the whole-process mode (``install``, ``instrument``).

May import: ``tracedpolicy.base``, ``records``, ``health`` and ``exporters`` (a new policy
points the exporters at itself through ``exporters.telemetry``). (Docstring only: importing a
subpackage loads nothing else.)
"""
