"""The traced policy: a wrapper around any policy instance, and the ``traced`` decorator.

Both forms run the same functions below, so a wrapped instance and a traced subclass behave
alike. Faithfulness rules (see ``shared/reference`` in the team repo for the facts):

* Where the base's ``get_event_loop`` is CPython's own (``BaseDefaultEventLoopPolicy``), it is
  re-run here rather than called: a hit then costs about what the bare method costs, and the
  "There is no current event loop" warning is emitted by us, attributed to the user's line
  instead of to a tracedpolicy frame. Implicit creation calls ``set_event_loop`` and
  ``new_event_loop`` on the *traced* object, as CPython calls them on ``self``.
* Any other ``get_event_loop`` (tornado's, a user's) is called as it is.
* Methods that are not traced (child watchers, a base's extra methods) are handed out as the
  base's own bound methods, so no frame of ours sits between the caller and their warnings.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from threading import get_ident
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from tracedpolicy import _compat
from tracedpolicy._compat import AsyncioPolicyApi
from tracedpolicy.options import Options
from tracedpolicy.recorder import PolicyRecorder, _MainThread, record_internal_error, recorder_for

API = _compat.RUNNING

if TYPE_CHECKING:
    _PolicyBase = asyncio.AbstractEventLoopPolicy
else:
    _PolicyBase = API.abstract_policy or object

Loop = asyncio.AbstractEventLoop
PolicyT = TypeVar("PolicyT")


class _ThreadState(threading.local):
    """How many loops traced policies made in this thread, to spot one made during a get."""

    creations = 0


_thread_state = _ThreadState()


def label_of(cls: type) -> str:
    """The ``policy`` label of a class: its qualified name, bounded by the classes in use."""
    return f"{cls.__module__}.{cls.__qualname__}"


def is_traced(policy: object) -> bool:
    """Whether ``policy`` (an instance or a class) is already traced."""
    cls = policy if isinstance(policy, type) else type(policy)
    return bool(getattr(cls, "_tracedpolicy_traced", False))


def _require_policies(api: AsyncioPolicyApi) -> None:
    if not api.has_policies:
        raise RuntimeError(
            "asyncio has no event loop policies on this Python; "
            "trace loops with tracedpolicy.loop_factory() instead"
        )


def _uses_stock_get(cls: type, api: AsyncioPolicyApi) -> bool:
    """Whether ``cls.get_event_loop`` is CPython's default one, which we may re-run."""
    stock = getattr(api.base_default_policy, "get_event_loop", None)
    return stock is not None and getattr(cls, "get_event_loop", None) is stock


def _safely(record: Callable[..., None], *args: Any) -> None:
    """Record without ever letting a telemetry failure change the policy call."""
    try:
        record(*args)
    except Exception as failure:
        record_internal_error("recorder", failure)


def _get_from_stock(
    outer: Any, holder: Any, recorder: PolicyRecorder, api: AsyncioPolicyApi
) -> Loop:
    """CPython's default ``get_event_loop`` past a hit, with ``outer`` as its ``self``."""
    local = holder._local
    if (
        api.creates_loops_implicitly
        and local._loop is None
        and not local._set_called
        and threading.current_thread() is threading.main_thread()
    ):
        if api.warns_on_implicit_creation:
            _compat.warn_no_current_event_loop()
        outer.set_event_loop(outer.new_event_loop())
        loop: Loop | None = holder._local._loop
        if loop is not None:
            _safely(recorder.loop_got_created, loop)
            return loop
    loop = holder._local._loop
    if loop is None:
        error = _compat.no_current_event_loop_error()
        _safely(recorder.loop_missed, error)
        raise error
    return loop


def _get_from_opaque(inner_get: Callable[[], Loop], recorder: PolicyRecorder) -> Loop:
    """Call a base's own ``get_event_loop`` and classify what it did."""
    creations_before = _thread_state.creations
    try:
        loop = inner_get()
    except RuntimeError as error:
        _safely(recorder.loop_missed, error)
        raise
    try:
        if loop not in recorder.known_loops:
            # The base made it without a traced new_event_loop (it called its own).
            recorder.loop_created(loop, None)
            recorder.loop_got_created(loop)
        elif _thread_state.creations != creations_before:
            recorder.loop_got_created(loop)
        else:
            _count_hit(recorder)
    except Exception as failure:
        record_internal_error("recorder", failure)
    return loop


def _count_hit(recorder: PolicyRecorder) -> None:
    counter = recorder.hits_main if get_ident() == _MainThread.ident else recorder.hits_other
    next(counter.tick)


def _set(inner_set: Callable[[Loop | None], None], loop: Any, recorder: PolicyRecorder) -> None:
    """Set through the base (its checks, errors and side effects), then record."""
    inner_set(loop)
    _safely(recorder.loop_set, loop)


def _new(inner_new: Callable[[], Loop], recorder: PolicyRecorder) -> Loop:
    """Make a loop through the base and record how long it took."""
    start = time.perf_counter()
    loop = inner_new()
    duration = time.perf_counter() - start
    _thread_state.creations += 1
    _safely(recorder.loop_created, loop, duration)
    return loop


class TracedEventLoopPolicy(_PolicyBase):
    """Wrap a policy instance so that every call on it is recorded, changing nothing else.

    ``base=None`` wraps a new instance of the platform's default policy. Attributes the wrapper
    does not define (``_local``, ``_loop_factory``, a base's own methods) are read from and
    written to the base, and ``isinstance`` checks against the base's class still hold.
    Wrapping a traced policy returns it unchanged.
    """

    _tracedpolicy_traced = True
    __slots__ = ("_api", "_base", "_hits_main", "_hits_other", "_recorder", "_stock_get")

    def __new__(cls, base: Any = None, **options: Any) -> TracedEventLoopPolicy:
        if base is not None and is_traced(base):
            return cast(TracedEventLoopPolicy, base)
        return super().__new__(cls)

    def __init__(
        self,
        base: Any = None,
        *,
        _api: AsyncioPolicyApi = API,
        **options: Any,
    ) -> None:
        if base is self:  # __new__ returned an already traced policy
            return
        _require_policies(_api)
        parsed = Options.parse("TracedEventLoopPolicy()", options)
        if base is not None:
            _check_policy_instance("TracedEventLoopPolicy()", base, _api)
        else:
            base = cast(Callable[[], Any], _api.default_policy)()
        recorder = recorder_for(parsed.label or label_of(type(base)))
        own = object.__setattr__
        own(self, "_api", _api)
        own(self, "_base", base)
        own(self, "_recorder", recorder)
        own(
            self,
            "_stock_get",
            _uses_stock_get(type(base), _api) and "get_event_loop" not in _instance_dict(base),
        )
        own(self, "_hits_main", recorder.hits_main.tick)
        own(self, "_hits_other", recorder.hits_other.tick)

    @property
    def base(self) -> Any:
        """The wrapped policy."""
        return self._base

    def get_event_loop(self) -> Loop:
        if self._stock_get:
            loop: Loop | None = self._base._local._loop
            if loop is not None:
                next(self._hits_main if get_ident() == _MainThread.ident else self._hits_other)
                return loop
            return _get_from_stock(self, self._base, self._recorder, self._api)
        return _get_from_opaque(self._base.get_event_loop, self._recorder)

    def set_event_loop(self, loop: Loop | None) -> None:
        _set(self._base.set_event_loop, loop, self._recorder)

    def new_event_loop(self) -> Loop:
        return _new(self._base.new_event_loop, self._recorder)

    if API.has_child_watchers:
        # Properties, not methods: the base's bound method is returned and called directly, so
        # its 3.12/3.13 DeprecationWarning (stacklevel=3) still points at the user's line.
        @property
        def get_child_watcher(self) -> Callable[[], Any]:
            return cast(Callable[[], Any], self._base.get_child_watcher)

        @property
        def set_child_watcher(self) -> Callable[[Any], None]:
            return cast(Callable[[Any], None], self._base.set_child_watcher)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        """The base's class, so ``isinstance(p, type(base))`` holds as it did before wrapping."""
        return type(self._base)

    def __getattr__(self, name: str) -> Any:
        if name in TracedEventLoopPolicy.__slots__:
            raise AttributeError(name)  # not initialised yet; do not recurse into the base
        return getattr(self._base, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _WRAPPER_OWN_NAMES:
            # Slots, and patches of the traced methods (a test spying on set_event_loop).
            object.__setattr__(self, name, value)
        else:
            # _local must be written through: CPython's fork handler (3.12+) assigns it.
            setattr(self._base, name, value)

    def __delattr__(self, name: str) -> None:
        if name in _WRAPPER_OWN_NAMES:
            object.__delattr__(self, name)
        else:
            delattr(self._base, name)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(type(self))) | set(vars(self)) | set(dir(self._base)))

    def __repr__(self) -> str:
        return f"<TracedEventLoopPolicy wrapping {self._base!r}>"


#: Names set on the wrapper itself; every other attribute lives on the base.
_WRAPPER_OWN_NAMES = frozenset(TracedEventLoopPolicy.__slots__) | frozenset(
    name for name, value in vars(TracedEventLoopPolicy).items() if inspect.isfunction(value)
)


def _instance_dict(obj: Any) -> dict[str, Any]:
    try:
        return cast(dict[str, Any], vars(obj))
    except TypeError:  # __slots__ without __dict__
        return {}


def _check_policy_instance(caller: str, policy: Any, api: AsyncioPolicyApi) -> None:
    abstract = cast(type, api.abstract_policy)
    if isinstance(policy, type) and issubclass(policy, abstract):
        raise TypeError(
            f"{caller} expects an event loop policy instance, not the class "
            f"{policy.__qualname__!r}; pass {policy.__qualname__}() instead"
        )
    if not isinstance(policy, abstract):
        raise TypeError(
            f"{caller} expects an event loop policy instance (an AbstractEventLoopPolicy), "
            f"not {type(policy).__name__!r}"
        )


def traced_subclass(
    cls: type,
    *,
    name: str | None = None,
    label: str | None = None,
    attributes: dict[str, Any] | None = None,
    api: AsyncioPolicyApi = API,
) -> type:
    """Build a subclass of the policy class ``cls`` whose calls are recorded.

    It keeps ``cls``'s name, module and docstring unless ``name`` is given, and adds
    ``attributes`` (such as a ``_loop_factory``) to its namespace.
    """
    recorder = recorder_for(label or label_of(cls))
    subclass: type  # made last; the methods below look it up when called
    hits_main, hits_other = recorder.hits_main.tick, recorder.hits_other.tick

    if _uses_stock_get(cls, api):

        def get_event_loop(self: Any) -> Loop:
            loop: Loop | None = self._local._loop
            if loop is not None:
                next(hits_main if get_ident() == _MainThread.ident else hits_other)
                return loop
            return _get_from_stock(self, self, recorder, api)

    else:

        def get_event_loop(self: Any) -> Loop:
            return _get_from_opaque(parent(self).get_event_loop, recorder)

    def set_event_loop(self: Any, loop: Loop | None) -> None:
        _set(parent(self).set_event_loop, loop, recorder)

    def new_event_loop(self: Any) -> Loop:
        return _new(parent(self).new_event_loop, recorder)

    def parent(self: Any) -> Any:
        """``super()`` as seen from the subclass: the next class in ``self``'s MRO."""
        return super(cast(Any, subclass), self)

    namespace: dict[str, Any] = {
        "__module__": cls.__module__ if name is None else __name__.rpartition(".")[0],
        "__qualname__": cls.__qualname__ if name is None else name,
        "__doc__": cls.__doc__,
        "_tracedpolicy_traced": True,
        "_tracedpolicy_recorder": recorder,
        "get_event_loop": get_event_loop,
        "set_event_loop": set_event_loop,
        "new_event_loop": new_event_loop,
        **(attributes or {}),
    }
    for method in (get_event_loop, set_event_loop, new_event_loop):
        method.__doc__ = getattr(cls, method.__name__).__doc__
    subclass = type(cls)(name or cls.__name__, (cls,), namespace)
    return subclass


def traced(policy: PolicyT) -> PolicyT:
    """Trace a policy class (as a decorator) or a policy instance.

    On a class, return an instrumented subclass with the same name, so ``isinstance`` against
    the original class still holds. On an instance, return a :class:`TracedEventLoopPolicy`
    around it. Something already traced is returned unchanged.
    """
    _require_policies(API)
    abstract = cast(type, API.abstract_policy)
    if is_traced(policy):
        return policy
    if isinstance(policy, type) and issubclass(policy, abstract):
        return cast(PolicyT, traced_subclass(policy))
    if isinstance(policy, abstract):
        return cast(PolicyT, TracedEventLoopPolicy(policy))
    raise TypeError(
        "traced() expects an event loop policy class or instance (an AbstractEventLoopPolicy), "
        f"not {type(policy).__name__!r}"
    )
