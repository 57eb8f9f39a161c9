"""The dashboards: every panel and alert query runs on a real Prometheus scraping the demo."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
DASHBOARD = json.loads((DASHBOARDS / "grafana" / "tracedpolicy.json").read_text())
RULES = yaml.safe_load((DASHBOARDS / "prometheus" / "alerts.yml").read_text())
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
REQUIRED = bool(os.environ.get("TRACEDPOLICY_REQUIRE_PROMTOOL"))
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None and not REQUIRED, reason="Debian's prometheus is not installed here"
)

#: Grafana's macros, as a query made over the last minutes would expand them.
MACROS = {
    "$__rate_interval": "30s",
    "$__range": "5m",
    '"$origin"': '".*"',
    '"$creator"': '".*"',
    '"$job"': '".*"',
    '"$instance"': '".*"',
}


def panel_queries() -> dict[str, str]:
    queries = {}
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for macro, value in MACROS.items():
                expr = expr.replace(macro, value)
            queries[f"{panel['title']} / {target['legendFormat']}"] = expr
    return queries


def test_every_query_can_be_narrowed_to_one_job_and_instance() -> None:
    """A Prometheus scraping several services: each query takes the job and instance chosen
    (the variables' own queries take those chosen before them)."""
    every: tuple[str, ...] = ("$job", "$instance")
    narrowed = {"job": (), "instance": ("$job",)}
    queries = [(t["expr"], every) for panel in DASHBOARD["panels"] for t in panel["targets"]]
    queries += [
        (v["definition"], narrowed.get(v["name"], every))
        for v in DASHBOARD["templating"]["list"]
        if v["type"] == "query"
    ]
    for expr, variables in queries:
        selectors = re.findall(r"\b(?:asyncio|tracedpolicy)_[a-z_]+(\{[^}]*\})?", expr)
        assert selectors, expr
        for variable in variables:
            label = variable.lstrip("$")
            assert all(f'{label}=~"{variable}"' in found for found in selectors), expr


def rule_queries() -> dict[str, str]:
    """Each alert's expression without its threshold: what it measures must have data."""
    return {
        rule["alert"]: rule["expr"].rsplit(" > ", 1)[0]
        for group in RULES["groups"]
        for rule in group["rules"]
    }


def test_compose_has_the_four_services_and_publishes_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"demo", "prometheus", "grafana", "jaeger"}
    ports = [port for service in services.values() for port in service.get("ports", [])]
    assert ports and all(port.startswith("127.0.0.1:") for port in ports)
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (ROOT / source).exists(), volume
    assert "python -m tracedpolicy demo" in services["demo"]["command"]


def test_every_panel_and_variable_uses_the_chosen_datasource() -> None:
    """No datasource uid written in: the dashboard imports into any Grafana, where the user
    picks their Prometheus, as Grafana's published dashboards do."""
    variables = {variable["name"]: variable for variable in DASHBOARD["templating"]["list"]}
    assert list(variables)[:3] == ["datasource", "job", "instance"]
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    chosen = {"type": "prometheus", "uid": "${datasource}"}
    assert all(panel["datasource"] == chosen for panel in DASHBOARD["panels"])
    assert all(v["datasource"] == chosen for v in variables.values() if v["type"] == "query")
    assert "prometheus" not in json.dumps(DASHBOARD).replace('"prometheus"', "")
    assert DASHBOARD["uid"] == "tracedpolicy"
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.skipif(PROMTOOL is None and not REQUIRED, reason="promtool is not installed here")
def test_prometheus_config_and_alert_rules_pass_promtool() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "config", str(DASHBOARDS / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 5 rules found" in check.stdout


@pytest.mark.skipif(PROMTOOL is None and not REQUIRED, reason="promtool is not installed here")
def test_each_alert_fires_on_trouble_and_stays_quiet_when_healthy() -> None:
    """promtool's unit tests of the rules (alerts_test.yml): one test group per alert."""
    assert PROMTOOL is not None
    tests = DASHBOARDS / "prometheus" / "alerts_test.yml"
    run = subprocess.run(
        [PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tested = {
        check["alertname"]
        for group in yaml.safe_load(tests.read_text())["tests"]
        for check in group["alert_rule_test"]
    }
    rules = yaml.safe_load((DASHBOARDS / "prometheus" / "alerts.yml").read_text())["groups"]
    assert tested == {rule["alert"] for group in rules for rule in group["rules"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


class Prometheus:
    """A real Prometheus server on loopback, scraping one target every second."""

    def __init__(self, target: str, workdir: Path) -> None:
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DASHBOARDS / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": "demo", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        assert PROMETHEUS is not None
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url[len('http://') :]}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def query(self, expr: str) -> Any:
        return get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")

    def wait_for(self, expr: str, seconds: float = 60) -> list[Any]:
        """Poll until ``expr`` has a result (the server and its scrapes need a few seconds)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                result: list[Any] = self.query(expr)["data"]["result"]
                if result:
                    return result
            except OSError:
                pass  # not listening yet
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise AssertionError(f"no result for {expr!r} within {seconds}s")
            time.sleep(0.2)  # polling a condition with a deadline, not hoping

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Prometheus]:
    demo = subprocess.Popen(
        [sys.executable, "-m", "tracedpolicy", "demo", "--port", "0", "--interval", "0.3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert demo.stdout is not None
    url = demo.stdout.readline().split()[3]
    server = Prometheus(urllib.parse.urlsplit(url).netloc, tmp_path)
    try:
        yield server
    finally:
        server.stop()
        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=30)


@needs_prometheus
def test_every_dashboard_and_alert_query_runs_and_the_panels_have_data(live: Prometheus) -> None:
    live.wait_for("count_over_time(asyncio_loop_created_total[1m]) >= 4")
    live.wait_for('sum(asyncio_loop_leaked_total{reason="thread_exit"}) > 0')
    queries = {**panel_queries(), **rule_queries()}
    answers = {name: live.query(expr) for name, expr in queries.items()}
    failed = {name: answer for name, answer in answers.items() if answer["status"] != "success"}
    assert failed == {}
    empty = sorted(name for name, answer in answers.items() if not answer["data"]["result"])
    # Only internal errors have nothing to show while tracedpolicy works; all else must.
    assert empty == ["TracedPolicyInternalErrors", "tracedpolicy internal errors / {{kind}}"]
    rules = get_json(f"{live.url}/api/v1/rules")["data"]["groups"]
    assert [(g["name"], len(g["rules"])) for g in rules] == [("tracedpolicy", 5)]
    assert all(rule["health"] == "ok" for rule in rules[0]["rules"])


COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def read_only_copy(destination: Path) -> Path:
    """The clone as the compose file mounts it (``.:/src:ro``): every file and folder read-only."""
    shutil.copytree(
        ROOT,
        destination,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info"),
    )
    for path in [destination, *destination.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    return destination


MOUNT_READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'


def as_on_a_read_only_mount(command: list[str], source: Path) -> list[str]:
    """``command`` with ``source`` read-only for it, as the container's root user sees ``/src``.

    A user who is not root cannot write the read-only copy anyway; root can write anything but
    a read-only mount, so there the command runs in a mount namespace of its own.
    """
    if os.getuid() != 0:
        return command
    wrapped = ["unshare", "-m", "sh", "-c", MOUNT_READ_ONLY, "sh", str(source)]
    probe = subprocess.run([*wrapped, "touch", str(source / "probe")], capture_output=True)
    if probe.returncode == 0 or b"Read-only file system" not in probe.stderr:
        pytest.skip(f"no read-only mount here for root: {probe.stderr.decode()[-200:]}")
    return [*wrapped, *command]


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="the container runs a POSIX shell")
def test_the_compose_demo_installs_from_a_read_only_mount_and_serves(tmp_path: Path) -> None:
    """The demo service's own command (no Docker engine here), its paths pointed at a
    read-only copy of the clone and its port at a free one on loopback, as its user (root)."""
    source = read_only_copy(tmp_path / "src")
    work = tmp_path / "work"
    work.mkdir()
    port = free_port()
    script = shlex.split(COMPOSE["services"]["demo"]["command"])
    assert script[:2] == ["sh", "-c"]
    command = re.sub(r"(/tmp)?/src\b", lambda m: str(work / "src" if m[1] else source), script[2])
    command = command.replace("9464", str(port)).replace("0.0.0.0", "127.0.0.1")
    # A Python of its own that sees this one's packages (pip, the dependencies) but not
    # tracedpolicy's checkout: what pip installs into it is what runs.
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    outer = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "outer.pth").write_text("\n".join(outer) + "\n")
    env = {
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(work),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    demo = subprocess.Popen(
        as_on_a_read_only_mount(["sh", "-c", command], source),
        cwd=source,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        report = ""
        while "demo.py" not in report and demo.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/loops", timeout=10) as page:
                    report = page.read().decode()
            except OSError:
                time.sleep(0.5)  # installing, then starting: polled under a deadline
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGINT)
        out, err = demo.communicate(timeout=60)
    assert "demo.py" in report, out + err
    # pip installed the copy (with the otlp extra's exporter) where the container's pip would.
    installed = {path.name.split("-")[0] for path in site.glob("*.dist-info")}
    assert "tracedpolicy" in installed, installed


def test_the_readme_names_every_dashboard_variable_and_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    text = readme[readme.index("## Dashboards\n") :]
    text = text[: text.index("\n## ", 1)]
    variables = [variable["name"] for variable in DASHBOARD["templating"]["list"]]
    alerts = [rule["alert"] for group in RULES["groups"] for rule in group["rules"]]
    assert [name for name in [*variables, *alerts] if f"`{name}`" not in text] == []
    assert "`policy` variable" not in text
