"""The keyword options every traced policy, install() and loop_factory() accept."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Options:
    """Validated options; an unknown name or a wrong type is a TypeError naming it."""

    label: str | None = None
    """The ``policy`` label for what this policy records; default: the base's qualified name."""

    @classmethod
    def parse(cls, caller: str, options: dict[str, Any]) -> Options:
        known = [field.name for field in fields(cls)]
        for name in options:
            if name not in known:
                raise TypeError(
                    f"{caller} got an unexpected keyword argument {name!r}; "
                    f"accepted: {', '.join(known)}"
                )
        label = options.get("label")
        if label is not None and not isinstance(label, str):
            raise TypeError(f"{caller}: label must be a str or None, not {type(label).__name__!r}")
        return cls(label=label)
