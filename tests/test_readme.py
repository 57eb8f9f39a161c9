"""The README's excerpts are what the code prints: they cannot go stale silently.

Each excerpt that shows output (the ten-line example, the options table, the demo walkthrough,
the pytest plugin's report) is produced again here and compared, numbers that change from run
to run (ports, ids, ages, counts) aside.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import tracedpolicy
from tracedpolicy import options as options_module
from tracedpolicy.options import Options

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DEMO = ROOT / "tracedpolicy" / "demo.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the excerpts are Unix output")


def section(title: str) -> str:
    """The README's text from heading ``title`` to the next heading of any level."""
    start = README.index(f"{title}\n")
    following = re.search(r"^#{2,4} ", README[start + len(title) + 1 :], re.MULTILINE)
    end = start + len(title) + 1 + following.start() if following else len(README)
    return README[start:end]


def blocks(text: str, language: str = "") -> list[str]:
    """The fenced code blocks of ``text`` of one language ("" for plain ones)."""
    found: list[str] = []
    current: list[str] | None = None
    kind = ""
    for line in text.splitlines():
        if current is None and line.startswith("```"):
            current, kind = [], line[3:].strip()
        elif current is not None and line.strip() == "```":
            if kind == language:
                found.append("\n".join(current) + "\n")
            current = None
        elif current is not None:
            current.append(line)
    return found


def normalized(line: str) -> str:
    """A line with what changes from run to run replaced: paths, ports, ids, ages, counts."""
    line = re.sub(r"\S*/tracedpolicy/", "…/tracedpolicy/", line.rstrip("\n"))
    line = re.sub(r"\S*/bin/python\S*", "PYTHON", line)
    line = re.sub(r"127\.0\.0\.1:\d+", "LOOPBACK:PORT", line)
    line = re.sub(r"#\d+", "#N", line)
    line = re.sub(r"\d+\.\d+s", "T", line)
    return re.sub(r"(?<!\.py:)\b\d+\b", "N", line)  # line numbers stay: they are the point


def test_the_ten_line_example_prints_what_its_comment_says() -> None:
    (code,) = blocks(section("## In ten lines"), "python")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    printed = ast.literal_eval(done.stdout.strip())
    comment = code[code.index("print(tracedpolicy.snapshot())") :].split("\n", 1)
    label = re.search(r"\{'([^']+)'", comment[0])
    assert label is not None and label.group(1) in printed
    shown = dict(re.findall(r"'([a-z_.]+)': (\d+)", "".join(comment)))
    assert shown and {k: printed[label.group(1)][k] for k in shown} == {
        k: int(v) for k, v in shown.items()
    }


def _shown_default(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    return f"`{value}`"


def test_the_options_table_is_the_options_as_the_code_has_them() -> None:
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section("### Options").splitlines()
        if line.startswith("| `")
    ]
    defaults = Options()
    # None that the table says in words: the registry prometheus_client keeps.
    said_in_words = {"prometheus_registry": "`prometheus_client.REGISTRY`"}
    documented = set()
    for names, variable, default, _meaning in rows:
        for name in re.findall(r"`(\w+)`", names):
            documented.add(name)
            value = getattr(defaults, name)
            if name in said_in_words:
                assert default == said_in_words[name] and value is None
            elif default.startswith("`") or default in ("on", "off", "none"):
                assert default == _shown_default(value), name
            expected = f"TRACEDPOLICY_{name.upper()}"
            if variable:
                assert variable == f"`{expected}`" and getattr(options_module, expected) == expected
            else:
                assert not hasattr(options_module, expected), name
    assert documented == {field.name for field in dataclasses.fields(Options)}


def test_the_demo_walkthrough_is_what_the_demo_prints(tmp_path: Path) -> None:
    text = section("## Finding a loop leak")
    started, curled, reported = blocks(text)
    demo = subprocess.Popen(
        [sys.executable, "-m", "tracedpolicy", "demo", "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines = [demo.stdout.readline(), demo.stdout.readline()]
        url = lines[0].split()[3].rsplit("/", 1)[0]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{url}/metrics", timeout=10) as reply:
                metrics = reply.read().decode()
            if re.search(r'origin="policy",reason="gc_unclosed"\} [1-9]', metrics):
                break  # both kinds of leak happened once: the walkthrough's state
            time.sleep(0.2)  # polling for the demo's first leaks, under a deadline
        report = subprocess.run(
            [sys.executable, "-m", "tracedpolicy", "report", url],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        lines.append(demo.stdout.readline())
    finally:
        demo.send_signal(signal.SIGINT)
        out, err = demo.communicate(timeout=30)
    printed = {normalized(line) for line in [*lines, *out.splitlines(), *err.splitlines()]}
    for line in started.splitlines()[1:]:
        assert normalized(line) in printed, line
    metric_lines = {normalized(line) for line in metrics.splitlines()}
    for line in curled.splitlines()[1:]:
        assert normalized(line) in metric_lines, line
    report_lines = {normalized(line) for line in report.splitlines()}
    for line in reported.splitlines()[1:5]:  # the site, class and origin; threads vary
        assert normalized(line) in report_lines, (line, report)
    for number, function in re.findall(r"demo\.py:(\d+) in (\w+)", text):
        source = DEMO.read_text().splitlines()[int(number) - 1]
        assert re.search(r"new_event_loop\(\)|factory\(\)", source), (number, source)
        assert any(
            isinstance(node, ast.FunctionDef)
            and node.name == function
            and node.lineno <= int(number) <= (node.end_lineno or 0)
            for node in ast.walk(ast.parse(DEMO.read_text()))
        ), (number, function)


def test_the_plugin_excerpt_is_what_pytest_prints(pytester: pytest.Pytester) -> None:
    text = section("### In tests: the pytest plugin")
    (test_file,) = blocks(text, "python")
    (shown,) = blocks(text)
    pytester.makepyfile(test_leaks=test_file)
    result = pytester.runpytest_subprocess(
        "--loop-leaks", "test_leaks.py", "-W", "ignore::ResourceWarning"
    )
    printed = {normalized(line.strip()) for line in result.stdout.lines}
    for line in shown.splitlines()[1:]:
        line = line.strip()
        if line.startswith("____"):
            line = line.strip("_ ")
            assert any(line in out for out in result.stdout.lines), line
        else:
            assert normalized(line) in printed, line
    assert os.sep not in shown.splitlines()[-1].split(" made at ")[1].split(":")[0]


def test_the_api_table_names_every_public_name() -> None:
    table = section("## The API")
    missing = [name for name in tracedpolicy.__all__ if f"`{name}" not in table]
    assert missing == [] or set(missing) <= set(tracedpolicy.hierarchy.CLASSES), missing


def test_the_troubleshooting_messages_are_the_codes_own_wording() -> None:
    """Each message's fixed words (up to its first value) are in tracedpolicy's source."""
    source = "\n".join(path.read_text() for path in (ROOT / "tracedpolicy").rglob("*.py")).replace(
        "\n", " "
    )
    source = re.sub(r'"\s+f?"', "", source)  # implicitly joined string literals, joined
    messages = re.findall(r"^- `([^`]+)`", section("## Troubleshooting"), re.MULTILINE)
    assert len(messages) >= 8
    for message in messages:
        if message.startswith("error: argument"):
            continue  # argparse's own words (pytest's parser); test_pytest_plugin runs it
        words = re.split(r"'|\d|TRACEDPOLICY_|uvloop|http|<", message)[0]
        words = words.removeprefix("tracedpolicy: ").removeprefix("RuntimeError: ")
        words = words.removeprefix("TypeError: ").removeprefix("error: ")
        assert words.strip() and words.strip()[:25] in source, message
