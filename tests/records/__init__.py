"""Tests of tracedpolicy.records: counters, the loop registry, the recorder, making a loop
once, internal errors."""
