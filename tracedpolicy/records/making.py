"""Making a loop: recorded once, by the outermost layer that sees it being made.

A traced loop factory may call a traced policy, whose base calls a loop class whose constructor
is hooked: three layers, one loop. The outermost layer records it, since its origin tells the
user most (the factory they passed, the policy they set); the layers inside only pass the call
through. A loop constructed inside a layer that does not hand it back (a factory that makes two
and returns one, a policy that makes a probe loop and closes it) is recorded after that layer,
as constructed, where and when its constructor ran; its close is seen whenever it comes, also
before the layer returns (the registry expects the loop from its construction on).
"""

from __future__ import annotations

import asyncio
from typing import Callable

from tracedpolicy.records.events import CONSTRUCTOR, NEW_EVENT_LOOP, Making, thread_state
from tracedpolicy.records.loops import REGISTRY
from tracedpolicy.records.recorder import Recorder, recorder_for
from tracedpolicy.records.sites import class_name

Loop = asyncio.AbstractEventLoop


def make_loop(make: Callable[[], Loop], recorder: Recorder) -> Loop:
    """Call ``make`` and record the loop it returns, unless an outer layer will.

    The recording is an operation of ``recorder``: timed, in a span when spans are on, counted
    and told to observers once the loop exists and no layer is making one any more.
    """
    state = thread_state()
    if state.making is not None:
        return make()
    making = state.making = Making()
    loop: Loop | None = None
    try:
        with recorder.operation(NEW_EVENT_LOOP) as op:
            try:
                op.loop = loop = make()
            finally:
                state.making = None
    finally:
        # Also after a Ctrl-C before make() ran: the thread must not stay "making" for good.
        if state.making is making:
            state.making = None
        # Also when make() raised: a loop it constructed before failing exists all the same.
        record_strays(making, loop)
    return loop


def begin_outer() -> Making | None:
    """Mark this thread as making a loop; None if an outer layer already does."""
    state = thread_state()
    if state.making is not None:
        return None
    making = state.making = Making()
    return making


def end_outer(making: Making | None) -> None:
    """Undo :func:`begin_outer`."""
    if making is not None:
        thread_state().making = None


def note_constructed(loop: Loop) -> bool:
    """Tell the layer making a loop in this thread that ``loop`` was constructed.

    Returns False if no layer is making one: the caller records the loop itself.
    """
    making = thread_state().making
    if making is None:
        return False
    if making.constructed is None:
        making.constructed = []
    making.constructed.append(loop)
    REGISTRY.expect(loop)
    return True


def record_strays(making: Making | None, returned: object) -> None:
    """Record the loops constructed under ``making`` that its layer did not hand back, and
    count the closes of those (and of the one it handed back) that came before now."""
    if making is None or making.constructed is None:
        return
    for loop in making.constructed:
        expected = REGISTRY.settle(loop)
        if loop is not returned and not REGISTRY.tracks(loop):
            recorder = recorder_for(class_name(type(loop)), CONSTRUCTOR)
            recorder.record_after(NEW_EVENT_LOOP, loop=loop, expected=expected)
        if expected is not None and expected.closed_monotonic is not None:
            REGISTRY.closed(loop, at=expected.closed_monotonic)
