"""Options and TRACEDPOLICY_* variables: keywords win, bad values are named at install time."""

from __future__ import annotations

import logging
import os
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy
from tracedpolicy.base._compat import RUNNING
from tracedpolicy.base.options import Options

from ..processes import run_python


def test_defaults_are_production_safe() -> None:
    options = Options.parse("test", {}, environ={})
    assert options.spans is True
    assert options.get_spans == "off" and options.hit_span_rate == 0.0
    assert options.metrics_port is None and options.metrics_addr == "127.0.0.1"
    assert options.prometheus is True


def test_environment_variables_configure_and_keywords_win() -> None:
    environ = {
        "TRACEDPOLICY_SPANS": "off",
        "TRACEDPOLICY_GET_SPANS": "Sampled",
        "TRACEDPOLICY_GET_SPAN_SAMPLE_RATE": "0.5",
        "TRACEDPOLICY_PROMETHEUS": "no",
        "TRACEDPOLICY_METRICS_PORT": "9464",
        "TRACEDPOLICY_METRICS_ADDR": "0.0.0.0",
    }
    options = Options.parse("test", {}, environ=environ)
    assert (options.spans, options.get_spans, options.hit_span_rate) == (False, "sampled", 0.5)
    assert (options.prometheus, options.metrics_port, options.metrics_addr) == (
        False,
        9464,
        "0.0.0.0",
    )
    options = Options.parse("test", {"get_spans": "all", "metrics_port": 0}, environ=environ)
    assert (options.get_spans, options.hit_span_rate, options.metrics_port) == ("all", 1.0, 0)


@pytest.mark.parametrize(
    ("given", "environ", "error", "message"),
    [
        (
            {"get_spans": "sometimes"},
            {},
            ValueError,
            "install(): option get_spans is 'sometimes'; accepted: off, sampled, all",
        ),
        (
            {},
            {"TRACEDPOLICY_METRICS_PORT": "http"},
            ValueError,
            "environment variable TRACEDPOLICY_METRICS_PORT is 'http'; "
            "accepted: a port number from 0 to 65535",
        ),
        (
            {"metrics_port": 70000},
            {},
            ValueError,
            "install(): option metrics_port is 70000; accepted: a port number from 0 to 65535",
        ),
        (
            {"get_span_sample_rate": -0.1},
            {},
            ValueError,
            "install(): option get_span_sample_rate is -0.1; accepted: a number from 0 to 1",
        ),
        (
            {},
            {"TRACEDPOLICY_GET_SPAN_SAMPLE_RATE": "lots"},
            ValueError,
            "environment variable TRACEDPOLICY_GET_SPAN_SAMPLE_RATE is 'lots'; "
            "accepted: a number from 0 to 1",
        ),
        (
            {},
            {"TRACEDPOLICY_SPANS": "maybe"},
            ValueError,
            "environment variable TRACEDPOLICY_SPANS is 'maybe'; "
            "accepted: true/false, on/off, 1/0, yes/no",
        ),
        ({"label": 7}, {}, TypeError, "install(): option label must be a str, not 'int'"),
        (
            {"colour": "blue"},
            {},
            TypeError,
            "install() got an unexpected keyword argument 'colour'; accepted: label, spans,",
        ),
    ],
)
def test_install_rejects_a_bad_value_naming_it_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    given: dict[str, Any],
    environ: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    before = RUNNING.get_policy()  # type: ignore[misc]
    with pytest.raises(error) as raised:
        tracedpolicy.install(**given)
    assert message in str(raised.value)
    assert RUNNING.get_policy() is before  # type: ignore[misc]
    assert tracedpolicy.installed() is None


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("TRACEDPOLICY_METRICS_PORT", "²", "'²'"),  # a digit to str.isdigit, not to int
        ("TRACEDPOLICY_METRICS_PORT", "9" * 5000, "'" + "9" * 36 + "..."),
        ("TRACEDPOLICY_CREATION_STACK", "٣", "'٣'"),
    ],
)
def test_odd_digits_and_huge_numbers_get_the_options_own_message(
    variable: str, value: str, shown: str
) -> None:
    with pytest.raises(ValueError) as error:
        Options.parse("tests", {}, {variable: value})
    assert str(error.value).startswith(f"environment variable {variable} is {shown}; accepted:")
    assert len(str(error.value)) < 200


def test_an_address_that_cannot_be_resolved_is_refused_when_the_options_are_read() -> None:
    with pytest.raises(ValueError, match=r"option metrics_addr is 'no-such-host\.invalid'"):
        Options.parse("tests", {"metrics_addr": "no-such-host.invalid"})


def test_options_given_to_an_already_traced_policy_are_checked_too() -> None:
    traced = TracedEventLoopPolicy(RUNNING.default_policy())  # type: ignore[misc]
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        TracedEventLoopPolicy(traced, bogus=1)


def test_a_server_beyond_loopback_is_allowed_and_said_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracedpolicy.exporters import prometheus

    monkeypatch.setattr(prometheus, "_warned_reachable", False)  # as in a fresh process
    try:
        with caplog.at_level(logging.WARNING, logger="tracedpolicy"):
            first = prometheus.serve(0, "0.0.0.0", CollectorRegistry())
            second = prometheus.serve(0, "0.0.0.0", CollectorRegistry())
        assert first is not None and second is not None
    finally:
        prometheus.shutdown_servers()
    said = [r.getMessage() for r in caplog.records if "beyond this host" in r.getMessage()]
    assert len(said) == 1 and "0.0.0.0" in said[0]


def test_a_misspelt_variable_is_named_with_the_closest_known_one() -> None:
    from tracedpolicy.base.options import VARIABLES, unknown_variables

    environ = {name: "1" for name in VARIABLES}
    environ.update(TRACEDPOLICY_BOOTSTRAP="main", TRACEDPOLICY_REQUIRE_PROMTOOL="1", PATH="/")
    assert unknown_variables(environ) == []
    environ.update(TRACEDPOLICY_HELTH="1", TRACEDPOLICY_METRIC_PORT="9464", TRACEDPOLICY_ZZZ="")
    lines = unknown_variables(environ)
    assert lines[:2] == [
        "tracedpolicy: unknown environment variable TRACEDPOLICY_HELTH is ignored;"
        " did you mean TRACEDPOLICY_HEALTH?",
        "tracedpolicy: unknown environment variable TRACEDPOLICY_METRIC_PORT is ignored;"
        " did you mean TRACEDPOLICY_METRICS_PORT?",
    ]
    assert lines[2].startswith(
        "tracedpolicy: unknown environment variable TRACEDPOLICY_ZZZ is ignored; known: "
    )


def test_in_code_a_misspelt_variable_is_logged_once_when_the_variables_are_read() -> None:

    code = (
        "import tracedpolicy\nprint('imported', flush=True)\n"
        "tracedpolicy.install()\ntracedpolicy.loop_factory()\ntracedpolicy.instrument()\n"
    )
    done = run_python(code, env={**os.environ, "TRACEDPOLICY_HELTH": "1"})
    assert (done.returncode, done.stdout) == (0, "imported\n")
    assert done.stderr == (
        "tracedpolicy: unknown environment variable TRACEDPOLICY_HELTH is ignored;"
        " did you mean TRACEDPOLICY_HEALTH?\n"
    )


def test_instruments_error_for_an_unknown_option_lists_only_what_it_takes() -> None:
    with pytest.raises(TypeError) as raised:
        tracedpolicy.instrument(bogus=1)
    message = str(raised.value)
    assert message.startswith("instrument() got an unexpected keyword argument 'bogus'; accepted:")
    assert "label" not in message and "metrics_port" in message
