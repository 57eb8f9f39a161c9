"""Loop health (opt-in): is each loop keeping up? The probe and its records, the timed wait
(the run and ``select`` hooks), the watchdog thread that names what holds a loop.

May import: ``tracedpolicy.base``, ``tracedpolicy.records``. (Docstring only: importing a
subpackage loads nothing else.)
"""
