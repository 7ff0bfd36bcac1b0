"""``skelgraph train``: train a model from a YAML config on a skeleton folder or Penn Action.

Example::

    skelgraph train --config infogcn2_blog --data data/penn_action --work-dir work_dirs/penn \\
        epochs=20 optim.lr=0.05 model.args.channels=32

A configuration derived from the data (window, augmentation, model size, regularisation and
schedule from the training clips; printed and saved as ``WORK_DIR/recipe.yaml`` with the reason of
every value, see :mod:`skelgraph.train.recipe`), and its ensemble of streams::

    skelgraph train --config auto --data data/mine --work-dir work_dirs/mine --streams auto

A quick run, to see that data, config and machine work together before a long one::

    skelgraph train --config infogcn2_small --data data/mine --work-dir work/quick \\
        --max-steps 20 --limit 64

A multi-stream ensemble: one model per input stream, fused with a weight each into
``WORK_DIR/ensemble.pt`` and evaluated, e.g. InfoGCN's six streams (the joint, bone and
second-mode positions weighted 1.5, their motion 1; see :mod:`skelgraph.train.streams`)::

    skelgraph train --config penn_action_infogcn --data data/penn_action \\
        --work-dir work_dirs/infogcn6 --streams infogcn

Cross-validation on the training clips: K folds, each trained into ``WORK_DIR/fold<i>`` and
evaluated on its held-out fold (whole groups when ``labels.csv`` has a ``group`` column, e.g. the
subject; else stratified by class), summarised as mean ± std in ``WORK_DIR/cv.json``; the test
split is not used::

    skelgraph train --config multiview_3d --data data/msr_action3d --work-dir work/cv5 --cv 5

Under ``torchrun --nproc-per-node N -m skelgraph train ...`` the same command trains with
DistributedDataParallel (``batch_size`` is per process). ``--help`` lists every config key with
its default.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from skelgraph.train.config import TrainConfig, available_configs, config_help

if TYPE_CHECKING:
    from skelgraph.train.recipe import Recipe
    from skelgraph.train.streams import Stream


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config",
        description=textwrap.fill(
            "Train a registered model. DATA is a skeleton folder (labels.csv + .npz clips) or a "
            "Penn Action root (labels/*.mat). Writes config.yaml, last.pt, best.pt, log.jsonl, "
            "curves.png and the final evaluation of best.pt (test/, val/ or train/: metrics, "
            "confusion matrix and the early-recognition curve, computed from the clips already "
            "loaded; --no-early skips it) into the work dir.",
            100,
        ),
        epilog=(
            f"packaged configs: {', '.join(available_configs())}\n\n"
            f"config keys (KEY = default: meaning):\n{config_help()}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        required=True,
        help="YAML file, the name of a packaged config, or auto: a recipe derived from the "
        "training data (skelgraph.train.recipe; printed and saved as WORK_DIR/recipe.yaml with "
        "the reason of every value)",
    )
    parser.add_argument("--data", required=True, type=Path, help="data root")
    parser.add_argument("--work-dir", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue from WORK_DIR/last.pt when present"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="quick run: stop after N optimisation steps in all (the config key max_steps)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="quick run: at most N clips of every split, taken in turn from every class "
        "(the config key limit)",
    )
    parser.add_argument(
        "--no-early",
        action="store_true",
        help="skip the early-recognition curve of the final evaluation "
        "(the config key early_recognition=false)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the model's forward with torch.compile (the config key compile=true)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress and no per-epoch lines, only the final metrics (off a terminal "
        "progress is written as plain lines)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where preprocessed data is cached (default: ~/.cache/skelgraph)",
    )
    parser.add_argument(
        "--streams",
        metavar="STREAM[,STREAM...]",
        help="train one model per input stream into WORK_DIR/<stream> and fuse them into "
        "WORK_DIR/ensemble.pt: auto (the streams of --config auto), a named set (infogcn: "
        "InfoGCN's six streams) or "
        "FEATURE[+FEATURE...][:WEIGHT] each, comma-separated, e.g. joint:1.5,velocity (each "
        "sets model.args.features)",
    )
    parser.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="K-fold cross-validation on the training clips (the config key data.folds): fold i "
        "trains into WORK_DIR/fold<i> and is evaluated on its held-out fold (whole groups when "
        "labels.csv has a group column, else stratified by class; the test split is not used); "
        "WORK_DIR/cv.json gets every fold's validation metrics with mean and std. Combines with "
        "--streams (each fold's ensemble) and --resume (every fold continues)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. epochs=10 optim.lr=0.05 model.args.channels=32",
    )
    parser.set_defaults(run=run)


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides the flags stand for; they come after the KEY=VALUE ones."""
    overrides = []
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if args.limit is not None:
        overrides.append(f"limit={args.limit}")
    if args.no_early:
        overrides.append("early_recognition=false")
    if args.compile:
        overrides.append("compile=true")
    if args.cv is not None:
        overrides.append(f"data.folds={args.cv}")
    return overrides


def run(args: argparse.Namespace) -> int:
    """Loads the config, trains, evaluates ``best.pt`` and prints the metric table (with
    ``--cv``: every fold, and the table of their mean and std)."""
    from skelgraph.train.distributed import cleanup, init_distributed
    from skelgraph.train.recipe import load_training_config, save_recipe
    from skelgraph.train.run import cross_validate, train, train_streams

    if not args.data.is_dir():
        print(f"skelgraph train: error: --data {args.data}: no such directory", file=sys.stderr)
        return 1
    try:
        config, recipe = load_training_config(
            args.config,
            [*args.overrides, *_flag_overrides(args)],
            args.data,
            cache_dir=args.cache_dir,
        )
        streams = None if args.streams is None else _streams(args.streams, config, recipe)
    except (ValueError, FileNotFoundError) as e:
        print(f"skelgraph train: error: {e}", file=sys.stderr)
        return 1
    ctx = init_distributed(config.device)
    if recipe is not None and ctx.is_main:
        print(recipe.describe(config))
        args.work_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, config, args.work_dir / "recipe.yaml")
    options = {"resume": args.resume, "cache_dir": args.cache_dir, "progress": not args.quiet}
    try:
        if args.cv is not None:
            cross_validate(config, args.data, args.work_dir, streams=streams, **options)
        elif streams is None:
            train(config, args.data, args.work_dir, **options)
        else:
            train_streams(config, streams, args.data, args.work_dir, **options)
    finally:
        cleanup(ctx)
    return 0


def _streams(spec: str, config: TrainConfig, recipe: Recipe | None) -> list[Stream]:
    """The streams of ``--streams`` (``auto``: the recipe's), checked against the configured
    model before anything is trained: it must take input ``features``."""
    from skelgraph.models.registry import model_class
    from skelgraph.train.streams import parse_streams

    if spec == "auto":
        if recipe is None:
            raise ValueError("--streams auto: needs the recipe of --config auto (or recipe: auto)")
        streams = list(recipe.streams)
    else:
        streams = parse_streams(spec.split(","))
    if "features" not in inspect.signature(model_class(config.model.name)).parameters:
        raise ValueError(
            f"--streams: model {config.model.name!r} takes no input features "
            f"(model.args.features); expected a model such as infogcn, infogcn2 or stgcn"
        )
    return streams
