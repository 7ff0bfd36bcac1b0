"""A whole training run, as ``skelgraph train`` does it: open the data (a skeleton folder or a Penn
Action root) and hold out its validation part (:func:`~skelgraph.train.data.split_data`), build the
model, fit it (:class:`~skelgraph.train.trainer.Trainer`), and evaluate ``best.pt`` on the test
split, or the validation part when there is none (:func:`~skelgraph.train.evaluate.evaluate_split`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skelgraph.models import create
from skelgraph.models.checkpoint import load_weights, make_meta, read_checkpoint
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import TrainConfig, save_config
from skelgraph.train.data import DataSplits, inference_settings, split_data
from skelgraph.train.distributed import DistContext, init_distributed, main_first
from skelgraph.train.evaluate import evaluate_split
from skelgraph.train.trainer import Trainer
from skelgraph.utils import PathLike, resolve_device, seed_everything

__all__ = ["prepare", "train"]


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
    ``work_dir/test`` (the test split), else ``work_dir/val`` (the validation clips), else
    ``work_dir/train``; prints the metric table on rank 0.

    Args:
        config: The training configuration.
        data_root: A skeleton folder or a Penn Action root.
        work_dir: Output folder.
        resume: Continue from ``work_dir/last.pt`` when it exists.
        cache_dir: Dataset cache folder (default: the datasets' user cache folder).
        progress: Show progress bars.

    Returns:
        The final evaluation metrics plus ``"fit"`` (see :meth:`Trainer.fit`).
    """
    ctx = init_distributed(config.device)
    work_dir = Path(work_dir)
    if ctx.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, work_dir / "config.yaml")
    trainer, data = prepare(
        config, data_root, work_dir, ctx=ctx, cache_dir=cache_dir, progress=progress
    )
    fit = trainer.fit(resume=resume)
    load_weights(trainer.module, read_checkpoint(trainer.best_path, ctx.device)["state_dict"])
    if data.test_split is not None:
        split, clips, out = data.test_split, None, work_dir / "test"
    elif data.val is not None:
        split, clips, out = data.val_split, data.val_clips, work_dir / "val"
    else:
        split, clips, out = data.pool_split, None, work_dir / "train"
    metrics, table = evaluate_split(
        trainer.module,
        data_root,
        config,
        data.base.classes,
        out,
        split=split,
        clips=clips,
        ctx=ctx,
        cache_dir=cache_dir,
        early=config.early_recognition,
        progress=progress,
    )
    if ctx.is_main:
        print(f"{out.name} metrics of {trainer.best_path} (epoch {fit['best_epoch']}):\n{table}")
    metrics["fit"] = {k: v for k, v in fit.items() if k != "history"}
    return metrics
