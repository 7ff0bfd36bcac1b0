"""A whole training run, as ``skelgraph train`` does it: open the data (a skeleton folder or a Penn
Action root) and hold out its validation part (:func:`~skelgraph.train.data.split_data`), build the
model, fit it (:class:`~skelgraph.train.trainer.Trainer`), and evaluate ``best.pt`` on the test
split, or the validation part when there is none (:func:`~skelgraph.train.evaluate.evaluate_split`).
:func:`train_streams` does it once per input stream and fuses the models into a weighted
ensemble (``skelgraph train --streams``). :func:`cross_validate` does either once per fold of the
training clips and summarises the folds' validation metrics (``skelgraph train --cv K``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from skelgraph.models import create
from skelgraph.models.checkpoint import load_weights, make_meta, read_checkpoint, save_checkpoint
from skelgraph.models.ensemble import Ensemble
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import TrainConfig, apply_overrides, save_config
from skelgraph.train.data import DataSplits, inference_settings, split_data
from skelgraph.train.distributed import DistContext, barrier, init_distributed, main_first
from skelgraph.train.evaluate import evaluate_split
from skelgraph.train.report import write_cv_report
from skelgraph.train.streams import Stream
from skelgraph.train.trainer import Trainer
from skelgraph.utils import PathLike, resolve_device, seed_everything

__all__ = ["CV_FILE", "cross_validate", "prepare", "train", "train_streams"]

#: the summary of a cross-validation in its work dir (:func:`cross_validate`)
CV_FILE = "cv.json"


def prepare(
    config: TrainConfig,
    data_root: PathLike,
    work_dir: PathLike,
    *,
    ctx: DistContext | None = None,
    cache_dir: PathLike | None = None,
    progress: bool = True,
) -> tuple[Trainer, DataSplits]:
    """Seeds, opens the data (:func:`split_data`), builds the model and its checkpoint meta, and
    returns the :class:`Trainer` with the data splits (arguments as for :func:`train`)."""
    ctx = ctx or DistContext(device=resolve_device(config.device))
    seed_everything(config.seed)
    with main_first(ctx):
        data = split_data(data_root, config, cache_dir, progress=progress and ctx.is_main)
    base = data.base
    model = create(
        config.model.name,
        num_classes=base.num_classes,
        layout=base.layout,
        in_channels=base.in_channels,
        **config.model.args,
    )
    meta = make_meta(
        model=config.model.name,
        model_args=model.config,
        classes=base.classes,
        layout=base.layout,
        in_channels=base.in_channels,
        window=config.data.window,
        preprocess=PreprocessConfig(**config.data.preprocess).to_dict(),
        inference=inference_settings(config),
    )
    trainer = Trainer(
        model, config, data.train, data.val, work_dir, meta, ctx=ctx, progress=progress
    )
    return trainer, data


def train(
    config: TrainConfig,
    data_root: PathLike,
    work_dir: PathLike,
    *,
    resume: bool = False,
    cache_dir: PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains ``config`` on ``data_root`` and evaluates the best checkpoint.

    Joins the ``torchrun`` process group when there is one. Writes ``config.yaml`` (the resolved
    configuration), the :class:`Trainer` files and the report of the final evaluation in
    ``work_dir/test`` (the test split), else ``work_dir/val`` (the validation clips, and always
    for a cross-validation fold, ``config.data.folds``), else ``work_dir/train``; prints how the
    validation part was chosen (with ``progress``) and the metric table on rank 0.

    Args:
        config: The training configuration.
        data_root: A skeleton folder or a Penn Action root.
        work_dir: Output folder.
        resume: Continue from ``work_dir/last.pt`` when it exists.
        cache_dir: Dataset cache folder (default: the datasets' user cache folder).
        progress: Show progress bars.

    Returns:
        The final evaluation metrics plus ``"fit"`` (see :meth:`Trainer.fit`) and
        ``"validation"``: ``{"rule", "groups"}``, how the validation part was chosen and the
        clip groups it holds out (:class:`~skelgraph.train.data.DataSplits`).
    """
    ctx = init_distributed(config.device)
    work_dir = Path(work_dir)
    if ctx.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, work_dir / "config.yaml")
    trainer, data = prepare(
        config, data_root, work_dir, ctx=ctx, cache_dir=cache_dir, progress=progress
    )
    if ctx.is_main and progress:
        print(f"validation: {data.val_rule}")
    fit = trainer.fit(resume=resume)
    load_weights(trainer.module, read_checkpoint(trainer.best_path, ctx.device)["state_dict"])
    metrics, table, split = _final_evaluation(
        trainer.module, data, config, data_root, work_dir, ctx, cache_dir, progress
    )
    if ctx.is_main:
        print(f"{split} metrics of {trainer.best_path} (epoch {fit['best_epoch']}):\n{table}")
    metrics["fit"] = {k: v for k, v in fit.items() if k != "history"}
    metrics["validation"] = _validation(data)
    return metrics


def _validation(data: DataSplits) -> dict[str, Any]:
    """How the validation part of ``data`` was chosen, for the returned metrics."""
    return {"rule": data.val_rule, "groups": data.val_groups}


def _final_evaluation(
    model: nn.Module,
    data: DataSplits,
    config: TrainConfig,
    data_root: PathLike,
    work_dir: Path,
    ctx: DistContext,
    cache_dir: PathLike | None,
    progress: bool,
) -> tuple[dict[str, Any], str, str]:
    """Evaluates ``model`` on the test split, else the validation clips, else the training
    split, with its report in ``work_dir/<split>``; returns the metrics, the table and the
    split's name."""
    if data.test_split is not None:
        split, clips, name = data.test_split, None, "test"
    elif data.val is not None:
        split, clips, name = data.val_split, data.val_clips, "val"
    else:
        split, clips, name = data.pool_split, None, "train"
    metrics, table = evaluate_split(
        model,
        data_root,
        config,
        data.base.classes,
        work_dir / name,
        split=split,
        clips=clips,
        ctx=ctx,
        cache_dir=cache_dir,
        early=config.early_recognition,
        progress=progress,
    )
    return metrics, table, name


def train_streams(
    config: TrainConfig,
    streams: Sequence[Stream],
    data_root: PathLike,
    work_dir: PathLike,
    *,
    resume: bool = False,
    cache_dir: PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains one model per input stream and fuses them into a weighted ensemble.

    Every stream is :func:`train` of ``config`` with the stream's ``model.args.features``, in
    ``work_dir/<stream name>`` (the same seed, so the same validation clips); their ``best.pt``
    are then fused with the streams' weights (:meth:`Ensemble.from_checkpoints`) into
    ``work_dir/ensemble.pt``, which is evaluated as :func:`train` evaluates one model (report in
    ``work_dir/test``, ``val`` or ``train``).

    Args:
        config: The training configuration of every stream's model.
        streams: The streams (:func:`~skelgraph.train.streams.parse_streams`).
        data_root, work_dir, resume, cache_dir, progress: as for :func:`train`.

    Returns:
        The ensemble's evaluation metrics plus ``"streams"``: every stream's metrics (with its
        ``"fit"``) by stream name.
    """
    work_dir = Path(work_dir)
    per_stream = {}
    for stream in streams:
        per_stream[stream.name] = train(
            apply_overrides(config, [stream.override]),
            data_root,
            work_dir / stream.name,
            resume=resume,
            cache_dir=cache_dir,
            progress=progress,
        )
    ctx = init_distributed(config.device)
    paths = [work_dir / stream.name / "best.pt" for stream in streams]
    weights = [stream.weight for stream in streams]
    model, meta = Ensemble.from_checkpoints(paths, weights=weights, map_location=ctx.device)
    out = work_dir / "ensemble.pt"
    if ctx.is_main:
        save_checkpoint(out, model, meta)
    barrier(ctx)
    with main_first(ctx):
        data = split_data(data_root, config, cache_dir, progress=progress and ctx.is_main)
    metrics, table, split = _final_evaluation(
        model, data, config, data_root, work_dir, ctx, cache_dir, progress
    )
    if ctx.is_main:
        described = ", ".join(f"{s.name} ×{s.weight:g}" for s in streams)
        print(f"{split} metrics of {out} ({len(streams)} streams: {described}):\n{table}")
    metrics["streams"] = per_stream
    metrics["validation"] = _validation(data)
    return metrics


def cross_validate(
    config: TrainConfig,
    data_root: PathLike,
    work_dir: PathLike,
    *,
    streams: Sequence[Stream] | None = None,
    resume: bool = False,
    cache_dir: PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """K-fold cross-validation of ``config`` (``K = config.data.folds``) on the training clips of
    ``data_root``.

    Fold ``i`` is :func:`train` (with ``streams``: :func:`train_streams`) of ``config`` with
    ``data.fold=i`` in ``work_dir/fold<i>``: trained on the other folds, it selects ``best.pt``
    on fold ``i`` and is finally evaluated there (report in ``work_dir/fold<i>/val``); the test
    split is never used. The folds are whole groups of clips when the clips have groups, else
    stratified by class (:func:`~skelgraph.train.data.split_data`). With ``resume`` every fold
    continues from its own ``last.pt`` (a finished fold is only evaluated again). Then
    ``work_dir/cv.json`` gets every fold's validation metrics with their mean and sample
    standard deviation (:func:`~skelgraph.train.report.write_cv_report`), and rank 0 prints
    their table.

    Args:
        config: The training configuration, with ``data.folds`` set.
        data_root, work_dir, resume, cache_dir, progress: as for :func:`train`.
        streams: Train one model per stream in every fold and fuse them (as
            :func:`train_streams`); the folds' metrics are then the ensemble's.

    Returns:
        The ``cv.json`` record: ``k`` (the number of folds), ``grouped`` (whether the folds hold
        whole groups), ``seed``, ``monitor``, ``streams`` (names, or :obj:`None`), ``"folds"``
        (per fold: ``fold``, ``work_dir`` relative to ``work_dir``, ``best_epoch``,
        ``val_groups`` and the scalar validation ``metrics``), ``"mean"`` and ``"std"``.

    Raises:
        ValueError: When ``config.data.folds`` is not set.
    """
    folds = config.data.folds
    if folds is None:
        raise ValueError("cross_validate: config.data.folds: expected a number of folds, got null")
    work_dir = Path(work_dir)
    options = {"resume": resume, "cache_dir": cache_dir, "progress": progress}
    ctx = init_distributed(config.device)
    records = []
    for i in range(folds):
        fold_config = apply_overrides(config, [f"data.fold={i}"])
        fold_dir = work_dir / f"fold{i}"
        if ctx.is_main and progress:
            print(f"cross-validation: fold {i} (folds 0-{folds - 1}) in {fold_dir}")
        if streams is None:
            metrics = train(fold_config, data_root, fold_dir, **options)
        else:
            metrics = train_streams(fold_config, streams, data_root, fold_dir, **options)
        records.append(
            {
                "fold": i,
                "work_dir": fold_dir.name,
                "best_epoch": metrics.get("fit", {}).get("best_epoch"),
                "val_groups": metrics["validation"]["groups"],
                "metrics": metrics,
            }
        )
    summary = {
        "k": folds,
        "grouped": records[0]["val_groups"] is not None,
        "seed": config.seed,
        "monitor": config.monitor,
        "streams": None if streams is None else [s.name for s in streams],
    }
    path = work_dir / CV_FILE if ctx.is_main else None
    summary, table = write_cv_report(records, path, **summary)
    if ctx.is_main:
        kind = "grouped" if summary["grouped"] else "stratified"
        print(f"{folds}-fold cross-validation ({kind}), validation metrics:\n{table}")
        print(f"written: {work_dir / CV_FILE}")
    barrier(ctx)
    return summary
