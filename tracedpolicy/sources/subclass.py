"""The traced subclass: ``@traced`` on a policy class, the traced stdlib hierarchy's classes,
and a policy instance traced in place (given the traced subclass of its class, for the
whole-process mode). A traced subclass runs the same functions as the wrapper
(:mod:`tracedpolicy.sources.policy`), so both behave alike.
"""

from __future__ import annotations

import copyreg
import functools
import weakref
from collections.abc import Mapping
from typing import Any, cast

from tracedpolicy.base import forksafe
from tracedpolicy.base._compat import AsyncioPolicyApi
from tracedpolicy.base.options import Options
from tracedpolicy.exporters import telemetry
from tracedpolicy.records.events import (
    POLICY,
)
from tracedpolicy.records.making import make_loop
from tracedpolicy.records.recorder import recorder_for
from tracedpolicy.sources.policy import (
    API,
    Loop,
    PolicyT,
    TracedEventLoopPolicy,
    _get_from_opaque,
    _get_from_stock,
    _maybe_span_hit,
    _require_policies,
    _set,
    is_traced,
    label_of,
)


def traced_subclass(
    cls: type,
    *,
    name: str | None = None,
    given: Mapping[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    api: AsyncioPolicyApi = API,
) -> type:
    """Build a subclass of the policy class ``cls`` whose calls are recorded.

    It keeps ``cls``'s name, module and docstring unless ``name`` is given, and adds
    ``attributes`` (such as a ``_loop_factory``) to its namespace. ``given`` are the keyword
    options, over the ``TRACEDPOLICY_*`` variables as they are when the class is made.
    """
    given = dict(given or {})
    try:
        options = Options.parse("traced()", given)
        bad_environment = False
    except (TypeError, ValueError):
        # A bad keyword fails here; a bad TRACEDPOLICY_* variable fails when a policy is made,
        # not when tracedpolicy is imported (its stdlib classes are made at import).
        options = Options.parse("traced()", given, environ={})
        bad_environment = True
    recorder = recorder_for(options.label or label_of(cls), POLICY)
    subclass: type  # made last; the methods below look it up when called
    hits = recorder.hits.tick
    hit_span_rate = options.hit_span_rate
    stock = api.stock_get_event_loop

    def get_event_loop(self: Any) -> Loop:
        # ``cls.get_event_loop`` is read each time: a patch of cls or its bases must be called.
        if cls.get_event_loop is stock:  # type: ignore[attr-defined]
            loop: Loop | None = self._local._loop
            if loop is not None:
                next(hits)
                if hit_span_rate:
                    _maybe_span_hit(recorder, loop, hit_span_rate)
                return loop
            if tracing(self):
                return _get_from_stock(self, self, recorder, api)
        if not tracing(self):
            return parent(self).get_event_loop()  # type: ignore[no-any-return]
        return _get_from_opaque(parent(self).get_event_loop, recorder, hit_span_rate, self)

    def set_event_loop(self: Any, loop: Loop | None) -> None:
        if not tracing(self):
            return parent(self).set_event_loop(loop)  # type: ignore[no-any-return]
        _set(parent(self).set_event_loop, loop, recorder, self)
        return None

    def new_event_loop(self: Any) -> Loop:
        if not tracing(self):
            return parent(self).new_event_loop()  # type: ignore[no-any-return]
        return make_loop(parent(self).new_event_loop, recorder)

    @functools.wraps(cast(Any, cls).__init__)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if bad_environment:
            Options.parse("traced()", given)  # raises the variable's message, if still bad
        parent(self).__init__(*args, **kwargs)
        if tracing(self):
            telemetry.configure(options, given)

    def parent(self: Any) -> Any:
        """``super()`` as seen from the subclass: the next class in ``self``'s MRO; or, once
        :func:`untrace_in_place` gave the object its class back, the object itself (a method
        bound before, or running in another thread meanwhile, then acts as the bare one)."""
        if isinstance(self, subclass):
            try:
                return super(cast(Any, subclass), self)
            except TypeError:  # given its class back between the check and here
                pass
        return self

    def tracing(self: Any) -> bool:
        """Whether this call is to be recorded: the class is on and the object still has it."""
        return bool(cast(Any, subclass)._tracedpolicy_traced) and isinstance(self, subclass)

    namespace: dict[str, Any] = {
        "__module__": cls.__module__ if name is None else __name__.partition(".")[0],  # the package
        "__qualname__": cls.__qualname__ if name is None else name,
        "__doc__": cls.__doc__,
        # No slots of its own, so a policy of cls can be given this class (trace_in_place).
        "__slots__": (),
        "_tracedpolicy_traced": True,
        "_tracedpolicy_recorder": recorder,
        "get_event_loop": get_event_loop,
        "set_event_loop": set_event_loop,
        "new_event_loop": new_event_loop,
        "__init__": __init__,
        **(attributes or {}),
    }
    for method in (get_event_loop, set_event_loop, new_event_loop):
        method.__doc__ = getattr(cls, method.__name__, None).__doc__
    subclass = type(cls)(name or cls.__name__, (cls,), namespace)
    return subclass


def traced(policy: PolicyT, **options: Any) -> PolicyT:
    """Trace a policy class (as a decorator) or a policy instance.

    On a class, return an instrumented subclass with the same name, so ``isinstance`` against
    the original class still holds. On an instance, return a :class:`TracedEventLoopPolicy`
    around it. Something already traced is returned unchanged. ``options`` are those of
    :class:`TracedEventLoopPolicy` (``functools.partial(traced, label=...)`` as a decorator).
    """
    _require_policies(API)
    abstract = cast(type, API.abstract_policy)
    Options.parse("traced()", options)  # a bad option fails here, before anything is made
    if is_traced(policy):
        return policy
    if isinstance(policy, type) and issubclass(policy, abstract):
        return cast(PolicyT, traced_subclass(policy, given=options))
    if isinstance(policy, abstract):
        return cast(PolicyT, TracedEventLoopPolicy(policy, **options))
    raise TypeError(
        "traced() expects an event loop policy class or instance (an AbstractEventLoopPolicy), "
        f"not {type(policy).__name__!r}"
    )


_in_place_lock = forksafe.lock()
#: The traced subclass that policies of each class get when traced in place (weakly held both
#: ways: a class a test defines and drops goes away, and its traced twin with it).
_in_place_classes: weakref.WeakKeyDictionary[type, weakref.ref[type]] = weakref.WeakKeyDictionary()


def trace_in_place(policy: Any, api: AsyncioPolicyApi = API) -> bool:
    """Trace ``policy`` itself, by giving it a traced subclass of its class.

    The subclass has the class's name and module and no state of its own, so nothing changes
    but the tracing: ``asyncio.get_event_loop_policy() is policy`` and every ``isinstance``
    still hold, it pickles and copies as its class, and :func:`untrace_in_place` gives the
    object its class back. Returns False, changing nothing, where that cannot be done (an
    extension type, a mock; a class whose ``__init_subclass__`` refuses a subclass).
    """
    if is_traced(policy):
        return True
    cls = type(policy)
    with _in_place_lock:
        known = _in_place_classes.get(cls)
        traced_class = known() if known is not None else None
        try:
            if traced_class is None:
                traced_class = traced_subclass(
                    cls,
                    api=api,
                    attributes={
                        "_tracedpolicy_original": cls,
                        "__reduce_ex__": _reduce_as_original,
                    },
                )
                _in_place_classes[cls] = weakref.ref(traced_class)
            cast(Any, traced_class)._tracedpolicy_traced = True
            object.__setattr__(policy, "__class__", traced_class)
        except Exception:  # the class refuses: its loops are still seen, as constructed
            return False
    return True


def untrace_in_place(policy: Any) -> None:
    """Give a policy traced in place its own class back; others are left alone."""
    original = vars(type(policy)).get("_tracedpolicy_original")
    if original is not None:
        object.__setattr__(policy, "__class__", original)


def switch_off_in_place_classes() -> None:
    """Policies still of a traced-in-place class (a copy made by ``type(p)()``, a subclass
    derived from one) act as their own class from now on: nothing of theirs is recorded."""
    with _in_place_lock:
        for known in list(_in_place_classes.values()):
            traced_class = known()
            if traced_class is not None:
                cast(Any, traced_class)._tracedpolicy_traced = False


def _reduce_as_original(self: Any, protocol: Any) -> Any:
    """Pickle and copy a policy traced in place as an object of its own class."""
    traced_class: Any = next(c for c in type(self).__mro__ if "_tracedpolicy_original" in vars(c))
    original = vars(traced_class)["_tracedpolicy_original"]
    reduced = super(traced_class, self).__reduce_ex__(protocol)
    rebuild: Any = copyreg  # its private helpers are what object.__reduce_ex__ returns
    if isinstance(reduced, tuple) and reduced[0] in (rebuild.__newobj__, rebuild._reconstructor):
        # Made anew as an object of the original class (pickle insists that __newobj__'s class
        # be the object's own), with the same state.
        return (rebuild._reconstructor, (original, object, None), *reduced[2:])
    return reduced
