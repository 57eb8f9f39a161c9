"""What a held loop's thread runs: its application frames, task and await chain, sampled by
the watchdog (and only then: nothing is sampled while loops keep up)."""

from __future__ import annotations

import asyncio
import inspect
import sys
from dataclasses import dataclass
from typing import Any

from tracedpolicy.base import forksafe
from tracedpolicy.records.sites import SKIPPED_PACKAGES, USER_MODULES, printable

#: Frames of these are the loop's machinery, not what it runs.
_MACHINERY = (*SKIPPED_PACKAGES, "selectors", "threading", "runpy", "contextvars")


@dataclass(frozen=True)
class Sample:
    """What a held loop's thread was running when the watchdog looked."""

    runs: str
    """The outermost frame of the application's code: the callback or task step."""
    at: str
    """The innermost frame: where it was."""
    task: str | None
    coroutines: tuple[str, ...] = ()
    """The running task's coroutines on the thread's stack, outermost first."""
    awaited_by: tuple[str, ...] = ()
    """Who awaits the running task, nearest first (3.14+: asyncio's call graph)."""

    def __str__(self) -> str:
        task = f"task {self.task}: " if self.task else ""
        where = self.at if self.at == self.runs else f"{self.at}, called from {self.runs}"
        stack = f"; coroutines {' > '.join(self.coroutines)}" if len(self.coroutines) > 1 else ""
        chain = f"; awaited by {' <- '.join(self.awaited_by)}" if self.awaited_by else ""
        return f"{task}{where}{stack}{chain}"


#: At most this many entries of an await chain are named (a log line stays a line).
CHAIN_LIMIT = 16


def sample(thread_id: int, loop: Any) -> Sample | None:
    """What the loop's thread runs: its application frames above the loop's own run code."""
    frame = sys._current_frames().get(thread_id)
    frames = []
    while frame is not None and not _runs_the_loop(frame):
        if not _machinery(frame):
            frames.append(frame)
        frame = frame.f_back
    if not frames:
        return None
    task = _current_task(loop)
    return Sample(
        runs=_where(frames[-1]),
        at=_where(frames[0]),
        task=_task_name(task) if task is not None else None,
        coroutines=tuple(_where(f) for f in reversed(frames) if f.f_code.co_flags & _ASYNC),
        awaited_by=_awaiting(task) if task is not None else (),
    )


_ASYNC = inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _current_task(loop: Any) -> Any:
    try:
        return asyncio.current_task(loop)
    except Exception:  # a loop closed meanwhile: the sample goes without it
        return None


def _task_name(task: Any) -> str | None:
    """A task's name and coroutine, as the log line and span show it."""
    try:
        coro = task.get_coro()
        name = getattr(coro, "__qualname__", type(coro).__name__)
        return printable(f"{task.get_name()} ({name})")
    except Exception:  # an odd task: the sample goes without it
        return None


def _awaiting(task: Any) -> tuple[str, ...]:
    """Who awaits ``task`` (tasks, and futures such as gather's), nearest first: asyncio's call
    graph (3.14+), read while the task's loop is held. Each awaiting task with where it waits."""
    capture = getattr(asyncio, "capture_call_graph", None)
    if capture is None:
        return ()
    try:
        graph = capture(task)  # no loop runs in this thread: the graph of ``task`` as it is
        named: list[str] = []
        level = list(graph.awaited_by) if graph is not None else []
        while level and len(named) < CHAIN_LIMIT:
            node = level.pop(0)
            named.append(_awaiter(node))
            level = list(node.awaited_by) + level  # depth first: each chain in its order
        return tuple(named)
    except Exception:  # the loop ran on meanwhile and changed the graph: no chain this time
        return ()


def _awaiter(node: Any) -> str:
    future = node.future
    if isinstance(future, asyncio.Task):
        name = f"task {_task_name(future)}"
    else:
        name = f"future {type(future).__qualname__}"
    frames = [entry.frame for entry in node.call_stack]  # innermost first: where it awaits
    mine = [frame for frame in frames if not _machinery(frame)] or frames  # not asyncio's own
    return f"{name} at {_where(mine[0])}" if mine else name


#: The functions in which a loop runs its callbacks: below them is who runs the loop.
_RUNNERS = frozenset({"_run", "_run_once", "run_forever", "run_until_complete"})


def _runs_the_loop(frame: Any) -> bool:
    return frame.f_code.co_name in _RUNNERS and _machinery(frame)


def _machinery(frame: Any) -> bool:
    module = str(forksafe.lookup(frame.f_globals, "__name__") or "")  # no lock taken
    return module not in USER_MODULES and module.partition(".")[0] in _MACHINERY


def _where(frame: Any) -> str:
    code = frame.f_code
    return printable(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
