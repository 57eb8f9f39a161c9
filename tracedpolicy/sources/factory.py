"""Traced loop factories: the path for ``asyncio.run(loop_factory=...)`` and beyond 3.16.

``asyncio.Runner(loop_factory=f)`` (3.11+), ``asyncio.run(main(), loop_factory=f)`` (3.12+) and
``uvloop.run(main(), loop_factory=f)`` never touch the policy, and CPython's main branch has
removed policies altogether. A :class:`TracedLoopFactory` records its loops through the same
recorder as traced policies, so they are counted either way.

:func:`hook_runner` traces the factories others give ``asyncio.Runner`` (and so
``asyncio.run``, uvicorn and ``uvloop.run``): while a runner makes its loop, its factory is
a traced one, and the runner is left as it was afterwards.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from tracedpolicy.base import forksafe
from tracedpolicy.base.options import Options
from tracedpolicy.base.patching import Patch, wrap
from tracedpolicy.exporters import telemetry
from tracedpolicy.records.events import LOOP_FACTORY
from tracedpolicy.records.making import make_loop
from tracedpolicy.records.recorder import Recorder, recorder_for
from tracedpolicy.records.sites import qualified_name
from tracedpolicy.sources.policy import API

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


class TracedLoopFactory:
    """A callable that makes loops with ``base`` and records each one."""

    __slots__ = ("_recorder", "base")

    def __init__(self, base: LoopFactory, recorder: Recorder) -> None:
        self.base = base
        self._recorder = recorder

    def __call__(self) -> asyncio.AbstractEventLoop:
        return make_loop(self.base, self._recorder)

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
    return TracedLoopFactory(
        base, recorder_for(parsed.label or label_of_factory(base), LOOP_FACTORY)
    )


def label_of_factory(function: Callable[..., Any]) -> str:
    """A class's or function's qualified name; a partial or other callable's type's."""
    return qualified_name(function)


_lock = forksafe.lock()
_runner_patch: Patch | None = None


def _lazy_init(
    wrapped: Callable[..., Any], runner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``asyncio.Runner._lazy_init`` with the runner's factory traced while it runs."""
    factory = getattr(runner, "_loop_factory", None)
    if _runner_patch is None or factory is None or isinstance(factory, TracedLoopFactory):
        return wrapped(*args, **kwargs)  # no factory: the runner asks the (traced) policy
    recorder = recorder_for(label_of_factory(factory), LOOP_FACTORY)
    runner._loop_factory = TracedLoopFactory(factory, recorder)
    try:
        return wrapped(*args, **kwargs)
    finally:
        runner._loop_factory = factory


def hook_runner() -> None:
    """Trace the loop factory of every ``asyncio.Runner`` from now on (3.11+; idempotent)."""
    global _runner_patch
    runner_class = getattr(asyncio, "Runner", None)
    with _lock:
        if _runner_patch is None and runner_class is not None:
            _runner_patch = wrap(runner_class, "_lazy_init", _lazy_init)


def unhook_runner() -> None:
    """Put ``asyncio.Runner`` back as it was (idempotent)."""
    global _runner_patch
    with _lock:
        patch, _runner_patch = _runner_patch, None
    if patch is not None:
        patch.undo()
