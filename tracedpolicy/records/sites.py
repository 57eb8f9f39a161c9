"""Names and places, as labels and reports show them: a class's qualified name, text made
printable, where a loop was made (the first frame outside tracedpolicy, asyncio and uvloop),
the current thread's name, a policy's per-thread state."""

from __future__ import annotations

import inspect
import sys
import threading
from typing import Any, NamedTuple

from tracedpolicy.base import forksafe

#: Frames of these packages are not a creation site: the user's call into them is. (wrapt
#: carries the construction hooks; its frames exist only without its C extension.)
SKIPPED_PACKAGES = ("tracedpolicy", "asyncio", "uvloop", "wrapt")


def qualified_name(thing: Any) -> str:
    """A class's or function's module and qualified name: a bounded label value.

    Scopes a name was defined in (``__getattr__.<locals>.`` where uvloop and tornado build
    their policy classes on first use) are left out: ``uvloop.EventLoopPolicy``.
    """
    module = getattr(thing, "__module__", None) or "builtins"
    qualname = getattr(thing, "__qualname__", None) or type(thing).__qualname__
    return f"{module}.{qualname.rpartition('<locals>.')[2]}"


def class_name(cls: type) -> str:
    """A class's qualified name with its module: the bounded ``loop_class`` label value."""
    return qualified_name(cls)


def printable(text: object) -> str:
    """``text`` as a report or a log line may show it: control and format characters escaped.

    Thread names, file paths and labels are the user's (or an attacker's) text; a newline would
    add a fake line to a report, an escape sequence would drive the reader's terminal.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class CreationSite(NamedTuple):
    """Where a loop was made: a file, a line and the function around it."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return printable(f"{self.filename}:{self.lineno} in {self.function}")


#: Modules of ours that play the user's part: their frames are creation sites.
USER_MODULES = ("tracedpolicy.entry.demo",)


def _skipped(frame: Any) -> bool:
    # A subscript, not .get: a module's dict is shared by every thread (forksafe.lookup).
    module = forksafe.lookup(frame.f_globals, "__name__") or ""
    return module not in USER_MODULES and module.partition(".")[0] in SKIPPED_PACKAGES


def _constructing(frame: Any, loop: object) -> bool:
    """Whether ``frame`` is part of making ``loop``: an ``__init__`` of it, or a decorator's
    wrapper around one. Its first argument is the loop, which did not exist before."""
    code = frame.f_code
    if not code.co_argcount and not code.co_flags & inspect.CO_VARARGS:
        return False
    names, local = code.co_varnames, frame.f_locals
    if code.co_argcount:
        return local.get(names[0]) is loop
    star = local.get(names[code.co_kwonlyargcount])
    return isinstance(star, tuple) and bool(star) and star[0] is loop


def capture_site(
    depth: int = 0, loop: object = None
) -> tuple[CreationSite | None, tuple[str, ...]]:
    """The caller's creation site, and up to ``depth`` more frames above it (outermost last).

    With ``loop``, the ``__init__`` frames of that loop are skipped too: a user's loop subclass
    is made where it is called, not where its ``__init__`` calls ``super().__init__()``.
    """
    frame: Any = sys._getframe(1)
    while frame is not None and (
        _skipped(frame) or (loop is not None and _constructing(frame, loop))
    ):
        frame = frame.f_back
    if frame is None:
        return None, ()
    code = frame.f_code
    site = CreationSite(code.co_filename, frame.f_lineno, code.co_name)
    stack: list[str] = []
    outer = frame.f_back
    while outer is not None and len(stack) < depth:
        stack.append(f"{outer.f_code.co_filename}:{outer.f_lineno} in {outer.f_code.co_name}")
        outer = outer.f_back
    return site, tuple(stack)


def current_thread_name() -> str:
    """This thread's name, without making a ``_DummyThread`` for a thread ``threading`` does
    not know (one started with ``_thread.start_new_thread``): a bare policy call makes none."""
    ident = threading.get_ident()
    active = getattr(threading, "_active", None)
    thread = forksafe.lookup(active, ident) if isinstance(active, dict) else None  # no lock
    if thread is None:
        return f"thread {ident}"
    if type(thread) in _PLAIN_THREADS:
        # What the ``name`` property returns, read without it: three attribute lookups fewer,
        # each of which free-threaded 3.13 may make under its global type lock.
        name = getattr(thread, "_name", None)
        if isinstance(name, str):
            return name
    return str(thread.name)  # a subclass may compute its name


#: threading's own thread classes, whose ``name`` is the ``_name`` they keep.
_PLAIN_THREADS = frozenset(
    cls
    for cls in (
        threading.Thread,
        getattr(threading, "_MainThread", None),
        getattr(threading, "_DummyThread", None),
    )
    if isinstance(cls, type)
)


def thread_state_of(holder: object) -> dict[str, Any] | None:
    """This thread's own state dict of a policy that keeps CPython's ``_local``, else None.

    Kept with the loop set on that thread, it tells at the thread's end whether the loop was
    still current there, whoever changed it since (even past any traced policy).
    """
    local = getattr(holder, "_local", None)
    if not isinstance(local, threading.local):
        return None
    state = vars(local)
    return state if isinstance(state, dict) else None
