"""The options of traced policies, install() and loop_factory(), and their TRACEDPOLICY_* twins.

A keyword option wins over its environment variable, which wins over the default. Every bad
value is rejected when the policy is made (``install()`` time), naming the option or variable,
the value and what is accepted, so a typo never silently turns telemetry off.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

#: Whether get_event_loop hits get spans: never (the default), a random sample, or every one.
GET_SPAN_MODES = ("off", "sampled", "all")
_SWITCH = {"1": True, "true": True, "on": True, "yes": True,
           "0": False, "false": False, "off": False, "no": False}  # fmt: skip

#: Environment variable names, each documented in the README's options table.
TRACEDPOLICY_SPANS = "TRACEDPOLICY_SPANS"
TRACEDPOLICY_GET_SPANS = "TRACEDPOLICY_GET_SPANS"
TRACEDPOLICY_GET_SPAN_SAMPLE_RATE = "TRACEDPOLICY_GET_SPAN_SAMPLE_RATE"
TRACEDPOLICY_PROMETHEUS = "TRACEDPOLICY_PROMETHEUS"
TRACEDPOLICY_METRICS_PORT = "TRACEDPOLICY_METRICS_PORT"
TRACEDPOLICY_METRICS_ADDR = "TRACEDPOLICY_METRICS_ADDR"
TRACEDPOLICY_CREATION_STACK = "TRACEDPOLICY_CREATION_STACK"
TRACEDPOLICY_REPORT_AT_EXIT = "TRACEDPOLICY_REPORT_AT_EXIT"
TRACEDPOLICY_HEALTH = "TRACEDPOLICY_HEALTH"
TRACEDPOLICY_HEALTH_RESOLUTION = "TRACEDPOLICY_HEALTH_RESOLUTION"
TRACEDPOLICY_BLOCKING_THRESHOLD = "TRACEDPOLICY_BLOCKING_THRESHOLD"

#: The directory of a fleet's files (:mod:`tracedpolicy.exporters.fleet`): made and handed down
#: by the serving process; set it to choose where.
TRACEDPOLICY_MULTIPROC_DIR = "TRACEDPOLICY_MULTIPROC_DIR"

#: Silences the one-line banner ``python -m tracedpolicy run`` prints at a terminal.
TRACEDPOLICY_QUIET = "TRACEDPOLICY_QUIET"

#: What each variable does, for ``run --help`` and the banner (the README's options table says
#: more); the order is the order they are listed in.
VARIABLES = {
    TRACEDPOLICY_METRICS_PORT: "serve /metrics and /loops on this port (0: any free port)",
    TRACEDPOLICY_METRICS_ADDR: "the address that server binds (default 127.0.0.1)",
    TRACEDPOLICY_HEALTH: "1: watch each loop's delay, utilization, blocking callbacks, tasks",
    TRACEDPOLICY_HEALTH_RESOLUTION: "seconds between two probes of a loop (default 0.01)",
    TRACEDPOLICY_BLOCKING_THRESHOLD: "seconds a loop may be held before it counts (default 0.1)",
    TRACEDPOLICY_REPORT_AT_EXIT: "1: at exit, print the loops still open and a tally",
    TRACEDPOLICY_CREATION_STACK: "frames kept above each loop's creation site, 0 to 64",
    TRACEDPOLICY_SPANS: "0: no spans for loop creation, set and misses (default 1)",
    TRACEDPOLICY_GET_SPANS: "spans for get_event_loop hits: off (default), sampled, all",
    TRACEDPOLICY_GET_SPAN_SAMPLE_RATE: "the share of hits with a span when sampled, 0 to 1",
    TRACEDPOLICY_PROMETHEUS: "0: no Prometheus collector in prometheus_client's registry",
    TRACEDPOLICY_MULTIPROC_DIR: "the directory a serving process gathers its processes in",
    TRACEDPOLICY_QUIET: "1: no banner from run at a terminal",
}

#: Names of the family that are not options: ``run``'s own marker for the processes it starts,
#: and the project's CI switch for its tests.
_NOT_OPTIONS = ("TRACEDPOLICY_BOOTSTRAP", "TRACEDPOLICY_REQUIRE_PROMTOOL", "TRACEDPOLICY_CI_CACHE")
_PREFIX = "TRACEDPOLICY_"
_warned_unknown = False

#: The deepest creation stack a record keeps: enough to find a caller, bounded for memory.
MAX_CREATION_STACK = 64

#: The bounds of the health durations (resolution, threshold), in seconds.
MIN_SECONDS, MAX_SECONDS = 0.001, 60.0

_DEFAULT = object()  # "not given": distinct from None, which means "none" for some options


@dataclass(frozen=True)
class Options:
    """Validated options."""

    label: str | None = None
    """The ``policy`` label; default: the base class's qualified name."""
    spans: bool = True
    """Spans for loop creation, set_event_loop and misses."""
    get_spans: str = "off"
    """Spans for get_event_loop hits: ``off``, ``sampled`` or ``all``."""
    get_span_sample_rate: float = 0.01
    """The share of hits that get a span when ``get_spans`` is ``sampled``, 0 to 1."""
    tracer_provider: Any = None
    """An OpenTelemetry TracerProvider; default: the global one."""
    meter_provider: Any = None
    """An OpenTelemetry MeterProvider; default: the global one."""
    prometheus: bool = True
    """Register the Prometheus collector (once per registry)."""
    prometheus_registry: Any = None
    """The prometheus_client registry; default: ``prometheus_client.REGISTRY``."""
    metrics_port: int | None = None
    """Serve ``/metrics`` on this port (0: any free port); default: no server."""
    metrics_addr: str = "127.0.0.1"
    """The address the metrics server binds; loopback unless told otherwise."""
    creation_stack: int = 0
    """Frames to keep above each loop's creation site (0: the site only)."""
    report_at_exit: bool = False
    """At exit, count the loops still open as leaked ``open_at_exit`` and print the report."""
    health: bool = False
    """Watch each loop made from now on: delay, utilization, blocking callbacks, tasks."""
    health_resolution: float = 0.01
    """Seconds between two probes of a running loop (the delay's resolution)."""
    blocking_threshold: float = 0.1
    """Seconds a loop may be held by one callback or task step before it counts as blocked."""

    @property
    def hit_span_rate(self) -> float:
        """The probability that a hit gets a span: 0 (off), the sample rate, or 1 (all)."""
        return {"off": 0.0, "sampled": self.get_span_sample_rate, "all": 1.0}[self.get_spans]

    @classmethod
    def parse(
        cls,
        caller: str,
        options: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
        refused: tuple[str, ...] = (),
    ) -> Options:
        """Validate keyword ``options`` over the ``TRACEDPOLICY_*`` variables of ``environ``.

        ``refused``: options the caller does not take, left out of the accepted ones it names.
        """
        known = [field.name for field in fields(cls) if field.name not in refused]
        for name in options:
            if name not in known:
                raise TypeError(
                    f"{caller} got an unexpected keyword argument {name!r}; "
                    f"accepted: {', '.join(known)}"
                )
        env = os.environ if environ is None else environ
        source = _Source(caller, options, env)
        return cls(
            label=source.text("label", None, None),
            spans=source.switch("spans", TRACEDPOLICY_SPANS, True),
            get_spans=source.choice("get_spans", TRACEDPOLICY_GET_SPANS, "off", GET_SPAN_MODES),
            get_span_sample_rate=source.rate(
                "get_span_sample_rate", TRACEDPOLICY_GET_SPAN_SAMPLE_RATE, 0.01
            ),
            tracer_provider=options.get("tracer_provider"),
            meter_provider=options.get("meter_provider"),
            prometheus=source.switch("prometheus", TRACEDPOLICY_PROMETHEUS, True),
            prometheus_registry=options.get("prometheus_registry"),
            metrics_port=source.port("metrics_port", TRACEDPOLICY_METRICS_PORT),
            metrics_addr=source.address("metrics_addr", TRACEDPOLICY_METRICS_ADDR, "127.0.0.1"),
            creation_stack=source.whole(
                "creation_stack", TRACEDPOLICY_CREATION_STACK, 0, MAX_CREATION_STACK
            ),
            report_at_exit=source.switch("report_at_exit", TRACEDPOLICY_REPORT_AT_EXIT, False),
            health=source.switch("health", TRACEDPOLICY_HEALTH, False),
            health_resolution=source.seconds(
                "health_resolution", TRACEDPOLICY_HEALTH_RESOLUTION, 0.01
            ),
            blocking_threshold=source.seconds(
                "blocking_threshold", TRACEDPOLICY_BLOCKING_THRESHOLD, 0.1
            ),
        )


class _Source:
    """Reads one option from the keywords or the environment, and says what is wrong with it."""

    def __init__(self, caller: str, options: Mapping[str, Any], env: Mapping[str, str]) -> None:
        self.caller, self.options, self.env = caller, options, env

    def _raw(self, name: str, variable: str | None) -> tuple[Any, str]:
        """The given value and how to name where it came from."""
        if name in self.options:
            return self.options[name], f"{self.caller}: option {name}"
        if variable is not None and self.env.get(variable, "").strip():
            return self.env[variable].strip(), f"environment variable {variable}"
        return _DEFAULT, ""

    def text(self, name: str, variable: str | None, default: str | None) -> str | None:
        value, where = self._raw(name, variable)
        if value is _DEFAULT or value is None:
            return default
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a str, not {type(value).__name__!r}")
        return value

    def switch(self, name: str, variable: str, default: bool) -> bool:
        value, where = self._raw(name, variable)
        if value is _DEFAULT:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _SWITCH:
            return _SWITCH[value.lower()]
        raise ValueError(f"{where} is {_shown(value)}; accepted: true/false, on/off, 1/0, yes/no")

    def choice(self, name: str, variable: str, default: str, accepted: tuple[str, ...]) -> str:
        value, where = self._raw(name, variable)
        if value is _DEFAULT:
            return default
        if isinstance(value, str) and value.lower() in accepted:
            return value.lower()
        raise ValueError(f"{where} is {_shown(value)}; accepted: {', '.join(accepted)}")

    def rate(self, name: str, variable: str, default: float) -> float:
        value, where = self._raw(name, variable)
        if value is _DEFAULT:
            return default
        try:
            rate = float(value)
        except (TypeError, ValueError):
            rate = float("nan")
        if isinstance(value, bool) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"{where} is {_shown(value)}; accepted: a number from 0 to 1")
        return rate

    def seconds(self, name: str, variable: str, default: float) -> float:
        """A duration from a millisecond to a minute: finer would busy the loop, coarser says
        nothing."""
        value, where = self._raw(name, variable)
        if value is _DEFAULT:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = float("nan")
        if isinstance(value, bool) or not MIN_SECONDS <= number <= MAX_SECONDS:
            raise ValueError(
                f"{where} is {_shown(value)}; accepted: seconds from {MIN_SECONDS} to {MAX_SECONDS}"
            )
        return number

    def whole(self, name: str, variable: str, default: int, maximum: int) -> int:
        value, where = self._raw(name, variable)
        if value is _DEFAULT:
            return default
        number = _whole_number(value, maximum)
        if number is None:
            raise ValueError(
                f"{where} is {_shown(value)}; accepted: a whole number from 0 to {maximum}"
            )
        return number

    def port(self, name: str, variable: str) -> int | None:
        value, where = self._raw(name, variable)
        if value is _DEFAULT or value is None:
            return None
        port = _whole_number(value, 65535)
        if port is None:
            raise ValueError(f"{where} is {_shown(value)}; accepted: a port number from 0 to 65535")
        return port

    def address(self, name: str, variable: str, default: str) -> str:
        value = self.text(name, variable, None)
        if value is None or not value.strip():
            return default
        _, where = self._raw(name, variable)
        problem = _unresolvable(value.strip())
        if problem:
            raise ValueError(
                f"{where} is {_shown(value)}; accepted: an address of this host"
                f" (an IP address or a name it resolves): {problem}"
            )
        return value.strip()


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """One line for each ``TRACEDPOLICY_*`` name of ``environ`` that nothing reads: a typo.

    Each names the closest known variable, if one is close.
    """
    known = [*VARIABLES, *_NOT_OPTIONS]
    lines = []
    for name in sorted(environ):
        if not name.startswith(_PREFIX) or name in known:
            continue
        import difflib  # only for a typo: not at every process's start

        suffixes = [known_name[len(_PREFIX) :] for known_name in VARIABLES]  # the prefix alike
        close = difflib.get_close_matches(name[len(_PREFIX) :], suffixes, n=1, cutoff=0.6)
        hint = (
            f"; did you mean {_PREFIX}{close[0]}?" if close else f"; known: {', '.join(VARIABLES)}"
        )
        lines.append(f"tracedpolicy: unknown environment variable {name} is ignored{hint}")
    return lines


def warn_of_unknown_variables() -> None:
    """Log each unknown ``TRACEDPOLICY_*`` variable once per process (on ``tracedpolicy``).

    Called as the variables are first applied. Not in the processes ``run`` starts: the
    launcher has printed the lines already.
    """
    global _warned_unknown
    if _warned_unknown or os.environ.get("TRACEDPOLICY_BOOTSTRAP"):
        return
    _warned_unknown = True
    for line in unknown_variables(os.environ):
        logging.getLogger("tracedpolicy").warning("%s", line)


def _whole_number(value: Any, maximum: int) -> int | None:
    """``value`` as a whole number from 0 to ``maximum``, or None.

    Text must be ASCII digits ("²" is a digit to ``str.isdigit`` but not to ``int``), and no
    longer than the maximum's own digits (``int`` refuses thousands of digits on 3.11+).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (
        isinstance(value, str)
        and value.isascii()
        and value.isdigit()
        and len(value.lstrip("0")) <= len(str(maximum))
    ):
        number = int(value)
    else:
        return None
    return number if 0 <= number <= maximum else None


def _shown(value: Any) -> str:
    """A value as an error message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


@functools.lru_cache(maxsize=16)
def _unresolvable(address: str) -> str:
    """Why ``address`` cannot be bound, or "" if it can be looked up."""
    try:
        socket.getaddrinfo(address, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        return str(error) or type(error).__name__
    return ""
