"""``skelgraph ensemble``: fuse trained checkpoints into one ensemble checkpoint.

Example::

    skelgraph ensemble work_dirs/fused.pt work_dirs/joint/best.pt work_dirs/bone/best.pt --mirror
    skelgraph ensemble work_dirs/tta.pt work_dirs/joint/best.pt --mirror     # one model + TTA
    skelgraph ensemble fused.pt joint/best.pt velocity/best.pt --weights 1.5 1   # weighted

The output averages the members' class probabilities (:class:`skelgraph.models.Ensemble`),
weighted by ``--weights`` when given (saved in the checkpoint), and loads like any checkpoint
(``skelgraph test --checkpoint``, ``load_checkpoint``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers the ``ensemble`` subcommand."""
    parser = subparsers.add_parser(
        "ensemble",
        help="fuse checkpoints into one ensemble checkpoint",
        description=(
            "Fuse trained checkpoints of the same classes, layout, channels, window and "
            "preprocessing into one checkpoint whose model averages their class probabilities. "
            "With --mirror every member also sees the left/right mirrored input."
        ),
    )
    parser.add_argument("out", type=Path, metavar="OUT.pt", help="the fused checkpoint")
    parser.add_argument(
        "checkpoints", type=Path, nargs="+", metavar="IN.pt", help="trained checkpoints"
    )
    parser.add_argument(
        "--mirror", action="store_true", help="mirror test-time augmentation (left/right flip)"
    )
    parser.add_argument(
        "--weights",
        type=float,
        nargs="+",
        metavar="W",
        help="one positive weight per checkpoint for the average of the probabilities "
        "(default: equal weights)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Fuses the checkpoints and writes ``OUT.pt``."""
    from skelgraph.models.ensemble import fuse_checkpoints

    if args.out.resolve() in {p.resolve() for p in args.checkpoints}:
        print(f"skelgraph ensemble: error: {args.out} is also an input", file=sys.stderr)
        return 1
    if args.weights is not None and len(args.weights) != len(args.checkpoints):
        print(
            f"skelgraph ensemble: error: --weights: expected one per checkpoint "
            f"({len(args.checkpoints)}), got {len(args.weights)}",
            file=sys.stderr,
        )
        return 1
    try:
        model, meta = fuse_checkpoints(
            args.out, args.checkpoints, mirror=args.mirror, weights=args.weights
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"skelgraph ensemble: error: {e}", file=sys.stderr)
        return 1
    tta = "mirror" if args.mirror else "none"
    weights = "" if model.weights is None else f", weights {model.weights}"
    print(
        f"wrote {args.out}: ensemble of {len(model.members)} ({', '.join(model.member_names)}), "
        f"{len(meta['classes'])} classes, layout {meta['layout']['name']}, tta {tta}{weights}"
    )
    return 0
