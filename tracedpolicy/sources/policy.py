"""The traced policy: a wrapper around any policy instance.

The traced subclasses (``traced``, :mod:`tracedpolicy.sources.subclass`) run the same
functions below, so a wrapped instance and a traced subclass behave alike. Faithfulness rules
(see ``shared/reference`` in the team repo for the facts):

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
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, TypeVar, cast

from tracedpolicy.base import _compat
from tracedpolicy.base._compat import AsyncioPolicyApi
from tracedpolicy.base.options import Options
from tracedpolicy.exporters import telemetry
from tracedpolicy.records import events
from tracedpolicy.records.events import (
    GET_EVENT_LOOP,
    NEW_EVENT_LOOP,
    POLICY,
    SET_EVENT_LOOP,
    thread_state,
)
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.making import begin_outer, end_outer, make_loop, record_strays
from tracedpolicy.records.recorder import Recorder, recorder_for
from tracedpolicy.records.sites import qualified_name, thread_state_of

API = _compat.RUNNING

if TYPE_CHECKING:
    _PolicyBase = asyncio.AbstractEventLoopPolicy
else:
    _PolicyBase = API.abstract_policy or object

Loop = asyncio.AbstractEventLoop
PolicyT = TypeVar("PolicyT")


def label_of(cls: type) -> str:
    """The ``policy`` label of a class: its qualified name, bounded by the classes in use."""
    return qualified_name(cls)


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


def _uses_stock_get(policy: Any, api: AsyncioPolicyApi) -> bool:
    """Whether ``policy.get_event_loop`` is CPython's default one now, which we may re-run.

    Read at every call that is not a hit: a test that patches the method on the class, on a
    base class or on the instance, before or after tracing, gets its patch called.
    """
    stock = api.stock_get_event_loop
    return (
        stock is not None
        and getattr(type(policy), "get_event_loop", None) is stock
        and "get_event_loop" not in getattr(policy, "__dict__", ())
    )


def _get_from_stock(outer: Any, holder: Any, recorder: Recorder, api: AsyncioPolicyApi) -> Loop:
    """CPython's default ``get_event_loop`` past a hit, with ``outer`` as its ``self``."""
    with recorder.operation(GET_EVENT_LOOP) as op:
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
                op.result, op.loop = "created", loop
                return loop
        loop = holder._local._loop
        if loop is None:
            op.result = "miss"
            raise _compat.no_current_event_loop_error()
        op.result, op.loop = "hit", loop  # set since the fast path looked (by a subclass)
        recorder.count_hit()
        return loop


def _get_from_opaque(
    inner_get: Callable[[], Loop], recorder: Recorder, hit_span_rate: float, owner: Any
) -> Loop:
    """Call a base's own ``get_event_loop`` and classify what it did afterwards.

    A loop the base constructs meanwhile is this policy's creation (its layer is the outer one).
    A loop the base already held before it was traced is a hit, not a creation.
    """
    creations_before = thread_state().creations
    state = thread_state_of(owner)
    held_before = state.get("_loop") if state is not None else None
    start_ns = time.time_ns()
    making = begin_outer()
    try:
        loop = inner_get()
    except BaseException as error:  # any: a warning made an error, a KeyboardInterrupt
        end_outer(making)
        if isinstance(error, RuntimeError):
            recorder.record_after(GET_EVENT_LOOP, "miss", None, start_ns, error)
        record_strays(making, None)
        raise
    end_outer(making)
    if not REGISTRY.tracks(loop) and loop is not held_before:
        # The base made it with its own new_event_loop, which no traced one recorded.
        recorder.record_after(NEW_EVENT_LOOP, None, loop, start_ns)
        recorder.record_after(GET_EVENT_LOOP, "created", loop, start_ns, owner=owner)
    elif thread_state().creations != creations_before:
        recorder.record_after(GET_EVENT_LOOP, "created", loop, start_ns, owner=owner)
    else:
        recorder.count_hit()
        _maybe_span_hit(recorder, loop, hit_span_rate)
    record_strays(making, loop)
    return loop


#: Draws the hit-span sample; its own generator, so the SDK's id draws do not shift it.
HIT_SAMPLER = random.Random()


def _maybe_span_hit(recorder: Recorder, loop: Loop, rate: float) -> None:
    """Give a hit its span when hit spans are on and the sample says so."""
    if rate and (rate >= 1.0 or HIT_SAMPLER.random() < rate):
        recorder.record_after(GET_EVENT_LOOP, "hit", loop, time.time_ns())


def _set(
    inner_set: Callable[[Loop | None], None], loop: Any, recorder: Recorder, owner: Any
) -> None:
    """Set through the base (its checks, errors and side effects), recorded as it runs.

    ``owner`` keeps the state: the wrapped base, or the traced policy itself. Where nothing
    hears of events (no span, no observer), the set is only counted once it returned.
    """
    if not events.heard():
        inner_set(loop)
        recorder.count_set(loop, owner)
        return
    with recorder.operation(SET_EVENT_LOOP) as op:
        op.owner = owner
        inner_set(loop)
        op.loop = loop


def _fast_get(
    outer: Any, base: Any, recorder: Recorder, api: AsyncioPolicyApi
) -> Callable[[], Loop]:
    """The wrapper's ``get_event_loop``, as a closure over what it reads.

    Set on the instance, it is found without reading a single attribute of the wrapper, whose
    ``__getattr__`` makes every attribute read slow. A hit costs two checks that the base still
    uses CPython's method (not patched on its class or on itself), the base's own two reads,
    and one counter; everything else goes to :meth:`TracedEventLoopPolicy._get_slow`.
    """
    hits = recorder.hits.tick
    cls = type(base)
    own = getattr(base, "__dict__", {})  # where a patch of the instance lands
    stock = api.stock_get_event_loop

    def get_event_loop() -> Loop:
        if cls.get_event_loop is stock and "get_event_loop" not in own:
            loop: Loop | None = base._local._loop
            if loop is not None:
                next(hits)
                return loop
        return outer._get_slow()  # type: ignore[no-any-return]

    return get_event_loop


class TracedEventLoopPolicy(_PolicyBase):
    """Wrap a policy instance so that every call on it is recorded, changing nothing else.

    ``base=None`` wraps a new instance of the platform's default policy. Attributes the wrapper
    does not define (``_local``, ``_loop_factory``, a base's own methods) are read from and
    written to the base, and ``isinstance`` checks against the base's class still hold.
    Wrapping a traced policy returns it unchanged.
    """

    _tracedpolicy_traced = True
    __slots__ = ("_api", "_base", "_hit_span_rate", "_recorder")

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
            Options.parse("TracedEventLoopPolicy()", options)  # bad options fail all the same
            return
        _require_policies(_api)
        parsed = Options.parse("TracedEventLoopPolicy()", options)
        if base is not None:
            _check_policy_instance("TracedEventLoopPolicy()", base, _api)
        else:
            base = cast(Callable[[], Any], _api.default_policy)()
        telemetry.configure(parsed, options)
        recorder = recorder_for(parsed.label or label_of(type(base)), POLICY)
        own = object.__setattr__
        own(self, "_api", _api)
        own(self, "_base", base)
        own(self, "_recorder", recorder)
        own(self, "_hit_span_rate", parsed.hit_span_rate)
        overridden = type(self).get_event_loop is not TracedEventLoopPolicy.get_event_loop
        if not parsed.hit_span_rate and not overridden:
            # A subclass's own get_event_loop must win over the instance's fast path.
            own(self, "get_event_loop", _fast_get(self, base, recorder, _api))

    @property
    def base(self) -> Any:
        """The wrapped policy."""
        return self._base

    def get_event_loop(self) -> Loop:
        # Without hit spans, _fast_get (set on the instance) runs instead, then _get_slow.
        base = self._base
        if _uses_stock_get(base, self._api):
            loop: Loop | None = base._local._loop
            if loop is not None:
                self._recorder.count_hit()
                _maybe_span_hit(self._recorder, loop, self._hit_span_rate)
                return loop
        return self._get_slow()

    def _get_slow(self) -> Loop:
        """Everything but a hit on a stock base: a miss, a creation, or the base's own method."""
        base = self._base
        if _uses_stock_get(base, self._api):
            return _get_from_stock(self, base, self._recorder, self._api)
        return _get_from_opaque(base.get_event_loop, self._recorder, self._hit_span_rate, base)

    def set_event_loop(self, loop: Loop | None) -> None:
        _set(self._base.set_event_loop, loop, self._recorder, self._base)

    def new_event_loop(self) -> Loop:
        return make_loop(self._base.new_event_loop, self._recorder)

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

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickled as the base is (policies hold a thread-local: it fails as the bare one does).
        return self._base.__reduce_ex__(protocol)

    def __repr__(self) -> str:
        return f"<TracedEventLoopPolicy wrapping {self._base!r}>"


#: Names set on the wrapper itself; every other attribute lives on the base.
_WRAPPER_OWN_NAMES = frozenset(TracedEventLoopPolicy.__slots__) | frozenset(
    name for name, value in vars(TracedEventLoopPolicy).items() if inspect.isfunction(value)
)


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
