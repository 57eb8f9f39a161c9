"""The counts of one creator (a policy, factory or loop class label), whatever its origin."""

from __future__ import annotations

from tracedpolicy.records.recorder import Recorder, recorders


def recorder_named(creator: str) -> Recorder:
    """The one recorder whose creator is ``creator``."""
    (recorder,) = [r for r in recorders() if r.creator == creator]
    return recorder


def loop_counts(creator: str) -> dict[str, int]:
    """Loops created, closed and open by ``creator``."""
    snapshot = recorder_named(creator).snapshot()
    return {key: snapshot[key] for key in ("loops.created", "loops.closed", "loops.open")}


def leak_counts(creator: str) -> dict[str, int]:
    """Leaks by reason of ``creator``'s one loop class."""
    (stats,) = recorder_named(creator).loop_classes().values()
    return {reason: counter.value for reason, counter in stats.leaked.items()}
