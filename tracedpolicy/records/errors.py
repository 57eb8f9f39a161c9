"""Failures of tracedpolicy's own machinery: counted, logged once per kind, never raised.

Telemetry must never change what a policy call returns or raises, so every exporter boundary
catches its failures and reports them here; ``tracedpolicy_internal_errors_total`` reads them.
"""

from __future__ import annotations

import logging

from tracedpolicy.base import forksafe
from tracedpolicy.records.stats import Counter

logger = logging.getLogger("tracedpolicy")

#: Reentrant: a collection during an allocation under it may run a ``__del__`` whose own
#: failure is recorded in the same thread.
_lock = forksafe.rlock()
_counters: dict[str, Counter] = {}
_logged_kinds: set[str] = set()


def record_internal_error(kind: str, error: BaseException, explanation: str = "") -> None:
    """Count a failure of kind ``kind`` (tracer, meter, observer, ...); log the first one.

    With an ``explanation`` (what failed, where, what to do), that one line is the log, and the
    traceback is only at debug level: a busy port is the user's to fix, not a bug of ours.
    """
    with _lock:
        counter = _counters.setdefault(kind, Counter())
        first = kind not in _logged_kinds
        _logged_kinds.add(kind)
    next(counter.tick)
    if explanation:
        logger.error("tracedpolicy: %s", explanation)
        logger.debug("tracedpolicy %s failed", kind, exc_info=error)
    elif first:
        logger.error(
            "tracedpolicy %s failed; the policy call went on unaffected "
            "(further %s failures are counted, not logged)",
            kind,
            kind,
            exc_info=error,
        )


def internal_errors() -> dict[str, int]:
    """How often each kind of internal failure happened in this process."""
    with _lock:
        return {kind: counter.value for kind, counter in _counters.items()}


def reset_for_tests() -> None:
    """Forget every count and which kinds were logged. Only use this in tests."""
    with _lock:
        _counters.clear()
        _logged_kinds.clear()
