"""The installed distribution: version, entry points and type information resolve."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

import tracedpolicy


def entry_points(group: str) -> dict[str, importlib.metadata.EntryPoint]:
    found = importlib.metadata.distribution("tracedpolicy").entry_points
    return {ep.name: ep for ep in found if ep.group == group}


def test_the_version_is_the_distributions() -> None:
    assert importlib.metadata.version("tracedpolicy") == tracedpolicy.__version__


def test_the_pytest_plugin_and_the_command_resolve() -> None:
    assert entry_points("pytest11")["tracedpolicy"].load() is tracedpolicy.pytest_plugin
    main = entry_points("console_scripts")["tracedpolicy"].load()
    assert main is tracedpolicy.__main__.main


def test_the_package_says_it_is_typed() -> None:
    assert (Path(tracedpolicy.__file__).parent / "py.typed").is_file()


def test_all_names_what_the_package_exports() -> None:
    assert sorted(tracedpolicy.__all__) == sorted(set(tracedpolicy.__all__))
    for name in tracedpolicy.__all__:
        assert getattr(tracedpolicy, name) is not None


def test_the_instrumentor_is_registered_for_opentelemetry_instrument() -> None:
    from tracedpolicy.entry.instrumentor import TracedPolicyInstrumentor

    loaded = entry_points("opentelemetry_instrumentor")["tracedpolicy"].load()
    assert loaded is TracedPolicyInstrumentor


def test_the_wheel_builds_without_warnings_with_an_spdx_license_and_the_bootstrap(
    tmp_path: Path,
) -> None:
    root = Path(__file__).parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(root)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "Deprecat" not in done.stdout + done.stderr
    (wheel,) = tmp_path.glob("tracedpolicy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "tracedpolicy/entry/_bootstrap/sitecustomize.py" in names
    assert "License-Expression: MIT" in metadata.splitlines()
