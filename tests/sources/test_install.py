"""install() and uninstall(): idempotent, thread-safe, and exact about what they restore."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import TracedEventLoopPolicy, is_traced
from tracedpolicy.base._compat import RUNNING

get_policy: Any = RUNNING.get_policy
set_policy: Any = RUNNING.set_policy
DefaultPolicy: type = RUNNING.default_policy  # type: ignore[assignment]


def test_install_wraps_the_current_policy_and_uninstall_restores_it() -> None:
    original = DefaultPolicy()
    set_policy(original)
    policy = tracedpolicy.install()
    assert get_policy() is policy and is_traced(policy) and policy.base is original
    assert tracedpolicy.installed() is policy
    tracedpolicy.uninstall()
    assert get_policy() is original
    assert tracedpolicy.installed() is None


def test_install_and_uninstall_are_idempotent() -> None:
    original = get_policy()
    first = tracedpolicy.install()
    assert tracedpolicy.install() is first
    tracedpolicy.uninstall()
    tracedpolicy.uninstall()
    assert get_policy() is original


def test_install_with_a_base_installs_that_base_and_restores_the_first_policy() -> None:
    original = get_policy()
    tracedpolicy.install()
    other = DefaultPolicy()
    policy = tracedpolicy.install(other)
    assert policy.base is other and get_policy() is policy
    assert tracedpolicy.install(other) is policy
    tracedpolicy.uninstall()
    assert get_policy() is original


def test_install_keeps_a_policy_that_is_traced_already() -> None:
    traced_policy = tracedpolicy.TracedDefaultEventLoopPolicy()
    set_policy(traced_policy)
    assert tracedpolicy.install() is traced_policy
    wrapper = TracedEventLoopPolicy(DefaultPolicy())
    assert tracedpolicy.install(wrapper) is wrapper and get_policy() is wrapper
    tracedpolicy.uninstall()
    assert get_policy() is traced_policy


def test_uninstall_leaves_a_policy_someone_else_installed_since() -> None:
    tracedpolicy.install()
    theirs = DefaultPolicy()
    set_policy(theirs)
    tracedpolicy.uninstall()
    assert get_policy() is theirs


def test_concurrent_installs_install_one_wrapper() -> None:
    original = get_policy()
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def install() -> None:
        barrier.wait()
        results.append(tracedpolicy.install())

    threads = [threading.Thread(target=install) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(policy) for policy in results}) == 1
    assert results[0].base is original
    tracedpolicy.uninstall()
    assert get_policy() is original


@pytest.mark.parametrize("bad", ["uvloop", 3, object(), DefaultPolicy])
def test_install_rejects_a_non_policy_and_changes_nothing(bad: Any) -> None:
    before = get_policy()
    with pytest.raises(TypeError, match=r"install\(\) expects an event loop policy instance"):
        tracedpolicy.install(bad)
    assert get_policy() is before
    assert tracedpolicy.installed() is None


def test_install_rejects_an_unknown_option_and_changes_nothing() -> None:
    before = get_policy()
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'; accepted: label"):
        tracedpolicy.install(colour="blue")
    assert get_policy() is before and tracedpolicy.installed() is None


@pytest.mark.parametrize(("on", "off"), [("install", "uninstall"), ("instrument", "uninstrument")])
def test_turning_off_stops_the_metrics_server_it_started(on: str, off: str) -> None:
    import urllib.error
    import urllib.request

    getattr(tracedpolicy, on)(metrics_port=0)
    server = tracedpolicy.metrics_server()
    assert server is not None
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
    getattr(tracedpolicy, off)()
    assert tracedpolicy.metrics_server() is None
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=10)
