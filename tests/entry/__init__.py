"""Tests of tracedpolicy.entry: the command line, the demo, run's bootstrap, the pytest
plugin, the instrumentor."""
