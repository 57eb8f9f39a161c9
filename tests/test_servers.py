"""Real servers, run unchanged in a subprocess, under the whole-process mode.

uvicorn (``--loop asyncio`` and ``--loop uvloop``) and aiohttp's ``web.run_app``, each started by
``python -m tracedpolicy run`` and by ``opentelemetry-instrument``: while the server answers a
request, a scrape of tracedpolicy's metrics server shows the server's loop created and open,
with its origin; after SIGINT, the tally printed at exit says it was closed and nothing leaked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .asgi import asgi_app

BIN = Path(sys.executable).parent
NEW_RUNNER = sys.version_info >= (3, 11)  # uvicorn and uvloop.run use asyncio.Runner from 3.11

ASGI_APP = asgi_app(
    """
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})
    """
)

AIOHTTP_APP = """
import sys
from aiohttp import web

async def hello(request):
    return web.Response(text="hello")

app = web.Application()
app.router.add_get("/", hello)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str = "/") -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as reply:
            return str(reply.read().decode())

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def wait_until_serving(self, seconds: float = 60.0) -> None:
        """Poll the server until it answers; fail with its output if it exits or never does."""
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited ({self.process.returncode}):\n{self.output()}")
            with contextlib.suppress(OSError):
                if self.get() == "hello":
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer in {seconds}s:\n{self.output()}")
            time.sleep(0.05)

    def interrupt(self) -> str:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        return self.output()


@contextlib.contextmanager
def serve(command: list[str], cwd: Path, port: int, env: dict[str, str]) -> Iterator[Served]:
    metrics_port = free_port()
    log = cwd / "server.log"
    environment = {
        **os.environ,
        "PYTHONPATH": str(cwd),
        "TRACEDPOLICY_METRICS_PORT": str(metrics_port),
        "TRACEDPOLICY_REPORT_AT_EXIT": "1",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        **env,
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=cwd, env=environment, stdout=sink, stderr=subprocess.STDOUT
        )
    served = Served(process, port, metrics_port, log)
    try:
        yield served
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


#: Each server: how to start it (with its port), and the origin and creator of its loop.
SERVERS: dict[str, tuple[Callable[[int], list[str]], tuple[str, str]]] = {
    "uvicorn --loop asyncio": (
        lambda port: ["-m", "uvicorn", "app:app", "--port", str(port), "--loop", "asyncio"],
        ("loop_factory", "asyncio.unix_events._UnixSelectorEventLoop")
        if NEW_RUNNER
        else ("constructor", "asyncio.unix_events._UnixSelectorEventLoop"),
    ),
    "uvicorn --loop uvloop": (
        lambda port: ["-m", "uvicorn", "app:app", "--port", str(port), "--loop", "uvloop"],
        ("loop_factory", "uvloop.new_event_loop") if NEW_RUNNER else ("constructor", "uvloop.Loop"),
    ),
    "aiohttp web.run_app": (
        lambda port: ["aiohttp_app.py", str(port)],
        ("policy", "asyncio.unix_events._UnixDefaultEventLoopPolicy"),
    ),
}


def command_for(launcher: str, arguments: list[str]) -> list[str]:
    """The command line of ``arguments`` (a ``python`` command line) under ``launcher``."""
    if launcher == "run":
        if arguments[0] == "-m":
            return [sys.executable, "-m", "tracedpolicy", "run", *arguments]
        return [sys.executable, "-m", "tracedpolicy", "run", *arguments]
    instrument = str(BIN / "opentelemetry-instrument")
    if arguments[:2] == ["-m", "uvicorn"]:
        return [instrument, str(BIN / "uvicorn"), *arguments[2:]]  # as users type it
    return [instrument, sys.executable, *arguments]


@pytest.fixture
def apps(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(ASGI_APP)
    (tmp_path / "aiohttp_app.py").write_text(AIOHTTP_APP)
    return tmp_path


@pytest.mark.parametrize("launcher", ["run", "opentelemetry-instrument"])
@pytest.mark.parametrize("server", SERVERS)
def test_a_real_servers_loop_is_seen_while_it_serves_and_closed_after_sigint(
    server: str, launcher: str, apps: Path
) -> None:
    if "uvloop" in server:
        pytest.importorskip("uvloop")
    arguments, (origin, creator) = SERVERS[server]
    port = free_port()
    with serve(command_for(launcher, arguments(port)), apps, port, {}) as served:
        served.wait_until_serving()
        samples = served.scrape()
        output = served.interrupt()
    loop_classes = {
        dict(labels)["loop_class"]
        for (name, labels), value in samples.items()
        if name == "asyncio_loop_created_total" and value
    }
    assert len(loop_classes) == 1, samples
    labels = (("creator", creator), ("loop_class", loop_classes.pop()), ("origin", origin))
    assert samples[("asyncio_loop_created_total", labels)] == 1, output
    assert samples[("asyncio_loop_open", labels)] == 1
    created = sum(v for (n, _), v in samples.items() if n == "asyncio_loop_created_total")
    assert created == 1, samples  # one loop, counted once whatever layers saw it
    assert served.process.returncode == 0, output
    assert "tracedpolicy at exit: 1 event loop made, 1 closed, 0 leaked\n" in output, output
    assert "event loop leaked" not in output


def test_the_launcher_honours_disabled_instrumentations(apps: Path) -> None:
    script = apps / "which.py"
    script.write_text("import tracedpolicy; print(tracedpolicy.instrumented())")
    command = [str(BIN / "opentelemetry-instrument"), sys.executable, str(script)]
    results = []
    for disabled in ("", "tracedpolicy"):
        env = {**os.environ, "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled}
        # Every exporter off, logs too: with opentelemetry-distro installed, its default OTLP
        # logs exporter would make the launcher fail whatever tracedpolicy does.
        env.update(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none")
        env.update(OTEL_LOGS_EXPORTER="none")
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        results.append(done.stdout.strip())
    assert results == ["True", "False"]


LEAKING_APP = """
import asyncio, warnings
warnings.simplefilter("ignore", DeprecationWarning)
{setup}
kept = asyncio.new_event_loop()  # never closed: the leak
asyncio.run(asyncio.sleep(0))
"""

SETUPS = {
    "uvloop.install()": "import uvloop\nuvloop.install()",
    "set_event_loop_policy": "asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())",
}


@pytest.mark.parametrize("setup", SETUPS)
def test_an_app_that_replaces_the_policy_gets_its_leak_reported_at_its_own_line(
    setup: str, tmp_path: Path
) -> None:
    if "uvloop" in setup:
        pytest.importorskip("uvloop")
    code = textwrap.dedent(LEAKING_APP).format(setup=SETUPS[setup])
    script = tmp_path / "leaky.py"
    script.write_text(code)
    leak_line = code.splitlines().index("kept = asyncio.new_event_loop()  # never closed: the leak")
    done = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-m", "tracedpolicy", "run", str(script)],
        capture_output=True,
        text=True,
        env={**os.environ, "TRACEDPOLICY_REPORT_AT_EXIT": "1"},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "tracedpolicy: 1 open event loop from 1 creation site" in done.stderr, done.stderr
    assert f"{script}:{leak_line + 1} in <module>" in done.stderr
    assert "tracedpolicy at exit: 2 event loops made, 1 closed, 1 leaked (1 open at exit)" in (
        done.stderr
    )
