"""Command line: run (a program with every event loop traced), demo, report.

python -m tracedpolicy run app.py ARGS (or run -m package ARGS) turns on the whole-process mode,
configured by the TRACEDPOLICY_* variables (run --help lists them), and runs the program
unchanged. python -m tracedpolicy demo runs the live-metrics demo. python -m tracedpolicy
report http://127.0.0.1:PORT prints a running process's open loops.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from tracedpolicy.base.options import TRACEDPOLICY_QUIET, VARIABLES, Options, unknown_variables
from tracedpolicy.entry import bootstrap

RUN_USAGE = "python -m tracedpolicy run [-m] TARGET [ARGS ...]"

RUN_EPILOG = "\n".join(
    [
        "The program's arguments are passed on exactly as given (a '--' among them included).",
        "",
        "Environment variables (a misspelt TRACEDPOLICY_* name is reported):",
        *(f"  {name:<34} {meaning}" for name, meaning in VARIABLES.items()),
        "",
        "At a terminal, run prints one line on stderr saying what is on and where to look",
        "(TRACEDPOLICY_QUIET=1 hides it); with TRACEDPOLICY_METRICS_PORT set, the program's",
        "process prints the URL it serves. PROMETHEUS_MULTIPROC_DIR merges a multi-process",
        "server's workers on that one port; OTEL_EXPORTER_OTLP_ENDPOINT exports over OTLP",
        "(pip install 'tracedpolicy[otlp]').",
    ]
)


def _whole(minimum: int, maximum: int) -> Any:
    def parse(text: str) -> int:
        value = int(text) if text.isdigit() else -1
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {minimum} to {maximum}, got {text!r}"
            )
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def run_program(target: str, arguments: list[str], as_module: bool) -> int:
    """Run ``target`` as ``python [-m] target arguments`` would, with every loop traced.

    The program replaces this process (see ``tracedpolicy.entry.bootstrap``): a script that does
    not exist, or a module that cannot be found, gets python's own message and exit code.
    Under a flag that keeps the bootstrap from starting, it refuses (2) rather than run the
    program untraced.
    """
    flag = bootstrap.unstartable_under()
    if flag is not None:
        print(
            f"tracedpolicy run: cannot trace under python {flag} (it hides PYTHONPATH or"
            " sitecustomize, which the bootstrap needs): run it without that flag",
            file=sys.stderr,
        )
        return 2
    shown = target
    if not as_module and not os.path.exists(target):
        command = _python_command(target)
        if command is not None:
            target = command  # `run uvicorn app:app`, as the shell would run it
        else:
            hint = _module_hint(target)
            if hint:
                print(hint, file=sys.stderr)
                return 2
    if not _quiet(os.environ) and sys.stderr.isatty():  # the launcher's alone: the program's
        print(banner(shown, as_module, os.environ), file=sys.stderr)  # stderr stays its own
    bootstrap.run(target, arguments, as_module)


def _python_command(name: str) -> str | None:
    """The path of the Python console script ``name`` on PATH (``uvicorn``), or None.

    The shell would run it with the interpreter of its first line; it runs with this one,
    which is the one that has tracedpolicy (``sys.argv[0]`` is its path, as the shell gives).
    """
    import shutil

    if os.sep in name or (os.altsep and os.altsep in name):
        return None
    path = shutil.which(name)
    if path is None:
        return None
    try:
        with open(path, "rb") as script:
            first = script.readline(200)
    except OSError:
        return None
    return path if first.startswith(b"#!") and b"python" in first else None


def _module_hint(target: str) -> str:
    """For a target that is no file but names an importable module: how to run it."""
    import importlib.util

    if target.endswith(".py") or not target.replace(".", "").replace("_", "").isalnum():
        return ""
    try:
        found = importlib.util.find_spec(target) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return ""
    return (
        f"tracedpolicy run: no file {target!r}, but a module of that name: run it with -m"
        f" (python -m tracedpolicy run -m {target})"
    )


def banner(target: str, as_module: bool, environ: Mapping[str, str]) -> str:
    """The one line ``run`` prints at a terminal: what is on, and where to look."""
    options = Options.parse("python -m tracedpolicy run", {}, environ=environ)
    shown = f"-m {target}" if as_module else target
    parts = [f"tracedpolicy: tracing every event loop of {shown}"]
    parts.append("loop health on" if options.health else "loop health off (TRACEDPOLICY_HEALTH=1)")
    if options.metrics_port is None:
        parts.append("no /metrics (TRACEDPOLICY_METRICS_PORT=9464 serves one)")
    else:
        port = options.metrics_port or "any free port"
        parts.append(f"/metrics and /loops on {options.metrics_addr}:{port}")
    if environ.get("PROMETHEUS_MULTIPROC_DIR"):
        parts.append("every process merged through PROMETHEUS_MULTIPROC_DIR")
    if any(key.startswith("OTEL_EXPORTER_OTLP_") and key.endswith("ENDPOINT") for key in environ):
        parts.append("OTLP export on")
    return "; ".join(parts) + f" ({TRACEDPOLICY_QUIET}=1 hides this line)"


def _quiet(environ: Mapping[str, str]) -> bool:
    return environ.get(TRACEDPOLICY_QUIET, "").strip().lower() in ("1", "true", "on", "yes")


def parse_run(parser: argparse.ArgumentParser, rest: list[str]) -> tuple[bool, str, list[str]]:
    """``run``'s own options, then the target; what follows is the program's, untouched.

    As python reads its command line: ``-m MODULE`` (or ``-mMODULE``) or a script ends the
    options, and ``--`` before the target ends them too. argparse would take a ``--`` among the
    program's arguments for its own.
    """
    for index, word in enumerate(rest):
        if word in ("-h", "--help"):
            parser.print_help()
            parser.exit(0)
        if word == "-m":
            if index + 1 == len(rest):
                parser.error("argument -m: expected a module name")
            return True, rest[index + 1], rest[index + 2 :]
        if word.startswith("-m"):
            return True, word[2:], rest[index + 1 :]
        if word == "--":
            if index + 1 == len(rest):
                break
            return False, rest[index + 1], rest[index + 2 :]
        if word.startswith("-") and word != "-":
            parser.error(f"unrecognized option {word!r} (the program's go after its name)")
        return False, word, rest[index + 1 :]
    parser.error("the following argument is required: target (a script, or -m and a module)")
    raise AssertionError("unreachable")  # parser.error exits


def report_url(given: str) -> str | None:
    """The ``/loops`` URL for what ``report`` was given (a URL, host:port or a bare port)."""
    import urllib.parse

    text = given.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    parts = urllib.parse.urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/loops", "", ""))


def print_remote_report(url: str) -> int:
    """Fetch and print the ``/loops`` page of a process serving tracedpolicy's metrics."""
    import urllib.request

    from tracedpolicy.records.sites import printable

    target = report_url(url)
    if target is None:
        print(
            f"tracedpolicy report: expected an http URL with a port (http://127.0.0.1:9464),"
            f" host:port or a port, got {url!r}",
            file=sys.stderr,
        )
        return 2
    try:
        with urllib.request.urlopen(target, timeout=10) as response:
            page = response.read().decode(errors="replace")
        # The page is the process's report; it should be escaped already, but this terminal is
        # the reader's, so nothing but its lines reaches it as it came.
        print("\n".join(printable(line) for line in page.split("\n")), end="")
    except OSError as error:
        print(f"tracedpolicy report: could not read {target}: {error}", file=sys.stderr)
        return 1
    return 0


def _parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(
        prog="python -m tracedpolicy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,demo,report}")
    run = commands.add_parser(
        "run",
        help="run a Python program with every event loop traced (zero-code; see run --help)",
        description="Run a Python program unchanged, with every event loop in it traced.",
        usage=RUN_USAGE,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("-m", dest="module", action="store_true", help="run a module, as python -m")
    run.add_argument("target", help="the script (or, with -m, the module) to run")
    run.add_argument("arguments", nargs="*", help="its arguments, passed on as given")
    run_demo = commands.add_parser(
        "demo",
        help="a workload under a traced policy, with live metrics on loopback",
        description=(
            "Worker threads make, set, hit, miss and leak event loops under a traced policy,"
            " with loop health on, while /metrics and /loops are served live (the URL is"
            " printed on start). Ctrl-C stops it."
        ),
    )
    run_demo.add_argument("--port", type=_whole(0, 65535), default=0, help="0: any free port")
    run_demo.add_argument("--addr", default="127.0.0.1", help="address to bind (loopback)")
    run_demo.add_argument("--threads", type=_whole(1, 64), default=4, help="worker threads")
    run_demo.add_argument("--interval", type=_seconds, default=2.0, help="seconds per summary")
    run_demo.add_argument("--seconds", type=_seconds, default=None, help="stop after this long")
    run_demo.add_argument(
        "--workers",
        type=_whole(0, 32),
        default=0,
        help="run the workload in this many worker processes; /metrics adds them up",
    )
    report = commands.add_parser(
        "report",
        help="print the open-loop report of a running process (its /loops page)",
        description="Print the open-loop report a process serving tracedpolicy's metrics gives.",
    )
    report.add_argument("url", help="its metrics server: http://127.0.0.1:9464, host:port or 9464")
    return parser, run


def _checked_environment(command: str) -> int:
    """0, after printing each unknown variable; 2 with the one-line error of a bad value."""
    environ = dict(os.environ)
    for line in unknown_variables(environ):
        print(line, file=sys.stderr)
    try:  # a bad TRACEDPOLICY_* variable: its message, on one line, before anything starts
        Options.parse(f"python -m tracedpolicy {command}", {}, environ=environ)
    except (TypeError, ValueError) as error:
        print(f"tracedpolicy: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser, run = _parser()
    if words[:1] == ["run"]:
        as_module, target, arguments = parse_run(run, words[1:])
        failed = _checked_environment("run")
        if failed:
            return failed
        return run_program(target, arguments, as_module=as_module)
    args = parser.parse_args(words)
    if args.command == "report":  # it reads another process: this one's variables are moot
        return print_remote_report(args.url)
    failed = _checked_environment(args.command)
    if failed:
        return failed
    if args.port and not _port_is_free(args.addr, args.port):
        return 1
    from tracedpolicy.entry import demo  # run needs none of it (nor asyncio): it starts the program

    return demo.main(
        port=args.port,
        addr=args.addr,
        threads=args.threads,
        interval=args.interval,
        seconds=args.seconds,
        workers=args.workers,
    )


def _port_is_free(addr: str, port: int) -> bool:
    """Whether the demo can serve on ``addr:port``; if not, one line saying what to do.

    The demo is only worth running with its metrics served, so a busy port stops it before
    it starts (the library's own message would say that tracing goes on).
    """
    import socket

    try:
        family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((addr, port), family=family):
            return True
    except (OSError, UnicodeError) as error:
        errno = getattr(error, "errno", None)
        reason = os.strerror(errno) if errno else str(error) or type(error).__name__
        print(
            f"tracedpolicy demo: cannot serve /metrics on {addr}:{port} ({reason}): choose a free"
            " port (--port 0: any free one)",
            file=sys.stderr,
        )
        return False
