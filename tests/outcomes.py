"""Comparable outcomes of policy calls: what came back, what was raised, what was warned."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Outcome:
    """One call's result (as given by ``name_of``), exception and warnings, attribution included."""

    result: Any = None
    error: tuple[str, str] | None = None
    warnings: list[tuple[str, str, str, int]] = field(default_factory=list)


def observe(
    call: Callable[[], Any], name_of: Callable[[Any], Any] = lambda value: value
) -> Outcome:
    """Run ``call`` with every warning recorded, returning what happened instead of raising."""
    outcome = Outcome()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome.result = name_of(call())
        except Exception as error:
            outcome.error = (type(error).__name__, str(error))
    # ResourceWarnings come from whatever the garbage collector frees meanwhile (an unclosed
    # loop of an earlier test), at moments that differ between runs: not the call's doing.
    outcome.warnings = [
        (w.category.__name__, str(w.message), w.filename, w.lineno)
        for w in caught
        if not issubclass(w.category, ResourceWarning)
    ]
    return outcome


def in_thread(call: Callable[[], Any], name: str = "worker") -> Any:
    """Run ``call`` in a new thread named ``name`` and return (or raise) what it did."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as error:
            box["error"] = error

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")
