"""A garbage collection placed at one line of tracedpolicy, as an allocation there may start one.

The collection runs ``__del__`` methods in the thread that allocated, wherever that thread is:
inside a lock, halfway through an update. A line tracer puts it at the chosen line, so a test
of what such a ``__del__`` may do is deterministic.
"""

from __future__ import annotations

import gc
import inspect
import sys
import threading
from types import FrameType
from typing import Any, Callable


def line_of(function: Callable[..., Any], text: str) -> int:
    """The number of the first line of ``function`` that contains ``text``."""
    lines, first = inspect.getsourcelines(function)
    for offset, line in enumerate(lines):
        if text in line:
            return first + offset
    raise AssertionError(f"{text!r} is not in {function.__qualname__}")


def finishes_with_a_collection_at(
    function: Callable[..., Any],
    text: str,
    action: Callable[[], Any],
    garbage: Callable[[], object],
    timeout: float = 10.0,
) -> bool:
    """Run ``action`` in a thread, collecting at the line of ``function`` with ``text`` while
    the object ``garbage()`` made (kept only by a reference cycle) waits to be collected.

    Returns whether the thread finished within ``timeout``: False is a hang.
    """
    code = function.__code__
    target = line_of(function, text)

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is not code:
            return None
        if event == "line" and frame.f_lineno == target:
            sys.settrace(None)
            frame.f_trace = None
            gc.collect()
        return tracer

    def run() -> None:
        sys.settrace(tracer)
        try:
            action()
        finally:
            sys.settrace(None)

    enabled = gc.isenabled()
    gc.disable()  # the garbage must still be there when the line is reached
    try:
        garbage()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        if enabled:
            gc.enable()
    return not thread.is_alive()


class InACycle:
    """Garbage that only a collection frees, and whose ``__del__`` runs ``on_del``."""

    def __init__(self, on_del: Callable[[], Any]) -> None:
        self.on_del = on_del
        self.me = self

    def __del__(self) -> None:
        self.on_del()
