"""Accuracy of the recipe derived from the data (``--config auto``) on datasets no configuration was
tuned on: the single model, the recipe's ensemble and, optionally, a ``skelgraph tune`` search on
top.

Protocol, per dataset of ``--datasets NAME=DIR ...`` (skeleton folders with a ``train`` and a
``test`` split):

1. ``auto``: the recipe (:mod:`skelgraph.train.recipe`) derived from the training clips, nothing
   set by hand; every stream of the recipe's ensemble (``--streams auto``) is trained as the
   recipe says (under 1000 training clips on all of them, keeping the last epoch; else on the
   training split less its validation part, whole groups when ``labels.csv`` has them, keeping
   the epoch with the best validation accuracy) and is evaluated once on the test split. The first
   stream (joint positions and velocity) is the single model; the ensemble averages the streams'
   probabilities.
2. ``tuned`` (with ``--tune-minutes M``): ``skelgraph tune`` searches the recipe's default space
   on a validation part (``tune.holdout`` of the training clips where the recipe trains on all
   of them) for M minutes of wall time (with ``--resume``, a search that has written its
   ``best.yaml`` is reused as it is), then the best configuration is trained like the single
   model (on all the training clips where the recipe does) and evaluated once on the test split.

Training times are the sums of the epochs' wall times as logged (validation included). Outputs: a
table on stdout and ``benchmarks/results/recipe.json`` (per dataset: the recipe with its reasons,
every entry's validation and test accuracy, training minutes; the machine).

Usage::

    python benchmarks/recipe.py --datasets msr=../shared/data/dev/msr_action3d \\
        jhmdb=../shared/data/dev/jhmdb_gt14 --work-dir work/recipe --tune-minutes 30
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import format_table, machine, pin_threads, write_json

from skelgraph.train.config import load_config
from skelgraph.train.recipe import load_training_config
from skelgraph.train.run import train, train_streams

RESULTS = Path(__file__).resolve().parent / "results"


def train_minutes(work_dir: Path) -> float:
    """The summed epoch wall times of a training run's ``log.jsonl``, in minutes."""
    lines = (work_dir / "log.jsonl").read_text().splitlines()
    return sum(json.loads(line)["epoch_time"] for line in lines) / 60.0


def entry(name: str, metrics: dict[str, Any], minutes: float) -> dict[str, Any]:
    """One table row from a training run's final metrics (``val_top1`` :obj:`None` for a run
    without a validation part)."""
    best = metrics.get("fit", {}).get("best_metric")
    return {
        "entry": name,
        "val_top1": best if best is not None and math.isfinite(best) else None,
        "test_top1": metrics["top1"],
        "test_mean_class": metrics.get("mean_class_acc"),
        "train_min": round(minutes, 1),
    }


def run_dataset(
    name: str,
    root: Path,
    work_dir: Path,
    tune_minutes: float | None,
    overrides: Sequence[str],
    options: dict[str, Any],
) -> dict[str, Any]:
    """The ``auto`` (and ``tuned``) entries of one dataset."""
    cache_dir = options["cache_dir"]
    config, recipe = load_training_config("auto", overrides, root, cache_dir=cache_dir)
    assert recipe is not None
    auto_dir = work_dir / name
    metrics = train_streams(config, recipe.streams, root, auto_dir, **options)
    stream_minutes = {s.name: train_minutes(auto_dir / s.name) for s in recipe.streams}
    first = recipe.streams[0].name
    rows = [
        entry(f"auto, single ({first})", metrics["streams"][first], stream_minutes[first]),
        entry(
            f"auto, ensemble ({len(recipe.streams)} streams)",
            {**metrics, "fit": {}},
            sum(stream_minutes.values()),
        ),
    ]
    for stream in recipe.streams[1:]:
        rows.append(
            entry(
                f"auto, stream {stream.name}",
                metrics["streams"][stream.name],
                stream_minutes[stream.name],
            )
        )
    result: dict[str, Any] = {"root": str(root), "recipe": recipe.describe(config), "rows": rows}
    if tune_minutes is not None:
        from skelgraph.train.search import open_study, tune

        tune_dir = work_dir / f"{name}-tune"
        budget = [*overrides, f"tune.budget_minutes={tune_minutes}"]
        tune_config, _ = load_training_config("auto", budget, root, cache_dir=cache_dir)
        if options["resume"] and (tune_dir / "best.yaml").is_file():  # a finished search
            study = open_study(tune_config, tune_dir)
        else:
            study = tune(tune_config, root, tune_dir, cache_dir=cache_dir, progress=False)
        tuned = load_config(tune_dir / "best.yaml")
        tuned_metrics = train(tuned, root, work_dir / f"{name}-tuned", **options)
        rows.append(
            entry(
                f"auto + tune ({len(study.trials)} trials, {tune_minutes:g} min)",
                tuned_metrics,
                train_minutes(work_dir / f"{name}-tuned"),
            )
        )
        result["tune"] = {
            "minutes": tune_minutes,
            "trials": len(study.trials),
            "best_values": study.best_trial.user_attrs.get("values"),
        }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", required=True, metavar="NAME=DIR")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/recipe"))
    parser.add_argument("--tune-minutes", type=float, help="add a tune search of this budget")
    parser.add_argument(
        "--overrides", nargs="*", default=[], metavar="KEY=VALUE", help="for every training"
    )
    parser.add_argument("--resume", action="store_true", help="reuse finished trainings")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    parser.add_argument("--name", default="recipe", help="results file stem")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    datasets = {}
    for item in args.datasets:
        name, sep, root = item.partition("=")
        if not sep or not Path(root).is_dir():
            parser.error(f"--datasets {item!r}: expected NAME=DIR with an existing DIR")
        datasets[name] = Path(root)
    threads = pin_threads(args.threads)
    options = {"resume": args.resume, "cache_dir": args.cache_dir, "progress": not args.quiet}
    results = {
        name: run_dataset(name, root, args.work_dir, args.tune_minutes, args.overrides, options)
        for name, root in datasets.items()
    }
    rows = [
        {
            "dataset": name,
            **row,
            "val_top1": _pct(row["val_top1"]),
            "test_top1": _pct(row["test_top1"]),
        }
        for name, result in results.items()
        for row in result["rows"]
    ]
    print(format_table(rows, ["dataset", "entry", "val_top1", "test_top1", "train_min"]))
    record = {
        "benchmark": "recipe",
        "protocol": __doc__.split("\n\n")[1],
        "datasets": results,
        "machine": {**machine(), "torch_threads": threads},
        "command": ["recipe.py", *(argv if argv is not None else sys.argv[1:])],
    }
    print(f"wrote {write_json(args.output_dir / f'{args.name}.json', record)}")
    return 0


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
