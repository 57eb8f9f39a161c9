"""Command line: ``python -m tracedpolicy demo`` (the live-metrics demo)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tracedpolicy import demo


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracedpolicy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="a workload under a traced policy, with live metrics on loopback"
    )
    run_demo.add_argument("--port", type=_whole(0, 65535), default=0, help="0: any free port")
    run_demo.add_argument("--addr", default="127.0.0.1", help="address to bind (loopback)")
    run_demo.add_argument("--threads", type=_whole(1, 64), default=4, help="worker threads")
    run_demo.add_argument("--interval", type=_seconds, default=2.0, help="seconds per summary")
    run_demo.add_argument("--seconds", type=_seconds, default=None, help="stop after this long")
    args = parser.parse_args(argv)
    return demo.main(
        port=args.port,
        addr=args.addr,
        threads=args.threads,
        interval=args.interval,
        seconds=args.seconds,
    )


if __name__ == "__main__":
    sys.exit(main())
