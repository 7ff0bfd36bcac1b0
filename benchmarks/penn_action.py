"""Penn Action: InfoGCN++, InfoGCN, ST-GCN, 2s-AGCN and PoseC3D trained on the official training
split and evaluated once on the official test split.

Protocol. Every model is trained by the library's :class:`~skelgraph.train.Trainer` from a shipped
configuration (``skelgraph/configs/<name>.yaml``, plus ``--overrides``) on the official training
split (1258 clips). A stratified 20 % of those clips (by class, by clip; the configuration's
``data.val_fraction`` and ``seed``) is held out for validation: it selects the best epoch, and
``--split val`` reports every metric on it, which is how hyperparameters are to be compared. The
official test split (1068 clips) is used once per model, for the final figures: top-1, top-5, mean
class accuracy, macro precision / recall / F1, the confusion matrix, and the early-recognition
curve (top-1 when only the first 10 %, 20 %, ..., 100 % of every clip's frames are observed, the
same protocol for every model) with its normalised area. With ``--refit`` the final models learn
from the whole training split, the validation part included, for the configured epochs (chosen
on validation) and keep their last epoch: a quarter more training clips, nothing selected on
them (in ``WORK_DIR/models-refit``, apart from the held-out models).

Entries. Each ``--configs`` item is one row of the table: a configuration name (or YAML file), or
several joined by ``+``, trained one after another. A member may carry its own overrides after
colons: ``infogcn2_blog:model.args.features=[bone]``, and its weight in the average of the
probabilities as ``weight=W`` (not a configuration key; default 1), e.g. InfoGCN's six streams
with its weights 1.5 for the positions and 1 for the motion (see :mod:`skelgraph.train.streams`).
Members that see the same samples (window,
sampling, evaluation crop, preprocessing, ``reduce``) are fused into one
:class:`~skelgraph.models.Ensemble` (per-step class probabilities averaged; e.g. InfoGCN++ on the
joint, bone and motion streams); members that differ (e.g. the causal InfoGCN++ and 2s-AGCN) are
fused by their scores, each model run with its own settings and the clip-level class probabilities
averaged (:func:`~skelgraph.train.evaluate.fuse_predictions`, as ``skelgraph test --checkpoint A B``
does). Identical members are trained, and identical models evaluated, once per run. ``--tta`` adds
left/right mirror test-time augmentation to every model. The table says which rows are ensembles
and which use test-time augmentation.

Training. Every distinct member of the run is trained first, ``--jobs`` at a time: with
``--jobs 2 --threads 1`` two models train at once, each in its own process on one core, which
suits these small models better than two threads in one process. An entry's ``train min`` is the
sum of its members' training times; the run's measured training wall time (``training_wall_s``)
is what one command costs, e.g. for a run of one entry.

Data. ``--data`` is a skeleton folder (e.g. ``/tmp/penn_npz`` from ``skelgraph convert
penn-action``) or a Penn Action root; without it the annotations in ``--penn-action`` (default
``../shared/data/penn_action``) are converted once into ``WORK_DIR/penn_npz``.

Outputs: ``benchmarks/results/penn_action.json`` (metrics, curves, confusion matrices, training
wall time including the per-epoch validation, parameters, configurations, machine),
``penn_action_confusion.png`` (one panel per entry), ``penn_action_early.png`` (all curves), a
Markdown table on stdout, and in ``WORK_DIR`` every model's checkpoints, logs and report folder.
``--quick`` runs the whole pipeline in seconds on a 3-class subset with tiny models and one epoch
(results named ``penn_action_quick``).

Usage::

    python benchmarks/penn_action.py --configs infogcn2_blog stgcn agcn2s \\
        --data /tmp/penn_npz --work-dir work_dirs/penn_bench
    python benchmarks/penn_action.py --split val --configs infogcn2_blog \\
        --overrides optim.lr=0.05                       # compare settings on validation only
    python benchmarks/penn_action.py --quick
    python benchmarks/penn_action.py --jobs 2 --threads 1 --tta \\
        --configs "penn_action_infogcn2+agcn2s"           # two models trained at once
    python benchmarks/penn_action.py --refit --configs penn_action_infogcn2   # final model
    python benchmarks/penn_action.py --jobs 2 --threads 1 --configs \\
        "penn_action_infogcn:weight=1.5+penn_action_infogcn:model.args.features=[bone]:weight=1.5\\
+penn_action_infogcn:model.args.features=[relative2]:weight=1.5\\
+penn_action_infogcn:model.args.features=[velocity]\\
+penn_action_infogcn:model.args.features=[bone_velocity]\\
+penn_action_infogcn:model.args.features=[relative2_velocity]"   # InfoGCN's six streams
    python benchmarks/penn_action.py --jobs 2 --threads 1 --configs posec3d_lite \\
        posec3d_lite:model.args.input=limb \\
        "posec3d_lite+posec3d_lite:model.args.input=limb"  # joints, bones, both fused
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import math
import multiprocessing
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import format_table, machine, pin_threads, write_json
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from skelgraph.data.folder import write_skeleton_folder
from skelgraph.data.penn_action import penn_action_files, read_penn_action
from skelgraph.models import Ensemble
from skelgraph.models.checkpoint import load_checkpoint, save_checkpoint
from skelgraph.train.config import TrainConfig, config_to_dict, save_config
from skelgraph.train.data import DataSplits, read_clips
from skelgraph.train.evaluate import (
    ClipPredictions,
    fuse_predictions,
    report_split,
    split_predictor,
)
from skelgraph.train.recipe import load_training_config
from skelgraph.train.report import describe_models, update_report
from skelgraph.train.run import prepare
from skelgraph.utils import atomic_write

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
PENN_ACTION = REPO.parent / "shared" / "data" / "penn_action"
DEFAULT_CONFIGS = ("infogcn2_blog", "stgcn", "agcn2s")
DISPLAY = {
    "infogcn": "InfoGCN",
    "infogcn2": "InfoGCN++",
    "stgcn": "ST-GCN",
    "agcn2s": "2s-AGCN",
    "posec3d": "PoseC3D",
    "ensemble": "Ensemble",
}

#: ``--quick``: classes, training and test clips per class of the subset.
QUICK_CLASSES, QUICK_TRAIN, QUICK_TEST = 3, 5, 2
#: ``--quick``: settings for every configuration, then per model (before ``--overrides``).
QUICK_OVERRIDES = (
    "epochs=1",
    "batch_size=4",
    "eval_batch_size=16",
    "data.window=16",
    "optim.warmup_epochs=0",
    "precision=fp32",
)
QUICK_MODEL_OVERRIDES = {
    "infogcn2": (
        "model.args.channels=16",
        "model.args.depth=1",
        "model.args.head_channels=16",
        "model.args.decoder_channels=8",
    ),
    "infogcn": ("model.args.channels=[8, 8]", "model.args.strides=[1, 2]"),
    "stgcn": ("model.args.channels=[16, 16]", "model.args.strides=[1, 2]"),
    "agcn2s": ("model.args.channels=[16, 16]", "model.args.strides=[1, 2]"),
    "posec3d": (
        "model.args.resolution=16",
        "model.args.frames=8",
        "model.args.base_channels=4",
        "model.args.stage_blocks=[1, 1]",
        "model.args.inflate=[false, true]",
        "model.args.spatial_strides=[2, 2]",
        "model.args.temporal_strides=[1, 2]",
    ),
}


@dataclasses.dataclass(frozen=True)
class Member:
    """One trained model of an entry: a configuration, its own overrides and its weight in the
    entry's average of probabilities."""

    config: str
    overrides: tuple[str, ...] = ()
    weight: float = 1.0

    @property
    def spec(self) -> str:
        """The trained model (the weight apart: a model is trained once, whatever its weight)."""
        return ":".join((self.config, *self.overrides))


def parse_entry(text: str) -> list[Member]:
    """``"a+b:key=value:weight=1.5"`` → members ``a`` and ``b`` (with its overrides and its
    weight)."""
    members = []
    for part in text.split("+"):
        config, *overrides = (p.strip() for p in part.split(":"))
        if not config or not all("=" in o for o in overrides):
            raise ValueError(
                f"--configs {text!r}: expected CONFIG[:KEY=VALUE...][:weight=W] joined by '+', "
                f"got {part!r}"
            )
        weights = [o.partition("=")[2] for o in overrides if o.partition("=")[0] == "weight"]
        try:
            weight = float(weights[-1]) if weights else 1.0
        except ValueError:
            weight = math.nan
        if not (0 < weight < math.inf):
            raise ValueError(
                f"--configs {text!r}: {part!r}: weight: expected a positive number, "
                f"got {weights[-1]!r}"
            )
        kept = tuple(o for o in overrides if o.partition("=")[0] != "weight")
        members.append(Member(config, kept, weight))
    return members


def member_weights(members: Sequence[Member]) -> list[float] | None:
    """The members' weights, :obj:`None` when they are all 1 (plain averages)."""
    weights = [m.weight for m in members]
    return None if all(w == 1.0 for w in weights) else weights


def slug(text: str, limit: int = 120) -> str:
    """A file-name safe version of ``text``; beyond ``limit`` characters its start and a hash of
    the whole (file names may not exceed 255 bytes, and a six-stream entry's would)."""
    name = re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "entry"
    if len(name) <= limit:
        return name
    return f"{name[: limit - 13]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


# ------------------------------------------------------------------------------------------------
# data


def quick_subset(source: Path, dst: Path) -> Path:
    """A skeleton folder of the first :data:`QUICK_CLASSES` classes met in ``source``, with
    :data:`QUICK_TRAIN` training and :data:`QUICK_TEST` test clips each (the first ones)."""
    quota = {"train": QUICK_TRAIN, "test": QUICK_TEST}
    counts: dict[tuple[str, str], int] = {}
    classes: list[str] = []
    chosen = []
    for clip, label, split in read_clips(source):
        if label not in classes and len(classes) < QUICK_CLASSES:
            classes.append(label)
        if label not in classes or counts.get((label, split), 0) >= quota.get(split, 0):
            continue
        counts[label, split] = counts.get((label, split), 0) + 1
        chosen.append((clip, label, split))
        if len(chosen) == QUICK_CLASSES * sum(quota.values()):
            break
    write_skeleton_folder(dst, chosen, progress=False)
    return dst


def prepare_data(args: argparse.Namespace) -> Path:
    """The data root of the run (see the module docstring)."""
    source = args.data or args.penn_action
    if not source.is_dir():
        raise FileNotFoundError(
            f"{'--data' if args.data else '--penn-action'} {source}: no such directory"
        )
    if args.quick:
        return quick_subset(source, args.work_dir / "quick_data")
    if args.data is not None:
        return args.data
    dst = args.work_dir / "penn_npz"
    if not (dst / "labels.csv").is_file():
        files = penn_action_files(source)
        write_skeleton_folder(
            dst, map(read_penn_action, files), total=len(files), progress=not args.quiet
        )
    return dst


# ------------------------------------------------------------------------------------------------
# training and evaluation


def member_config(member: Member, args: argparse.Namespace, data_root: Path) -> TrainConfig:
    """The configuration of ``member``: its file (``auto``: the recipe derived from the training
    clips of ``data_root``), the quick settings, ``--overrides``, its own."""
    overrides = [*args.overrides, *member.overrides]
    if args.quick:
        name = load_training_config(member.config, overrides, data_root)[0].model.name
        overrides = [*QUICK_OVERRIDES, *QUICK_MODEL_OVERRIDES.get(name, ()), *overrides]
    if args.refit:
        overrides.append("data.val_fraction=0")
    return load_training_config(member.config, overrides, data_root, cache_dir=args.cache_dir)[0]


def member_streams(config: TrainConfig) -> list[str]:
    """What a member sees: its input features, or for PoseC3D its heatmaps (keypoint, limb or
    both)."""
    args = config.model.args
    if config.model.name == "posec3d":
        return [str(args.get("input", "keypoint"))]
    return list(args.get("features", ["joint"]))


def stage_dir(args: argparse.Namespace, stage: str) -> Path:
    """``WORK_DIR/models`` or ``WORK_DIR/eval``; ``models-refit`` and ``eval-refit`` with
    ``--refit``, so that refitted models never resume or replace held-out ones."""
    return args.work_dir / (f"{stage}-refit" if args.refit else stage)


def train_member(
    member: Member, args: argparse.Namespace, data_root: Path, *, resume: bool | None = None
) -> tuple[dict[str, Any], TrainConfig, DataSplits]:
    """Trains one member (or continues it with ``--resume`` or ``resume=True``); returns its
    record, configuration and data splits."""
    config = member_config(member, args, data_root)
    work = stage_dir(args, "models") / slug(member.spec)
    work.mkdir(parents=True, exist_ok=True)
    save_config(config, work / "config.yaml")
    trainer, splits = prepare(
        config, data_root, work, cache_dir=args.cache_dir, progress=not args.quiet
    )
    if splits.test_split is None:
        raise ValueError(f"--data {data_root}: expected clips of the splits train and test")
    start = time.perf_counter()
    fit = trainer.fit(resume=args.resume if resume is None else resume)
    wall = time.perf_counter() - start
    record = {
        "config": member.config,
        "overrides": list(member.overrides),
        "model": config.model.name,
        "features": member_streams(config),
        "work_dir": str(work),
        "checkpoint": str(trainer.best_path),
        "epochs": config.epochs,
        "best_epoch": fit["best_epoch"],
        # no held-out part with --refit: the last epoch, no validation metric
        f"val_{config.monitor}": None if math.isnan(fit["best_metric"]) else fit["best_metric"],
        "train_time_s": sum(r["epoch_time"] for r in trainer.history),
        "this_run_s": wall,
        "parameters": sum(p.numel() for p in trainer.module.parameters()),
        "device": str(trainer.ctx.device),
        "resolved_config": config_to_dict(config),
    }
    return record, config, splits


#: Settings that make a model's samples: members of an entry that agree on them form one
#: :class:`Ensemble`; groups that differ are fused by their scores.
SAMPLE_KEYS = (
    "reduce",
    "data.window",
    "data.sampling",
    "data.stride",
    "data.p_interval_val",
    "data.preprocess",
)
#: Settings every member of an entry must share: the same held-out validation clips.
SPLIT_KEYS = ("seed", "data.val_fraction", "data.folds", "data.fold")


def _lookup(config: TrainConfig, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def check_members(configs: Sequence[TrainConfig], entry: str) -> None:
    """Members of an entry must hold out the same validation clips (checked before training)."""
    first = configs[0]
    for config in configs[1:]:
        for key in SPLIT_KEYS:
            ours, theirs = (_lookup(c, key) for c in (first, config))
            if ours != theirs:
                raise ValueError(
                    f"--configs {entry!r}: {key}: every member of an entry needs the same value "
                    f"(the same validation clips), got {ours!r} and {theirs!r}"
                )


def sample_groups(configs: Sequence[TrainConfig]) -> list[list[int]]:
    """Member indices grouped by their :data:`SAMPLE_KEYS` values, in order of appearance."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(repr([_lookup(config, k) for k in SAMPLE_KEYS]), []).append(i)
    return list(groups.values())


def group_name(records: Sequence[dict[str, Any]]) -> str:
    """``InfoGCN++``, ``InfoGCN++ ×2 ensemble`` or ``InfoGCN++ + ST-GCN ensemble``."""
    names = [DISPLAY.get(r["model"], r["model"]) for r in records]
    if len(names) == 1:
        return names[0]
    if len(set(names)) == 1:
        return f"{names[0]} ×{len(names)} ensemble"
    return " + ".join(names) + " ensemble"


@dataclasses.dataclass(frozen=True)
class GroupModel:
    """One model of an entry: members that share their samples, evaluated on the run's split."""

    predict_at: Callable[[float], ClipPredictions]
    model: torch.nn.Module
    checkpoint: str


def group_predictor(
    members: Sequence[Member],
    args: argparse.Namespace,
    data_root: Path,
    trained: dict[str, tuple[dict[str, Any], TrainConfig, DataSplits]],
    predictors: dict[tuple[str, ...], GroupModel],
) -> GroupModel:
    """The :class:`GroupModel` of trained members that share their samples: one
    checkpoint, or their :class:`Ensemble` (also one member with ``--tta``), saved in ``WORK_DIR/
    eval``. ``predict_at`` (:func:`split_predictor` on ``args.split``) remembers its predictions,
    and groups met before in the run are reused."""
    key = tuple(m.spec if m.weight == 1.0 else f"{m.spec}:weight={m.weight:g}" for m in members)
    if key in predictors:
        return predictors[key]
    records = [trained[m.spec][0] for m in members]
    config, splits = trained[members[0].spec][1:]
    paths = [r["checkpoint"] for r in records]
    device = records[0]["device"]
    if len(members) == 1 and not args.tta:
        model, meta = load_checkpoint(paths[0], map_location=device)
        checkpoint = paths[0]
    else:
        weights = member_weights(members)
        model, meta = Ensemble.from_checkpoints(
            paths, mirror=args.tta, weights=weights, map_location=device
        )
        out = stage_dir(args, "eval") / (slug("+".join(key)) + ("-tta" if args.tta else ""))
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = str(out / "ensemble.pt")
        save_checkpoint(checkpoint, model, meta)
    if args.split == "test":
        split, clips = splits.test_split, None
    else:
        split, clips = splits.val_split, splits.val_clips
    predict_at = functools.cache(
        split_predictor(
            model,
            data_root,
            config,
            meta["classes"],
            split=split,
            clips=clips,
            cache_dir=args.cache_dir,
            progress=not args.quiet,
        )
    )
    predictors[key] = GroupModel(predict_at, model, checkpoint)
    return predictors[key]


def job_threads(args: argparse.Namespace) -> int:
    """Torch threads of each training job: ``--threads``, or the cores shared out."""
    return args.threads or max(1, (os.cpu_count() or 1) // args.jobs)


def evaluation_threads(args: argparse.Namespace) -> int:
    """Torch threads of the evaluation after a ``--jobs`` training: every job's threads."""
    return min(os.cpu_count() or 1, job_threads(args) * args.jobs)


def _train_alone(member: Member, args: argparse.Namespace, data_root: Path) -> str:
    """:func:`train_member` in a worker process of :func:`train_members`, without progress
    bars; returns the member's spec."""
    train_member(member, argparse.Namespace(**{**vars(args), "quiet": True}), data_root)
    return member.spec


def train_members(
    members: Sequence[Member], args: argparse.Namespace, data_root: Path
) -> dict[str, tuple[dict[str, Any], TrainConfig, DataSplits]]:
    """Trains every member, ``args.jobs`` at a time: one after another in this process, or in
    that many worker processes with ``--threads`` torch threads each (default: the cores shared
    out), then read back here from their finished checkpoints. Returns each member's record,
    configuration and data splits by spec."""
    if args.jobs > 1 and len(members) > 1:
        threads = job_threads(args)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(args.jobs, len(members)),
            mp_context=context,
            initializer=pin_threads,
            initargs=(threads,),
        ) as pool:
            futures = [pool.submit(_train_alone, m, args, data_root) for m in members]
            done = as_completed(futures)
            for future in tqdm(done, total=len(futures), desc="models", disable=args.quiet):
                future.result()
        return {m.spec: train_member(m, args, data_root, resume=True) for m in members}
    return {m.spec: train_member(m, args, data_root) for m in members}


def run_entry(
    text: str,
    args: argparse.Namespace,
    data_root: Path,
    trained: dict[str, tuple[dict[str, Any], TrainConfig, DataSplits]],
    predictors: dict[tuple[str, ...], GroupModel],
) -> dict[str, Any]:
    """Fuses the trained members of one entry that share their samples into one model (several,
    or one with ``--tta``), fuses the scores of the resulting models and evaluates once on
    ``args.split``."""
    members = parse_entry(text)
    records = [trained[m.spec][0] for m in members]
    groups = sample_groups([trained[m.spec][1] for m in members])
    start = time.perf_counter()
    fused = [
        group_predictor([members[i] for i in g], args, data_root, trained, predictors)
        for g in groups
    ]
    classes = trained[members[0].spec][2].base.classes
    out = stage_dir(args, "eval") / (slug(text) + ("-tta" if args.tta else "")) / args.split
    # a group weighs the sum of its members' weights: the same weighted mean as one ensemble
    weights = member_weights(members)
    group_weights = None if weights is None else [sum(weights[i] for i in g) for g in groups]
    metrics, _ = report_split(
        lambda f: fuse_predictions([group.predict_at(f) for group in fused], group_weights),
        classes,
        out,
        early=not args.no_early,
        progress=not args.quiet,
    )
    models = [group.model for group in fused]
    checkpoints = [group.checkpoint for group in fused]
    checkpoint = checkpoints[0] if len(checkpoints) == 1 else checkpoints
    described = describe_models(models)
    update_report(out, {"checkpoint": checkpoint, **described})
    display = " + ".join(group_name([records[i] for i in g]) for g in groups)
    if len(groups) > 1:
        display += " score fusion"
    return {
        "model": display,
        "entry": text,
        "ensemble": len(members) > 1,
        "score_fusion": len(groups) > 1,
        "configs": [m.spec for m in members],
        "weights": [m.weight for m in members],
        "streams": ["+".join(r["features"]) for r in records],
        "tta": "mirror" if args.tta else None,
        "members": records,
        "checkpoint": checkpoint,
        "report_dir": str(out),
        "classes": list(classes),
        "num_clips": metrics["num_samples"],
        **{
            key: metrics.get(key)  # no early-recognition curve with --no-early
            for key in (
                "top1",
                "top5",
                "mean_class_acc",
                "macro_precision",
                "macro_recall",
                "macro_f1",
                "early_auc",
                "early_recognition",
            )
        },
        "per_class_recall": dict(
            zip(classes, np.asarray(metrics["per_class"]["recall"]).tolist(), strict=True)
        ),
        "confusion": np.asarray(metrics["confusion"]).tolist(),
        "parameters": sum(p.numel() for m in models for p in m.parameters()),
        "train_time_s": sum(r["train_time_s"] for r in records),
        "eval_time_s": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------------
# outputs


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


def plot_confusions(results: Sequence[dict[str, Any]], path: Path, split: str) -> None:
    """One row-normalised confusion matrix per entry, side by side, with the counts."""
    classes = results[0]["classes"]
    size = max(4.0, 0.4 * len(classes) + 2.5)
    fig = Figure(figsize=(size * len(results), size + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(results)))
    ticks = np.arange(len(classes))
    for ax, result in zip(axes, results, strict=True):
        cm = np.asarray(result["confusion"])
        rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(ticks, labels=classes, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(ticks, labels=classes, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        tta = ", mirror TTA" if result["tta"] else ""
        ax.set_title(f"{result['model']}{tta}\ntop-1 {result['top1']:.1%} ({split})", fontsize=9)
        for (i, j), count in np.ndenumerate(cm):
            if count:
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=6, color=color)
    _save(fig, path)


def plot_early(results: Sequence[dict[str, Any]], path: Path, split: str) -> None:
    """Every entry's early-recognition curve on one axis."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for result in results:
        curve = result["early_recognition"]
        tta = ", TTA" if result["tta"] else ""
        ax.plot(
            curve["fractions"],
            curve["accuracy"],
            marker="o",
            label=f"{result['model']}{tta} (AUC {curve['auc']:.3f})",
        )
    ax.set_ylim(0, 1)
    ax.set_xlabel("observed fraction of the clip")
    ax.set_ylabel(f"top-1 accuracy ({split})")
    ax.set_title("Penn Action early recognition")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def tables(results: Sequence[dict[str, Any]]) -> str:
    """The Markdown metric table and the early-recognition table."""
    rows = [
        {
            "model": r["model"],
            "configs": " + ".join(r["configs"]),
            "streams": ", ".join(r["streams"]),
            "TTA": r["tta"] or "-",
            "top-1 %": 100 * r["top1"],
            "mean class acc %": 100 * r["mean_class_acc"],
            "macro F1 %": 100 * r["macro_f1"],
            "early AUC %": "-" if r["early_auc"] is None else 100 * r["early_auc"],
            "train min": r["train_time_s"] / 60,
            "params": f"{r['parameters']:,}",
        }
        for r in results
    ]
    columns = list(rows[0])
    curves = [r for r in results if r["early_recognition"] is not None]
    if not curves:
        return format_table(rows, columns)
    fractions = curves[0]["early_recognition"]["fractions"]
    early = [
        {
            "model": r["model"] + (", TTA" if r["tta"] else ""),
            **{
                f"{f:.0%}": 100 * a
                for f, a in zip(fractions, r["early_recognition"]["accuracy"], strict=True)
            },
        }
        for r in curves
    ]
    early_columns = ["model", *(f"{f:.0%}" for f in fractions)]
    return (
        format_table(rows, columns)
        + "\n\nEarly recognition (top-1 % by observed fraction):\n\n"
        + format_table(early, early_columns)
    )


def device_description(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    devices = sorted({m["device"] for r in results for m in r["members"]})
    info: dict[str, Any] = {"devices": devices}
    if any(d.startswith("cuda") for d in devices) and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


# ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] + " " + __doc__.splitlines()[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--configs",
        nargs="+",
        default=list(DEFAULT_CONFIGS),
        metavar="ENTRY",
        help="one table row each: CONFIG[:KEY=VALUE...], several joined by '+' for an ensemble "
        f"(default: {' '.join(DEFAULT_CONFIGS)})",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="skeleton folder or Penn Action root"
    )
    parser.add_argument(
        "--penn-action",
        type=Path,
        default=PENN_ACTION,
        help="Penn Action root to convert when --data is not given (default: %(default)s)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="checkpoints, logs, reports (default: work_dirs/penn_action[_quick]; shared by "
        "--split val and test, so --resume evaluates models trained by either)",
    )
    parser.add_argument(
        "--overrides", nargs="*", default=[], metavar="KEY=VALUE", help="for every config"
    )
    parser.add_argument("--tta", action="store_true", help="mirror test-time augmentation")
    parser.add_argument(
        "--split",
        choices=("test", "val"),
        default="test",
        help="evaluate on the official test split (final figures) or on the held-out validation "
        "part of the training split (model selection)",
    )
    parser.add_argument(
        "--refit",
        action="store_true",
        help="train the final models on the whole training split, the validation part "
        "included, for the configured epochs and keep the last epoch (data.val_fraction=0)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from every last.pt")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--name",
        default=None,
        help="results file stem (default: penn_action, penn_action_quick; _val with --split val)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (of each job)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="models trained at once, each in a process of its own (default: %(default)s)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="dataset cache folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--no-early",
        action="store_true",
        help="skip the early-recognition curves (ten more passes over the clips per model)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs: expected a positive integer, got {args.jobs}")
    if args.refit and args.split == "val":
        parser.error("--refit trains on the validation part: it needs --split test")
    stem = "penn_action_quick" if args.quick else "penn_action"
    args.name = args.name or (f"{stem}_val" if args.split == "val" else stem)
    args.work_dir = args.work_dir or REPO / "work_dirs" / stem
    return args


def protocol(args: argparse.Namespace) -> str:
    """What the models learnt from and what they are evaluated on, in words."""
    if args.split == "val":
        return (
            "trained on the official training split minus a stratified validation part; "
            "evaluated on that validation part (model selection; the test split is not used)"
        )
    if args.refit:
        return (
            "trained on the whole official training split for the configured epochs (settings "
            "chosen on a stratified validation part of it), last epoch; evaluated once on the "
            "test split"
        )
    return (
        "trained on the official training split minus a stratified validation part (which "
        "selects the best epoch); evaluated once on the test split"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        pin_threads(args.threads)
    try:
        entries = {text: parse_entry(text) for text in args.configs}
        data_root = prepare_data(args)
        for text, members in entries.items():
            check_members([member_config(m, args, data_root) for m in members], text)
    except (ValueError, FileNotFoundError) as e:
        print(f"penn_action: error: {e}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    members = list(dict.fromkeys(m for ms in entries.values() for m in ms))
    trained = train_members(members, args, data_root)
    training_wall = time.perf_counter() - start
    if args.jobs > 1:  # the cores the training jobs shared now evaluate
        pin_threads(evaluation_threads(args))
    predictors: dict[tuple[str, ...], GroupModel] = {}
    results = [run_entry(text, args, data_root, trained, predictors) for text in entries]
    info = {**machine(), **device_description(results)}
    record = {
        "benchmark": "penn_action",
        "protocol": protocol(args),
        "refit": args.refit,
        "split": args.split,
        "data": str(data_root),
        "quick": args.quick,
        "tta": "mirror" if args.tta else None,
        "overrides": list(args.overrides),
        "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
        "machine": info,
        "jobs": args.jobs,
        "training_wall_s": training_wall,
        "total_time_s": time.perf_counter() - start,
        "results": results,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = write_json(args.output_dir / f"{args.name}.json", record)
    plot_confusions(results, args.output_dir / f"{args.name}_confusion.png", args.split)
    if not args.no_early:
        plot_early(results, args.output_dir / f"{args.name}_early.png", args.split)
    print(
        f"Penn Action, {args.split} split, {results[0]['num_clips']} clips; machine: {info['cpu']}"
        f" ({info['cores']} cores), devices {', '.join(info['devices'])}"
        + (f", {info['gpu']}" if "gpu" in info else "")
    )
    print(tables(results))
    print(
        f"training: {len(members)} models in {training_wall / 60:.1f} min of wall time, "
        f"{args.jobs} at a time"
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
