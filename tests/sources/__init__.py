"""Tests of tracedpolicy.sources: the traced policy and hierarchy, loop factories, install,
the whole-process mode."""
