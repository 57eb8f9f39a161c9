"""Tests of tracedpolicy.health: probe, timed wait, watchdog, as the exporters read them."""
