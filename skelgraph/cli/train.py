"""``skelgraph train``: train a model from a YAML config on a skeleton folder or Penn Action.

Example::

    skelgraph train --config infogcn2_blog --data data/penn_action --work-dir work_dirs/penn \\
        epochs=20 optim.lr=0.05 model.args.channels=32

Under ``torchrun --nproc-per-node N -m skelgraph train ...`` the same command trains with
DistributedDataParallel (``batch_size`` is per process).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skelgraph.train.config import available_configs, load_config


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train a model from a config",
        description=(
            "Train a registered model. DATA is a skeleton folder (labels.csv + .npz clips) or a "
            "Penn Action root (labels/*.mat). Writes config.yaml, last.pt, best.pt, log.jsonl, "
            "curves.png and the final evaluation (test/, val/ or train/) into the work dir."
        ),
        epilog=f"packaged configs: {', '.join(available_configs())}",
    )
    parser.add_argument(
        "--config", required=True, help="YAML file or the name of a packaged config"
    )
    parser.add_argument("--data", required=True, type=Path, help="data root")
    parser.add_argument("--work-dir", required=True, type=Path, help="output folder")
    parser.add_argument(
        "--resume", action="store_true", help="continue from WORK_DIR/last.pt when present"
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
        help="config overrides, e.g. epochs=10 optim.lr=0.05 model.args.channels=32",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Loads the config, trains, evaluates ``best.pt`` and prints the metric table."""
    from skelgraph.train.distributed import cleanup, init_distributed
    from skelgraph.train.run import train

    try:
        config = load_config(args.config, args.overrides)
    except (ValueError, FileNotFoundError) as e:
        print(f"skelgraph train: error: {e}", file=sys.stderr)
        return 1
    if not args.data.is_dir():
        print(f"skelgraph train: error: --data {args.data}: no such directory", file=sys.stderr)
        return 1
    ctx = init_distributed(config.device)
    try:
        train(config, args.data, args.work_dir, resume=args.resume, cache_dir=args.cache_dir)
    finally:
        cleanup(ctx)
    return 0
