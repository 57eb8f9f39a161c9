"""Tests of tracedpolicy.base: version facts, options, fork safety."""
