"""Command line: ``python -m tracedpolicy demo`` (the live-metrics demo) and ``run``.

``python -m tracedpolicy run app.py ARGS`` (or ``run -m package``) turns on the whole-process
mode (:func:`tracedpolicy.instrument`), configured by the ``TRACEDPOLICY_*`` variables, and runs
the program unchanged.
``python -m tracedpolicy report http://127.0.0.1:PORT`` prints a running process's open loops.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tracedpolicy import bootstrap
from tracedpolicy.options import Options


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

    The program replaces this process (see :mod:`tracedpolicy.bootstrap`): a script that does
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
    bootstrap.run(target, arguments, as_module)


def print_remote_report(url: str) -> int:
    """Fetch and print the ``/loops`` page of a process serving tracedpolicy's metrics."""
    import urllib.parse
    import urllib.request

    from tracedpolicy.loops import printable

    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        print(f"tracedpolicy report: expected an http URL, got {url!r}", file=sys.stderr)
        return 2
    target = urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/loops", "", ""))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracedpolicy", description=__doc__.replace("``", ""))
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="a workload under a traced policy, with live metrics on loopback"
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
    run = commands.add_parser(
        "run",
        help="run a Python program with every event loop traced (zero-code; see TRACEDPOLICY_*)",
    )
    run.add_argument("-m", dest="module", action="store_true", help="run a module, as python -m")
    run.add_argument("target", nargs="?", help="the script (or, with -m, the module) to run")
    run.add_argument("arguments", nargs=argparse.REMAINDER, help="its arguments, if any")
    report = commands.add_parser(
        "report", help="print the open-loop report of a running process (its /loops page)"
    )
    report.add_argument("url", help="the metrics server, e.g. http://127.0.0.1:9464")
    args = parser.parse_args(argv)
    if args.command == "run" and args.target is None:
        run.error("the following argument is required: target (a script, or -m and a module)")
    try:  # a bad TRACEDPOLICY_* variable: its message, on one line, before anything starts
        Options.parse(f"python -m tracedpolicy {args.command}", {})
    except (TypeError, ValueError) as error:
        print(f"tracedpolicy: {error}", file=sys.stderr)
        return 2
    if args.command == "report":
        return print_remote_report(args.url)
    if args.command == "run":
        return run_program(args.target, args.arguments, as_module=args.module)
    from tracedpolicy import demo  # run needs none of it (nor asyncio): it starts the program

    return demo.main(
        port=args.port,
        addr=args.addr,
        threads=args.threads,
        interval=args.interval,
        seconds=args.seconds,
        workers=args.workers,
    )


if __name__ == "__main__":
    sys.exit(main())
