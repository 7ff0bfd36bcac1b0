"""``skelgraph tune``: search a config's hyperparameters on the validation part with Optuna.

Example::

    skelgraph tune --config penn_action_infogcn2 --data data/penn_npz --work-dir work_dirs/tune \\
        --budget-min 240 epochs=15
    skelgraph train --config work_dirs/tune/best.yaml --data data/penn_npz --work-dir work_dirs/best

Every trial trains the config with its drawn values on the training part and is scored on the
validation part (never the test split); running the command again on the same work dir continues
the study. The search space, metric, budget and pruner are the config's ``tune`` section
(:class:`~skelgraph.train.config.TuneConfig`, listed by ``--help``); the files it writes are
described in :mod:`skelgraph.train.search`. Needs ``pip install "skelgraph[tune]"`` (Optuna).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from skelgraph.train.config import TrainConfig, config_help


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers the ``tune`` subcommand."""
    parser = subparsers.add_parser(
        "tune",
        help="search hyperparameters on the validation part (Optuna)",
        description=textwrap.fill(
            "Search the hyperparameters of a config with Optuna (TPE sampler seeded with the "
            "config's seed, median pruning on the per-epoch validation metric). Every trial "
            "trains on the training part of DATA and is scored on its validation part (the val "
            "split, or data.val_fraction of the training clips, or tune.holdout of them where "
            "that is 0); the test split is never used. "
            "WORK_DIR gets study.db (running again continues the study), trials/<n>/ (config, "
            "log and curves; only the best trial keeps its best.pt), best.yaml (the config with "
            "the best values: skelgraph train --config WORK_DIR/best.yaml trains it), trials.csv "
            'and PNG plots of the study. Needs pip install "skelgraph[tune]".',
            100,
        ),
        epilog=(
            "the search (KEY = default: meaning; every other key: skelgraph train --help):\n"
            f"{config_help(section='tune')}"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        required=True,
        help="YAML file, the name of a packaged config, or auto (the recipe derived from the data)",
    )
    parser.add_argument("--data", required=True, type=Path, help="data root")
    parser.add_argument("--work-dir", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--budget-min",
        type=float,
        metavar="M",
        help="stop starting trials after M minutes, and stop a trial whose next epoch would end "
        "after them (the config key tune.budget_minutes)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help="run N trials in this call, 0: only write the reports (the config key tune.trials)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no training progress nor per-epoch lines, only a line per trial and the table",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where preprocessed data is cached (default: ~/.cache/skelgraph)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. epochs=10 tune.metric=mean_class_acc "
        '"tune.space={optim.lr: {low: 1.0e-4, high: 0.01, log: true}, data.window: [32, 64]}"',
    )
    parser.set_defaults(run=run)


def load_tune_config(
    config: str, overrides: Sequence[str], data: Path, cache_dir: Path | None
) -> TrainConfig:
    """The configuration a search starts from: ``--config`` with the overrides applied, the
    recipe derived from ``data`` merged under it for ``auto`` (or ``recipe: auto``)."""
    from skelgraph.train.recipe import load_training_config

    resolved, recipe = load_training_config(config, overrides, data, cache_dir=cache_dir)
    if recipe is not None:
        print(recipe.describe(resolved))
    return resolved


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides the flags stand for; they come after the KEY=VALUE ones."""
    overrides = []
    if args.budget_min is not None:
        overrides.append(f"tune.budget_minutes={args.budget_min}")
    if args.trials is not None:
        overrides.append(f"tune.trials={args.trials}")
    return overrides


def _error(message: object) -> int:
    print(f"skelgraph tune: error: {message}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    """Loads the config, runs (or continues) the study, prints the trials and the best."""
    if not args.data.is_dir():
        return _error(f"--data {args.data}: no such directory")
    try:
        config = load_tune_config(
            args.config, [*args.overrides, *_flag_overrides(args)], args.data, args.cache_dir
        )
    except (ValueError, FileNotFoundError) as e:
        return _error(e)
    try:
        from skelgraph.train import search
    except ImportError as e:
        return _error(e)
    try:
        study = search.tune(
            config, args.data, args.work_dir, cache_dir=args.cache_dir, progress=not args.quiet
        )
    except (ValueError, FileNotFoundError) as e:
        return _error(e)
    metric = config.tune.metric or config.monitor
    print(search.trials_table(study, metric))
    best = search.best_trial(study)
    if best is None:
        print("no trial is complete yet: no best.yaml")
        return 0
    values = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in best.user_attrs["values"].items()
    )
    print(f"best: trial {best.number}, {metric} {best.value:.4f} on the validation part: {values}")
    print(f"train it: skelgraph train --config {args.work_dir / 'best.yaml'} --data {args.data}")
    return 0
