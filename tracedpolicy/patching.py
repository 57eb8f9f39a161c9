"""Patches of other code's functions, undone exactly.

The wrapping is wrapt's, as OpenTelemetry's instrumentations do it: the wrapper keeps the
original as ``__wrapped__``, binds like it, and ``inspect`` still sees its signature. The
bookkeeping is ours, so that undoing puts back the very object that was there, or removes the
attribute where it was inherited (wrapt's and OpenTelemetry's ``unwrap`` would leave a copy in
the subclass). A wrapper must pass calls through untouched whenever its feature is off: someone
may have wrapped ours in turn, and then ours stays in their chain.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import wrapt

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


def wrap(owner: Any, name: str, wrapper: Wrapper) -> Patch:
    """Replace ``owner.name`` (a class's or a module's) by ``wrapper`` around it."""
    original = vars(owner).get(name, _MISSING)
    target = getattr(owner, name)
    function_wrapper = wrapt.FunctionWrapper(target, wrapper)
    setattr(owner, name, function_wrapper)
    return Patch(owner, name, original, function_wrapper)
