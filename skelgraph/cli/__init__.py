"""The ``skelgraph`` command line: one module per subcommand with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommands, each a module under ``skelgraph.cli``
COMMANDS: tuple[str, ...] = (
    "info",
    "convert",
    "extract",
    "train",
    "test",
    "recognize",
    "ensemble",
    "explain",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skelgraph",
        description="Skeleton-based action recognition and motion forecasting.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"skelgraph.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
