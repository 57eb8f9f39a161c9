"""Every loop tracedpolicy made or was handed: an id never reused, and the loop's life.

Records hold only a weak reference to their loop, and a record goes away with its loop, so
memory stays bounded however many loops come and go. A loop made through tracedpolicy is
*tracked*: its ``close`` is hooked on the instance (the class is left alone), so the moment it
closes is exact; where an instance cannot take the hook, :meth:`LoopRegistry.sweep` notices the
close when exporters collect.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

from tracedpolicy.errors import record_internal_error

Loop = asyncio.AbstractEventLoop


def class_name(cls: type) -> str:
    """A class's qualified name with its module: the bounded ``loop_class`` label value."""
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(eq=False)
class LoopRecord:
    """What is known about one loop."""

    loop_id: int
    policy: str
    loop_class: str
    thread_id: int
    thread_name: str
    created_at: float
    """Wall-clock time (``time.time()``) when the record was made."""
    created_monotonic: float
    tracked: bool
    """Made through tracedpolicy, so counted as created, closed and open."""
    source: str = "policy"
    """``policy``, or ``loop_factory`` for loops from :func:`tracedpolicy.loop_factory`."""
    close_hooked: bool = False
    closed_monotonic: float | None = None
    collected: bool = False
    _ref: weakref.ReferenceType[Loop] | None = field(default=None, repr=False)

    @property
    def closed(self) -> bool:
        return self.closed_monotonic is not None

    @property
    def loop(self) -> Loop | None:
        """The loop, or None once it was garbage-collected."""
        return self._ref() if self._ref is not None else None

    def age(self, now: float | None = None) -> float:
        """Seconds since creation, up to the close if it closed."""
        end = self.closed_monotonic or (time.monotonic() if now is None else now)
        return end - self.created_monotonic


ClosedListener = Callable[[LoopRecord, float], None]
CollectedListener = Callable[[LoopRecord], None]


class LoopRegistry:
    """The live records, keyed by the loop's identity while it lives."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._records: dict[int, LoopRecord] = {}
        self._lock = threading.Lock()
        self.closed_listeners: list[ClosedListener] = []
        self.collected_listeners: list[CollectedListener] = []

    def record_for(
        self, loop: Loop, policy: str, tracked: bool, source: str = "policy"
    ) -> LoopRecord | None:
        """The loop's record, made on first sight; None for a loop that takes no weakref."""
        key = id(loop)
        record = self._records.get(key)
        if record is not None and record.loop is loop:
            return record
        thread = threading.current_thread()
        record = LoopRecord(
            loop_id=next(self._ids),
            policy=policy,
            loop_class=class_name(type(loop)),
            thread_id=threading.get_ident(),
            thread_name=thread.name,
            created_at=time.time(),
            created_monotonic=time.monotonic(),
            tracked=tracked,
            source=source,
        )
        try:
            record._ref = weakref.ref(loop, functools.partial(self._collected, key, record))
        except TypeError:
            return None
        with self._lock:
            self._records[key] = record
        if tracked:
            record.close_hooked = _hook_close(loop)
        return record

    def knows(self, loop: Loop) -> bool:
        """Whether ``loop`` has a record (it was made by or handed to tracedpolicy)."""
        record = self._records.get(id(loop))
        return record is not None and record.loop is loop

    def records(self) -> list[LoopRecord]:
        with self._lock:
            return list(self._records.values())

    def open_records(self) -> list[LoopRecord]:
        """Tracked loops that are alive and not closed, oldest first."""
        self.sweep()
        return [r for r in self.records() if r.tracked and not r.closed and r.loop is not None]

    def sweep(self) -> None:
        """Notice closes of tracked loops whose ``close`` could not be hooked."""
        for record in self.records():
            if record.tracked and not record.close_hooked and not record.closed:
                loop = record.loop
                if loop is not None and loop.is_closed():
                    self._closed(record, loop)

    def closed(self, loop: Loop) -> None:
        """``loop.close()`` returned: mark its record closed, if it has one."""
        record = self._records.get(id(loop))
        if record is not None and record.tracked and record._ref is not None:
            self._closed(record, loop)

    def _closed(self, record: LoopRecord, loop: Loop) -> None:
        if not loop.is_closed():
            return  # close() returned but the loop is still open (a subclass's choice)
        with self._lock:
            if record.closed_monotonic is not None:
                return  # closing twice counts once
            record.closed_monotonic = time.monotonic()
        _notify(self.closed_listeners, record, record.age())

    def _collected(self, key: int, record: LoopRecord, _ref: object) -> None:
        with self._lock:
            if self._records.get(key) is record:
                del self._records[key]
            record.collected = True
        if record.tracked and not record.closed:
            _notify(self.collected_listeners, record)


def _notify(listeners: list[Any], *args: Any) -> None:
    """Tell each listener; one that fails is counted and never reaches ``loop.close()``."""
    for listener in listeners:
        try:
            listener(*args)
        except Exception as failure:
            record_internal_error("registry", failure)


_hooked_classes: set[type] = set()
_hook_lock = threading.Lock()


def _hook_close(loop: Loop) -> bool:
    """Make ``loop.close()`` tell the registry after it ran; False if it cannot.

    The hook goes on the loop's class, once, and keeps nothing per loop; for loops without a
    record it only costs a dict lookup. A close that ``__del__`` makes for an abandoned loop is
    not counted: that loop was garbage-collected unclosed. A loop with its own instance
    ``close`` is left to :meth:`LoopRegistry.sweep`.
    """
    if "close" in getattr(loop, "__dict__", {}):
        return False
    cls = type(loop)
    with _hook_lock:
        if cls in _hooked_classes:
            return True
        original: Callable[[Any], None] = cls.close

        @functools.wraps(original)
        def close(self: Any) -> None:
            original(self)
            if sys._getframe(1).f_code.co_name != "__del__":
                REGISTRY.closed(self)

        try:
            cls.close = close  # type: ignore[method-assign]
        except (AttributeError, TypeError):  # an extension type: immutable
            return False
        _hooked_classes.add(cls)
        return True


#: The process's registry: every traced policy and loop factory records here.
REGISTRY = LoopRegistry()
