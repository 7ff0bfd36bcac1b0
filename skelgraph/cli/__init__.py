"""The ``skelgraph`` command line: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: subcommand name -> module under ``skelgraph.cli`` (imported lazily so ``--help`` stays fast)
COMMANDS: dict[str, str] = {
    "info": "info",
    "convert": "convert",
    "train": "train",
    "test": "test",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skelgraph",
        description="Skeleton-based action recognition and motion forecasting with PyTorch Geometric.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        importlib.import_module(f"skelgraph.cli.{module}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
