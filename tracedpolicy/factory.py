"""Traced loop factories: the path for ``asyncio.run(loop_factory=...)`` and beyond 3.16.

``asyncio.Runner(loop_factory=f)`` (3.11+), ``asyncio.run(main(), loop_factory=f)`` (3.12+) and
``uvloop.run(main(), loop_factory=f)`` never touch the policy, and CPython's main branch has
removed policies altogether. A :class:`TracedLoopFactory` records its loops through the same
recorder as traced policies, so they are counted either way.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from tracedpolicy import telemetry
from tracedpolicy.options import Options
from tracedpolicy.policy import API, new_loop
from tracedpolicy.recorder import PolicyRecorder, recorder_for

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class TracedLoopFactory:
    """A callable that makes loops with ``base`` and records each one."""

    __slots__ = ("_recorder", "base")

    def __init__(self, base: LoopFactory, recorder: PolicyRecorder) -> None:
        self.base = base
        self._recorder = recorder

    def __call__(self) -> asyncio.AbstractEventLoop:
        return new_loop(self.base, self._recorder, "loop_factory")

    def __repr__(self) -> str:
        return f"<TracedLoopFactory around {self.base!r}>"


def loop_factory(base: LoopFactory | None = None, **options: Any) -> TracedLoopFactory:
    """Return a traced loop factory around ``base`` (a loop class or function).

    ``base=None`` uses the platform's default loop class (``asyncio.EventLoop`` on 3.13+).
    Loops are labelled with ``base``'s qualified name unless the ``label`` option says otherwise.
    """
    parsed = Options.parse("loop_factory()", options)
    if isinstance(base, TracedLoopFactory):
        return base
    if base is None:
        base = API.default_loop_factory
    if not callable(base):
        raise TypeError(
            "loop_factory() expects a callable that returns an event loop, such as "
            f"asyncio.EventLoop or uvloop.new_event_loop, not {type(base).__name__!r}"
        )
    telemetry.configure(parsed, options)
    return TracedLoopFactory(base, recorder_for(parsed.label or _label_of(base)))


def _label_of(function: Callable[..., Any]) -> str:
    """A class's or function's qualified name; a partial or other callable's type's."""
    module = getattr(function, "__module__", None) or "builtins"
    qualname = getattr(function, "__qualname__", None) or type(function).__qualname__
    return f"{module}.{qualname}"
