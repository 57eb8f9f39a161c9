"""Shared fixtures: every test leaves the process-wide policy and its loops as it found them."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

import tracedpolicy
from tracedpolicy._compat import RUNNING


@pytest.fixture(autouse=True)
def restore_process_policy() -> Iterator[None]:
    """Put the process-wide policy back and forget any install() after each test."""
    assert RUNNING.get_policy is not None and RUNNING.set_policy is not None
    before = RUNNING.get_policy()
    yield
    tracedpolicy.uninstall()
    RUNNING.set_policy(before)


@pytest.fixture
def loops() -> Iterator[list[asyncio.AbstractEventLoop]]:
    """A list to put loops in; each one still open is closed after the test."""
    made: list[asyncio.AbstractEventLoop] = []
    yield made
    for loop in made:
        if not loop.is_closed():
            loop.close()
    gc.collect()
