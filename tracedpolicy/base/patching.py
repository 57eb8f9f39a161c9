"""Patches of other code's functions, undone exactly.

A Python function (asyncio's own: the policy setter, ``BaseEventLoop.__init__``, the runner's
``_lazy_init``) is replaced by a Python function made with ``functools.wraps``: it keeps the
original as ``__wrapped__`` (``inspect`` sees its signature), binds as a method as the original
does, and pickles and copies as it does (by reference; as itself), with no import. Anything
else (a C type's slot, a builtin: ``uvloop.Loop.__init__``) is wrapped by wrapt, as
OpenTelemetry's instrumentations do it, imported only then: wrapt 2 imports
``importlib.metadata`` (with ``email``, ``zipfile``, ``csv``), which was two thirds of what
the whole-process mode added to a process's start-up. The bookkeeping is ours, so that undoing
puts back the very object that was there, or removes the attribute where it was inherited
(wrapt's and OpenTelemetry's ``unwrap`` would leave a copy in the subclass). A wrapper must pass
calls through untouched whenever its feature is off: someone may have wrapped ours in turn, and
then ours stays in their chain.
"""

from __future__ import annotations

import copy
import functools
import logging
import sys
import types
from dataclasses import dataclass
from typing import Any, Callable

logger = logging.getLogger("tracedpolicy")

#: ``wrapper(wrapped, instance, args, kwargs)``, wrapt's wrapper signature.
Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]

_MISSING = object()


@dataclass(frozen=True)
class Patch:
    """One attribute replaced by a wrapper, and what to put back."""

    owner: Any
    name: str
    original: Any
    """What ``vars(owner)`` held, or ``_MISSING`` where the attribute was inherited."""
    wrapper: Any

    def undo(self) -> None:
        """Put back exactly what was there, unless someone replaced our wrapper since."""
        if vars(self.owner).get(self.name) is not self.wrapper:
            logger.warning(
                "tracedpolicy could not take its wrapper off %s.%s: something replaced it since;"
                " it stays in place, passing calls through",
                getattr(self.owner, "__qualname__", self.owner.__name__),
                self.name,
            )
            return
        if self.original is _MISSING:
            delattr(self.owner, self.name)
        else:
            setattr(self.owner, self.name, self.original)


def _reference(function: Any) -> Any:
    """What ``function`` reduces to in pickle: a reference by module and qualified name.

    A module's function is pickled as a global (pickle checks the name holds this very object,
    as it does while the patch is on). A method is reached through its class, as pickle does for
    protocols 0-3 (``getattr(BaseEventLoop, "__init__")``): loaded, it is the class's attribute
    then, as with the bare method; a class hands out a new bound wrapper on each access, so the
    global form (which insists on the very object) cannot name it.
    """
    if getattr(function, "__module__", None) is None:  # a C type's slot: its own reduction
        return function.__reduce__()
    qualname: str = function.__qualname__
    path, _, name = qualname.rpartition(".")
    owner = sys.modules.get(function.__module__)
    if not path or owner is None:
        return qualname
    try:
        for part in path.split("."):
            owner = getattr(owner, part)
    except AttributeError:  # a local function: pickle says so, as for the bare one
        return qualname
    return getattr, (owner, name)


@functools.cache
def _wrapt_wrapper_class() -> Any:
    """wrapt's function wrapper, which also pickles and copies as the object it wraps does
    (wrapt's proxies refuse to). Built on first use: wrapt is imported only then."""
    import wrapt

    class _BoundWrapper(wrapt.BoundFunctionWrapper):  # type: ignore[type-arg]
        """A patched method as a class or an instance hands it out."""

        def __reduce_ex__(self, protocol: Any) -> Any:
            if self._self_instance is None:  # BaseEventLoop.__init__: a function, bare
                return _reference(self._self_parent.__wrapped__)
            return self.__wrapped__.__reduce_ex__(protocol)  # (getattr, (obj, name))

        def __copy__(self) -> Any:
            if self._self_instance is None:
                return self  # a function copies as itself
            return getattr(self._self_instance, self.__name__)  # as a method's reduction gives

        def __deepcopy__(self, memo: Any) -> Any:
            if self._self_instance is None:
                return self
            return getattr(copy.deepcopy(self._self_instance, memo), self.__name__)

    class _Wrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
        """A function pickles as a reference to its module's attribute (or its class's), which
        is this wrapper while the patch is on; copying a function gives the function itself."""

        __bound_function_wrapper__ = _BoundWrapper

        def __reduce_ex__(self, protocol: Any) -> Any:
            return _reference(self.__wrapped__)

        def __copy__(self) -> Any:
            return self

        def __deepcopy__(self, memo: Any) -> Any:
            return self

    return _Wrapper


def _function_wrapper(owner: Any, name: str, target: Any, wrapper: Wrapper) -> Any:
    """What stands in for ``owner.name`` (``target``), calling ``wrapper(wrapped, instance,
    args, kwargs)`` as wrapt does, whichever makes it."""
    held = vars(owner).get(name)
    if not isinstance(target, types.FunctionType) or isinstance(held, (staticmethod, classmethod)):
        return _wrapt_wrapper_class()(target, wrapper)
    if not isinstance(owner, type):  # a module's function

        @functools.wraps(target)
        def function(*args: Any, **kwargs: Any) -> Any:
            return wrapper(target, None, args, kwargs)

        return _named_as(function, target)

    @functools.wraps(target)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self is None:  # Class.method(None): as bare, the original runs with None (and fails)
            return wrapper(functools.partial(target, None), None, args, kwargs)
        return wrapper(target.__get__(self, type(self)), self, args, kwargs)

    return _named_as(method, target)


def _named_as(function: Any, target: types.FunctionType) -> Any:
    """``function``'s code named as ``target``'s: 3.9 names a call's missing argument by it
    (``__init__() missing 1 required positional argument: 'self'``), and tracebacks show it."""
    function.__code__ = function.__code__.replace(co_name=target.__code__.co_name)
    return function


def wrap(owner: Any, name: str, wrapper: Wrapper) -> Patch:
    """Replace ``owner.name`` (a class's or a module's) by ``wrapper`` around it."""
    (patch,) = wrap_everywhere([owner], name, wrapper)
    return patch


def wrap_everywhere(owners: list[Any], name: str, wrapper: Wrapper) -> list[Patch]:
    """Wrap ``owners[0].name`` once, and put the one wrapper wherever the same object is held.

    asyncio holds its policy setter in two modules; both then hold the same wrapper, so
    ``asyncio.set_event_loop_policy is asyncio.events.set_event_loop_policy`` still holds.
    """
    target = getattr(owners[0], name)
    function_wrapper = _function_wrapper(owners[0], name, target, wrapper)
    patches = []
    for owner in owners:
        original = vars(owner).get(name, _MISSING)
        if owner is not owners[0] and original is not target:
            continue
        setattr(owner, name, function_wrapper)
        patches.append(Patch(owner, name, original, function_wrapper))
    return patches


def replace(owner: Any, name: str, function: Callable[..., Any]) -> Patch:
    """Put ``function`` (a plain function, which binds as a method) in place of ``owner.name``.

    For the hot paths where wrapt's binding (a wrapper object made per access) costs too much;
    ``function`` should carry ``functools.wraps`` of what it replaces, so ``inspect`` sees the
    original's signature. Raises TypeError or AttributeError where ``owner`` is immutable.
    """
    original = vars(owner).get(name, _MISSING)
    setattr(owner, name, function)
    return Patch(owner, name, original, function)
