"""Command line: ``python -m tracedpolicy demo``."""

from __future__ import annotations

import argparse
import sys

from tracedpolicy import demo


def _positive(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tracedpolicy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="run a small workload under a traced policy")
    demo_parser.add_argument("--threads", type=_positive, default=4, help="worker threads")
    demo_parser.add_argument("--rounds", type=_positive, default=5, help="loops per worker")
    args = parser.parse_args(argv)
    return demo.main(threads=args.threads, rounds=args.rounds)


if __name__ == "__main__":
    sys.exit(main())
