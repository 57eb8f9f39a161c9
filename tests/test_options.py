"""Options and TRACEDPOLICY_* variables: keywords win, bad values are named at install time."""

from __future__ import annotations

from typing import Any

import pytest

import tracedpolicy
from tracedpolicy._compat import RUNNING
from tracedpolicy.options import Options


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
