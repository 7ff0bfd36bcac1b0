"""``skelgraph test``: evaluate a checkpoint on a split of a skeleton folder or Penn Action.

Example::

    skelgraph test --checkpoint work_dirs/penn/best.pt --data data/penn_action --split test

The samples are made as in training (window, preprocessing, evaluation crop and sampling from the
checkpoint's meta); the data must have the checkpoint's layout and channels, and only its classes.
Ensemble checkpoints (``skelgraph ensemble``) evaluate like any other; ``--tta mirror`` adds
left/right mirror test-time augmentation to any checkpoint. ``metrics.json`` records the checkpoint,
the model, its members and the test-time augmentation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers the ``test`` subcommand."""
    parser = subparsers.add_parser(
        "test",
        help="evaluate a checkpoint",
        description=(
            "Evaluate a checkpoint: prints the metric table and writes metrics.json, "
            "per_class.csv, confusion.csv/.png and early_recognition.png into --out."
        ),
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a .pt checkpoint")
    parser.add_argument("--data", required=True, type=Path, help="skeleton folder or Penn Action")
    parser.add_argument(
        "--split",
        default="test",
        help="split to evaluate: train, val, test or all (default: test)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: <checkpoint dir>/eval-<checkpoint name>-<split>)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="autocast"
    )
    parser.add_argument(
        "--tta",
        choices=("none", "mirror"),
        default="none",
        help="test-time augmentation: mirror also averages the left/right mirrored input "
        "(default: none, or what an ensemble checkpoint was fused with)",
    )
    parser.add_argument("--no-early", action="store_true", help="skip the early-recognition curve")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="dataset cache (default: ~/.cache/skelgraph)"
    )
    parser.set_defaults(run=run)


def _eval_config(meta: dict[str, Any], args: argparse.Namespace) -> Any:
    """A training config carrying the checkpoint's sample settings and the command's options."""
    from skelgraph.train.config import config_from_dict

    inference = meta.get("inference", {})
    data = {"window": meta["window"], "preprocess": meta.get("preprocess", {})}
    if "p_interval" in inference:
        data["p_interval_val"] = inference["p_interval"]
    data.update({k: inference[k] for k in ("sampling", "stride") if k in inference})
    return config_from_dict(
        {
            "data": data,
            "batch_size": args.batch_size,
            "precision": args.precision,
            "device": args.device,
            "reduce": inference.get("reduce", "mean"),
        }
    )


def run(args: argparse.Namespace) -> int:
    """Loads the checkpoint, checks the data against it, evaluates and prints the metric table."""
    from skelgraph.models.ensemble import mirrored
    from skelgraph.train.checkpoint import check_compatible, load_checkpoint
    from skelgraph.train.distributed import cleanup, init_distributed, main_first
    from skelgraph.train.evaluate import describe_model, update_report
    from skelgraph.train.trainer import evaluate_split, open_dataset

    split = None if args.split == "all" else args.split
    ctx = init_distributed(args.device)
    try:
        model, meta = load_checkpoint(args.checkpoint, map_location=ctx.device)
        if args.tta == "mirror":
            model = mirrored(model).eval()
        config = _eval_config(meta, args)
        with main_first(ctx):
            dataset = open_dataset(
                args.data,
                config.data,
                split=split,
                classes=meta["classes"],
                cache_dir=args.cache_dir,
            )
        check_compatible(meta, dataset)
        if dataset.num_clips == 0:
            raise ValueError(f"--split {args.split}: no clips of that split in {args.data}")
    except (ValueError, FileNotFoundError) as e:
        print(f"skelgraph test: error: {e}", file=sys.stderr)
        cleanup(ctx)
        return 1
    out = args.out or args.checkpoint.parent / f"eval-{args.checkpoint.stem}-{args.split}"
    _, table = evaluate_split(
        model,
        args.data,
        config,
        meta["classes"],
        out,
        split=split,
        ctx=ctx,
        cache_dir=args.cache_dir,
        early=not args.no_early,
    )
    described = describe_model(model)
    if ctx.is_main:
        update_report(out, {"checkpoint": str(args.checkpoint), "split": args.split, **described})
        members = ", ".join(described["members"])
        print(
            f"{args.checkpoint} ({described['model']}: {members}; tta {described['tta'] or 'none'})"
            f" on {args.data} ({args.split}):\n{table}\nreport: {out}"
        )
    cleanup(ctx)
    return 0
