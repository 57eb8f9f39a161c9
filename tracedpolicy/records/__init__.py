"""What is known of the loops: counters and histograms (``stats``), the registry of loops
(``loops``), per-label aggregates, operations and observers (``recorder``), a loop recorded once
by the outermost maker (``making``), internal failures (``errors``).

May import: ``tracedpolicy.base``. (Docstring only: importing a subpackage loads nothing else.)
"""
