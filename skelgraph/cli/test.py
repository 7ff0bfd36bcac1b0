"""``skelgraph test``: evaluate a checkpoint on a split of a skeleton folder or Penn Action.

Example::

    skelgraph test --checkpoint work_dirs/penn/best.pt --data data/penn_action --split test

The samples are made as in training (window, preprocessing, evaluation crop and sampling from the
checkpoint's meta); the data must have the checkpoint's layout and channels, and only its classes.
Ensemble checkpoints (``skelgraph ensemble``) evaluate like any other; ``--tta mirror`` adds
left/right mirror test-time augmentation to any checkpoint. Several checkpoints are fused by their
scores: each is run with its own data settings (window, preprocessing, crop: models such as
InfoGCN++ and 2s-AGCN, trained on different inputs, combine) and their clip-level class
probabilities are averaged::

    skelgraph test --checkpoint infogcn2/best.pt agcn2s/best.pt --data data/penn_action

``metrics.json`` records the checkpoints, the models, their members and the test-time augmentation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    parser.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        nargs="+",
        metavar="PATH|NAME",
        help="a .pt checkpoint or the name of a packaged one (e.g. penn-action), or several "
        "whose clip-level class probabilities are averaged",
    )
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
        help="report folder (default: ./eval-<checkpoint name>-<split> in the current folder)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="autocast"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the models' forward with torch.compile (pays off on large test sets)",
    )
    parser.add_argument(
        "--tta",
        choices=("none", "mirror"),
        default="none",
        help="test-time augmentation: mirror also averages the left/right mirrored input "
        "(default: none, or what an ensemble checkpoint was fused with)",
    )
    parser.add_argument(
        "--no-early",
        action="store_true",
        help="skip the early-recognition curve (accuracy after the first 10 %%, 20 %%, ... of "
        "every clip, computed from the clips already loaded)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="quick run: evaluate at most N clips, taken in turn from every class",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress, only the metrics (off a terminal progress is written as plain lines)",
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="dataset cache (default: ~/.cache/skelgraph)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Loads the checkpoints, checks the data against each, evaluates (fusing several checkpoints'
    scores) and prints the metric table."""
    from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint
    from skelgraph.models.ensemble import mirrored
    from skelgraph.train.checkpoint_data import check_compatible, evaluation_config
    from skelgraph.train.data import open_dataset
    from skelgraph.train.distributed import cleanup, init_distributed, main_first
    from skelgraph.train.evaluate import fuse_predictions, report_split, split_predictor
    from skelgraph.train.report import describe_models, update_report

    split = None if args.split == "all" else args.split
    stem = "+".join(p.stem for p in args.checkpoint)
    # the current folder, not the checkpoint's: a shipped checkpoint lies inside the package
    out = args.out or Path(f"eval-{stem}-{args.split}")
    if out.exists() and not out.is_dir():  # refused before the evaluation, not after it
        print(f"skelgraph test: error: --out {out}: is a file, expected a folder", file=sys.stderr)
        return 1
    ctx = init_distributed(args.device)
    predictors, models = [], []
    try:
        classes = None
        for path in args.checkpoint:
            model, meta = load_checkpoint(resolve_checkpoint(path), map_location=ctx.device)
            if classes is not None and meta["classes"] != classes:
                raise ValueError(
                    f"checkpoint {path}: meta field 'classes': expected {classes} (as in "
                    f"{args.checkpoint[0]}), got {meta['classes']}"
                )
            classes = meta["classes"]
            if args.compile:
                model.compile()
            if args.tta == "mirror":
                model = mirrored(model).eval()
            config = evaluation_config(
                meta,
                batch_size=args.batch_size,
                precision=args.precision,
                device=args.device,
                limit=args.limit,
            )
            with main_first(ctx):
                dataset = open_dataset(
                    args.data,
                    config.data,
                    split=split,
                    classes=classes,
                    cache_dir=args.cache_dir,
                    progress=not args.quiet,
                )
            try:
                check_compatible(meta, dataset)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
            if dataset.num_clips == 0:
                raise ValueError(f"--split {args.split}: no clips of that split in {args.data}")
            predictors.append(
                split_predictor(
                    model,
                    args.data,
                    config,
                    classes,
                    split=split,
                    ctx=ctx,
                    cache_dir=args.cache_dir,
                    progress=not args.quiet,
                )
            )
            models.append(model)
    except (ValueError, FileNotFoundError) as e:
        print(f"skelgraph test: error: {e}", file=sys.stderr)
        cleanup(ctx)
        return 1
    _, table = report_split(
        lambda f: fuse_predictions([predict_at(f) for predict_at in predictors]),
        classes,
        out,
        ctx=ctx,
        early=not args.no_early,
        progress=not args.quiet,
    )
    if ctx.is_main:
        fields = describe_models(models)
        checkpoints = [str(p) for p in args.checkpoint]
        shown = checkpoints[0] if len(checkpoints) == 1 else checkpoints
        update_report(out, {"checkpoint": shown, "split": args.split, **fields})
        members = ", ".join(fields["members"])
        tta = fields["tta"] or "none"
        print(
            f"{' + '.join(checkpoints)} ({fields['model']}: {members}; tta {tta}) on "
            f"{args.data} ({args.split}):\n{table}\nreport: {out}"
        )
    cleanup(ctx)
    return 0
