"""Comparable outcomes of policy calls: what came back, what was raised, what was warned."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional


@dataclass
class Outcome:
    """One call's result (as given by ``name_of``), exception and warnings, attribution included."""

    result: Any = None
    error: Optional[tuple[str, str]] = None
    warnings: list[tuple[str, str, str, int]] = field(default_factory=list)


def observe(call: Callable[[], Any], name_of: Callable[[Any], Any] = lambda value: value) -> Outcome:
    """Run ``call`` with every warning recorded, returning what happened instead of raising."""
    outcome = Outcome()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome.result = name_of(call())
        except Exception as error:
            outcome.error = (type(error).__name__, str(error))
    outcome.warnings = [
        (w.category.__name__, str(w.message), w.filename, w.lineno) for w in caught
    ]
    return outcome
