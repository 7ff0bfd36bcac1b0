"""``skelgraph export``: a checkpoint as an ONNX model or a torch.export program.

::

    skelgraph export CHECKPOINT OUT [--format onnx|exported-program] [--frame-step] [--check]

``CHECKPOINT`` is a checkpoint file or a packaged model's name (``penn-action-fast``). Without
``--frame-step`` the graph is the model's clip scores (``joints`` [batch, V, time, C] →
``logits`` [batch, K] at the checkpoint's reduction); with it, the one-frame step of a streaming
model (InfoGCN++ with an attention window, or an ensemble of them): the new frame, the frame
before, the position and every key/value ring in, the logits, the forecast and the new rings out
(see :mod:`skelgraph.export`). The checkpoint's metadata (classes, layout, window,
preprocessing) goes with the graph. ``--check`` then runs the file (onnxruntime for ONNX) and the
model on the shipped example clips and prints the largest differences; it fails above 1e-4. The
file is written atomically. ONNX needs ``pip install "skelgraph[onnx]"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: :data:`skelgraph.export.FORMATS`, spelled out: the parser is built without importing torch
FORMATS = ("onnx", "exported-program")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers the ``export`` subcommand."""
    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or a torch.export program",
        description="Export a checkpoint's clip scores, or with --frame-step the one-frame step "
        "of a streaming model, to an ONNX model or a torch.export program (.pt2), with the "
        "checkpoint's metadata (classes, layout, window, preprocessing).",
    )
    parser.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="checkpoint file or pretrained model name"
    )
    parser.add_argument("out", type=Path, metavar="OUT", help="the file to write (.onnx, .pt2)")
    parser.add_argument(
        "--format", choices=FORMATS, default="onnx", help="file format (default: onnx)"
    )
    parser.add_argument(
        "--frame-step",
        action="store_true",
        help="export the one-frame step of a streaming model (its key/value rings in and out) "
        "instead of the clip scores",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare the file's outputs with the model's on the shipped example clips",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Exports the checkpoint, then checks the file when asked."""
    try:
        return _run(args)
    except (ImportError, OSError, ValueError, TypeError) as e:
        print(f"skelgraph export: error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from skelgraph.export import check_export, export_model
    from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    if args.out.resolve() == path.resolve():
        raise ValueError(f"{args.out}: is also the checkpoint; choose another file")
    model, meta = load_checkpoint(path)
    metadata = export_model(
        model, args.out, meta=meta, format=args.format, frame_step=args.frame_step
    )
    shapes = {
        side: ", ".join(f"{name} {shape}" for name, shape in metadata[side].items())
        for side in ("inputs", "outputs")
    }
    graph = "frame step" if args.frame_step else f"clip scores (reduce {metadata['reduce']})"
    print(
        f"{args.out}: {args.format}, {graph} of {args.checkpoint} ({meta['model']}), "
        f"{args.out.stat().st_size / 1e6:.1f} MB\n  inputs: {shapes['inputs']}\n"
        f"  outputs: {shapes['outputs']}"
    )
    if not args.check:
        return 0
    check = check_export(args.out, model, meta=meta)
    differences = ", ".join(f"{name} {value:.2e}" for name, value in check.differences.items())
    verdict = "ok" if check.passed else "FAILED"
    print(
        f"check ({check.runtime} against the eager model, {check.inputs}): largest differences "
        f"{differences}; {verdict} (tolerance {check.tolerance:g})"
    )
    return 0 if check.passed else 1
