"""Traced versions of the stdlib policy classes, each a real subclass of its counterpart.

* ``TracedDefaultEventLoopPolicy``: the platform default (proactor on Windows, selector else).
* ``TracedSelectorEventLoopPolicy``: a selector loop on every platform.
* ``TracedWindowsSelectorEventLoopPolicy`` / ``TracedWindowsProactorEventLoopPolicy``: Windows
  only; elsewhere reading them raises AttributeError, as ``asyncio.WindowsSelectorEventLoopPolicy``
  does.

All are made by :func:`build_hierarchy` from an :class:`~tracedpolicy._compat.AsyncioPolicyApi`,
so the Windows classes come out of the same code that the tests run against stand-ins.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tracedpolicy.base._compat import AsyncioPolicyApi
from tracedpolicy.sources.policy import API
from tracedpolicy.sources.subclass import traced_subclass

WINDOWS_NAMES = ("TracedWindowsSelectorEventLoopPolicy", "TracedWindowsProactorEventLoopPolicy")
NAMES = ("TracedDefaultEventLoopPolicy", "TracedSelectorEventLoopPolicy", *WINDOWS_NAMES)


def build_hierarchy(api: AsyncioPolicyApi) -> dict[str, type]:
    """The traced policy classes that ``api``'s platform has, by public name."""
    if not api.has_policies or api.default_policy is None:
        return {}
    classes = {"TracedDefaultEventLoopPolicy": _trace(api.default_policy, "Default", api)}
    if api.is_windows:
        selector = _trace(api.windows_selector_policy, "WindowsSelector", api)
        classes["TracedWindowsSelectorEventLoopPolicy"] = selector
        classes["TracedWindowsProactorEventLoopPolicy"] = _trace(
            api.windows_proactor_policy, "WindowsProactor", api
        )
        classes["TracedSelectorEventLoopPolicy"] = _trace(
            api.windows_selector_policy, "Selector", api
        )
    else:
        # The Unix default already makes selector loops; say so explicitly all the same, so the
        # class keeps its promise if the default ever changes.
        classes["TracedSelectorEventLoopPolicy"] = _trace(
            api.default_policy,
            "Selector",
            api,
            attributes={"_loop_factory": asyncio.SelectorEventLoop},
        )
    return classes


def _trace(
    stdlib_class: type | None,
    kind: str,
    api: AsyncioPolicyApi,
    attributes: dict[str, Any] | None = None,
) -> type:
    if stdlib_class is None:
        raise RuntimeError(f"asyncio has no {kind} event loop policy to trace on this platform")
    name = f"Traced{kind}EventLoopPolicy"
    return traced_subclass(stdlib_class, name=name, attributes=attributes, api=api)


CLASSES = build_hierarchy(API)
