"""The ``skelgraph`` command line: one module per subcommand with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence

from skelgraph.allocator import keep_freed_memory

#: subcommands, each a module under ``skelgraph.cli``
COMMANDS: tuple[str, ...] = (
    "info",
    "convert",
    "extract",
    "train",
    "tune",
    "test",
    "recognize",
    "ensemble",
    "export",
    "explain",
    "serve",
)

#: commands that hand freed memory back to the system at once (glibc's default): a long-running
#: service whose heap would otherwise stay at the peak of its largest uploads; every other
#: command keeps it for its next tensors (:func:`skelgraph.allocator.keep_freed_memory`)
RETURNS_FREED_MEMORY = ("serve",)


def build_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser of the given subcommands (default: all of them)."""
    parser = argparse.ArgumentParser(
        prog="skelgraph",
        description="Skeleton-based action recognition and motion forecasting.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in commands:
        importlib.import_module(f"skelgraph.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # PyG compiles a helper with torch.jit.script when it is imported, which torch now warns
    # about on every command: nothing a user of the command line can act on
    warnings.filterwarnings(
        "ignore", message="`torch.jit.script` is deprecated", category=FutureWarning
    )
    # only the named command's module is imported: the others import torch, which takes
    # seconds, and `serve` must be listening before then
    commands = argv[:1] if argv[:1] and argv[0] in COMMANDS else COMMANDS
    args = build_parser(commands).parse_args(argv)
    if args.command not in RETURNS_FREED_MEMORY:
        keep_freed_memory()
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
