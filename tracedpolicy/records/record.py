"""One loop's record: what is known about it, and how it ended.

A loop made through tracedpolicy is *tracked*: counted as created, closed, leaked (for one
reason: ``gc_unclosed``, ``thread_exit``, ``open_at_exit``) and open. The record holds only a
weak reference to its loop.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from tracedpolicy.records.sites import CreationSite

Loop = asyncio.AbstractEventLoop

GC_UNCLOSED = "gc_unclosed"
THREAD_EXIT = "thread_exit"
OPEN_AT_EXIT = "open_at_exit"
LEAK_REASONS = (GC_UNCLOSED, THREAD_EXIT, OPEN_AT_EXIT)


@dataclass(eq=False)
class LoopRecord:
    """What is known about one loop."""

    loop_id: int
    origin: str
    """``policy``, ``loop_factory`` or ``constructor``: how it was made."""
    creator: str
    """What made it: the policy's class, the factory, the loop class (or a chosen label)."""
    loop_class: str
    thread_id: int
    """The thread that made it (or first handed it to tracedpolicy)."""
    thread_name: str
    created_at: float
    """Wall-clock time (``time.time()``) when the record was made."""
    created_monotonic: float
    tracked: bool
    """Made through tracedpolicy, so counted as created, closed, leaked and open."""
    site: CreationSite | None = None
    stack: tuple[str, ...] = ()
    """Frames above the site, outermost last, when a deeper stack was asked for."""
    set_on: dict[int, str] = field(default_factory=dict)
    """The threads (ident: name) it is the current loop of, through a traced policy."""
    close_hooked: bool = False
    closed_monotonic: float | None = None
    leaked: str | None = None
    """The leak reason, once it leaked."""
    inherited: bool = False
    """Made before this process forked from its parent."""
    span_context: Any = None
    """The creation span's context, so a leak span can link to it."""
    _ref: weakref.ReferenceType[Loop] | None = field(default=None, repr=False)

    @property
    def closed(self) -> bool:
        return self.closed_monotonic is not None

    @property
    def made_by(self) -> str:
        """Origin and creator, as leak lines and reports show them."""
        return f"{self.origin} {self.creator}"

    @property
    def loop(self) -> Loop | None:
        """The loop, or None once it was garbage-collected."""
        return self._ref() if self._ref is not None else None

    @property
    def counts_as_open(self) -> bool:
        """Made here, and neither closed, leaked nor inherited: ``asyncio_loop_open``."""
        return self.tracked and not (self.closed or self.leaked or self.inherited)

    def age(self, now: float | None = None) -> float:
        """Seconds since creation, up to the close if it closed."""
        end = self.closed_monotonic or (time.monotonic() if now is None else now)
        return end - self.created_monotonic


class Expected:
    """A loop constructed inside a layer that records it once the layer returns (see
    :mod:`tracedpolicy.records.making`): where it was constructed, and whether it closed
    meanwhile."""

    __slots__ = ("closed_monotonic", "created_at", "created_monotonic", "site", "stack")

    def __init__(self, site: CreationSite | None, stack: tuple[str, ...]) -> None:
        self.site = site
        self.stack = stack
        self.created_at = time.time()
        self.created_monotonic = time.monotonic()
        self.closed_monotonic: float | None = None
