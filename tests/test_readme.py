"""The README's excerpts are what the code prints: they cannot go stale silently.

Each excerpt that shows output (the ten-line example, the options table, the demo walkthrough,
the pytest plugin's report) is produced again here and compared, numbers that change from run
to run (ports, ids, ages, counts) aside.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest

import tracedpolicy
from tracedpolicy.base import options as options_module
from tracedpolicy.base.options import Options

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
DEMO = ROOT / "tracedpolicy" / "entry" / "demo.py"

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
    # And the excerpt leaves out no line the command prints (its series; values vary), but a
    # loop asyncio.run is making at that moment (open for a moment, on 3.12+).
    command = re.search(r"grep -E '([^']+)'", curled.splitlines()[0])
    assert command is not None
    printed_series = {
        line.rsplit(" ", 1)[0]
        for line in metrics.splitlines()
        if re.search(command.group(1), line) and not line.endswith(" 0.0")
    }
    shown_series = {line.rsplit(" ", 1)[0] for line in curled.splitlines()[1:]}
    transient = {s for s in printed_series if 'creator="demo.loop_factory"' in s}
    assert printed_series - transient == shown_series
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
    for pinned in ("tracedpolicy demo: cannot serve", "unknown environment variable"):
        assert any(pinned in message for message in messages), pinned
    for message in messages:
        if message.startswith("error: argument"):
            continue  # argparse's own words (pytest's parser); test_pytest_plugin runs it
        words = re.split(r"'|\d|TRACEDPOLICY_|uvloop|http|<", message)[0]
        words = words.removeprefix("tracedpolicy: ").removeprefix("RuntimeError: ")
        words = words.removeprefix("TypeError: ").removeprefix("error: ")
        assert words.strip() and words.strip()[:25] in source, message


RECIPE = "## Watch a uvicorn (or gunicorn, hypercorn, aiohttp) service"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape_until(
    url: str, ready: Callable[[str], bool], process: subprocess.Popen[str], seconds: float = 60
) -> str:
    """Scrape ``url`` until ``ready(text)`` says yes (the server needs a moment to start)."""
    deadline = time.monotonic() + seconds
    text = ""
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=10) as reply:
                text = str(reply.read().decode())
            if ready(text):
                return text
        except OSError:
            pass  # not listening yet
        time.sleep(0.2)  # polling a condition under a deadline
    raise AssertionError(f"{url} never got ready; last scrape: {text[-2000:]}")


def start(command: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a server in a session of its own (what :func:`stop` ends), its output kept."""
    return subprocess.Popen(
        command,
        start_new_session=True,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop the server and the shell that may have started it (a session of their own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.communicate(timeout=30)


def shown_series(line: str) -> tuple[str, str]:
    """A metrics line's name and its labels, its value aside."""
    series = line.rsplit(" ", 1)[0]
    name, _, labels = series.partition("{")
    return name, labels


def test_a_newcomer_following_the_recipe_sees_the_servers_loop_and_its_health(
    tmp_path: Path,
) -> None:
    """The recipe's command, exactly as written (its port aside), in a shell, on its app."""
    pytest.importorskip("uvicorn")
    text = section(RECIPE)
    (application,) = blocks(text, "python")
    (tmp_path / "app.py").write_text(application)
    command = blocks(text, "sh")[0].strip()
    assert command.count("9464") == 1 and "run -m uvicorn app:app" in command
    metrics_port, app_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "UVICORN_PORT": str(app_port),  # uvicorn's own variable: the command stays as written
    }
    server = start(["sh", "-c", command.replace("9464", str(metrics_port))], tmp_path, env)
    ready = (
        r"^asyncio_eventloop_delay_seconds_count\{.*\} [1-9]",
        r"^asyncio_loop_open\{.*\} 1\.0$",
    )
    try:
        metrics = scrape_until(
            f"http://127.0.0.1:{metrics_port}/metrics",
            lambda page: all(re.search(pattern, page, re.M) for pattern in ready),
            server,
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{app_port}/", timeout=10) as reply:
            assert reply.read() == b"hello"  # the server serves, traced
    finally:
        _, err = stop(server)
    (curled,) = [block for block in blocks(text) if block.startswith("$ curl")]
    pattern = re.search(r"grep -E '([^']+)'", curled)
    assert pattern is not None and f":{9464}/metrics" in curled
    scraped = [line for line in metrics.splitlines() if re.search(pattern.group(1), line)]
    shown = curled.splitlines()[1:]
    assert {shown_series(line)[0] for line in scraped} == {shown_series(line)[0] for line in shown}
    uvloop_here = sys.version_info >= (3, 11) and "uvloop.Loop" in metrics
    if uvloop_here:  # the README's excerpt is uvicorn with uvloop on 3.11+: the same labels
        assert {shown_series(line) for line in scraped} == {shown_series(line) for line in shown}
    assert f"tracedpolicy: metrics on http://127.0.0.1:{metrics_port}/metrics" in err, err


PROMETHEUS_APP = """
from prometheus_client import make_asgi_app

app = make_asgi_app()  # the application's own /metrics, on prometheus_client's registry
"""


def test_an_app_serving_prometheus_clients_registry_gets_the_metrics_for_free(
    tmp_path: Path,
) -> None:
    pytest.importorskip("uvicorn")
    assert "gets these metrics on its own `/metrics`, for free" in section(RECIPE)
    (tmp_path / "app.py").write_text(PROMETHEUS_APP)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACEDPOLICY_")}
    command = ["-m", "tracedpolicy", "run", "-m", "uvicorn", "app:app", "--port", str(port)]
    server = start([sys.executable, *command], tmp_path, env)
    try:
        scrape_until(
            f"http://127.0.0.1:{port}/metrics",
            lambda page: re.search(r"^asyncio_loop_open\{.*\} 1\.0$", page, re.M) is not None,
            server,
        )
    finally:
        stop(server)


def test_the_recipes_variables_are_the_ones_the_code_reads() -> None:
    text = section(RECIPE)
    named = re.findall(r"^\| `([A-Z_]+)=", text, re.MULTILINE)
    assert named[:2] == ["TRACEDPOLICY_METRICS_PORT", "TRACEDPOLICY_HEALTH"]
    for name in named:
        assert name in options_module.VARIABLES or name == "PROMETHEUS_MULTIPROC_DIR", name
    help_text = subprocess.run(
        [sys.executable, "-m", "tracedpolicy", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert all(name in help_text for name in named)
    assert README.index(RECIPE) < README.index("## Two commands") < README.index("## The API")
