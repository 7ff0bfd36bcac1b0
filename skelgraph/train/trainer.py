"""One trainer for every registered model, and the data plumbing of a training run.

:class:`Trainer` runs the epochs: seeded shuffling and augmentation, autocast (bfloat16 on CPUs
with native bf16, bf16/fp16 on CUDA), gradient clipping, per-iteration learning-rate schedule,
validation, ``best.pt`` (by ``config.monitor``) and ``last.pt`` checkpoints, resume, a JSONL log
and PNG curves. Under ``torchrun`` it trains with DistributedDataParallel and only rank 0 writes or
prints.

:func:`train` is the whole run behind ``skelgraph train``: open the data (a skeleton folder or a
Penn Action root), hold out a stratified validation part of the training clips (by clip, never by
window) unless the data has a ``val`` split, build the model, fit, and evaluate ``best.pt`` on the
test split (or the validation part when there is none).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from torch_geometric.transforms import Compose
from tqdm.auto import tqdm

from skelgraph.augment import (
    GaussianJitter,
    RandomMirror,
    RandomRotation,
    RandomScale,
    RandomTranslation,
)
from skelgraph.data import (
    PennAction,
    SkeletonDataset,
    SkeletonFolder,
    make_loader,
    stratified_split,
    to_dense,
)
from skelgraph.io import atomic_write
from skelgraph.layouts import Layout
from skelgraph.models import create
from skelgraph.models.checkpoint import (
    load_weights,
    make_meta,
    read_checkpoint,
    save_checkpoint,
)
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import DataConfig, TrainConfig, config_to_dict, save_config
from skelgraph.train.distributed import (
    DistContext,
    all_reduce_sum,
    autocast_dtype,
    barrier,
    init_distributed,
    main_first,
    make_sampler,
    resolve_device,
    wrap_model,
)
from skelgraph.train.evaluate import (
    ClipPredictions,
    early_recognition,
    evaluate,
    predict,
    prediction_metrics,
    write_report,
)
from skelgraph.train.optim import build_optimizer, build_scheduler
from skelgraph.train.plots import plot_history

__all__ = [
    "DataSplits",
    "Trainer",
    "epoch_seed",
    "evaluate_split",
    "inference_settings",
    "is_penn_action",
    "open_dataset",
    "prepare",
    "report_split",
    "seed_everything",
    "split_data",
    "split_predictor",
    "subset_by_clips",
    "train",
    "train_transform",
]

PathLike = str | os.PathLike[str]


# ------------------------------------------------------------------------------------------------
# seeding


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for one epoch on one rank, independent across ``(seed, epoch, rank)``.

    Reseeding at every epoch start makes a resumed run draw the same augmentation and shuffling as
    an uninterrupted one (exactly so with ``num_workers=0``).
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _seed_worker(worker_id: int) -> None:
    """Seeds NumPy and ``random`` in a DataLoader worker from its torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------------------------------------
# data


def is_penn_action(root: PathLike) -> bool:
    """Whether ``root`` is a Penn Action root (``labels/*.mat``) rather than a skeleton folder."""
    labels = Path(root) / "labels"
    return labels.is_dir() and any(labels.glob("*.mat"))


def train_transform(data: DataConfig, layout: Layout) -> Compose:
    """The switched-on geometric augmentations of ``data`` (rotation, scale, translation, mirror,
    jitter; default magnitudes of :mod:`skelgraph.augment`), in that order."""
    transforms = []
    if data.rotation:
        transforms.append(RandomRotation())
    if data.scale:
        transforms.append(RandomScale())
    if data.translation:
        transforms.append(RandomTranslation())
    if data.mirror:
        transforms.append(RandomMirror(layout))
    if data.jitter:
        transforms.append(GaussianJitter())
    return Compose(transforms)


def open_dataset(
    root: PathLike,
    data: DataConfig,
    *,
    split: str | None,
    train: bool = False,
    classes: Sequence[str] | None = None,
    observed_fraction: float = 1.0,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> SkeletonDataset:
    """A :class:`PennAction` or :class:`SkeletonFolder` dataset of ``root`` with ``data`` settings.

    Args:
        root: A Penn Action root (``labels/*.mat``) or a skeleton folder (``labels.csv``).
        data: Window, sampling, crop ratios, augmentation switches and preprocessing.
        split: Split to select (``None`` = every clip).
        train: Training mode: random crop with ``p_interval_train`` and the switched-on
            augmentations; otherwise the deterministic ``p_interval_val`` crop.
        classes: Class names in label order (default: the dataset's own).
        observed_fraction: Keep the first fraction of every clip (early recognition).
        cache_dir: Where the preprocessed cache lives (default: the datasets' user cache folder).
        progress: Show a progress bar while the cache is built.
    """
    kwargs: dict[str, Any] = {
        "classes": classes,
        "window": data.window,
        "sampling": data.sampling,
        "stride": data.stride,
        "train": train,
        "p_interval": data.p_interval_train if train else data.p_interval_val,
        "preprocess": PreprocessConfig(**data.preprocess),
        "observed_fraction": observed_fraction,
        "cache_dir": cache_dir,
        "progress": progress,
    }
    cls = PennAction if is_penn_action(root) else SkeletonFolder
    dataset = cls(root, split, **kwargs)
    if train:
        dataset.transform = train_transform(data, dataset.layout)
    return dataset


def subset_by_clips(dataset: SkeletonDataset, clips: np.ndarray) -> Subset:
    """The samples of ``dataset`` whose clip id is in ``clips`` (every window of those clips)."""
    return Subset(dataset, np.flatnonzero(np.isin(dataset.clip_ids, clips)).tolist())


@dataclass
class DataSplits:
    """The datasets of a training run.

    Attributes:
        train: Training samples (augmented).
        val: Validation samples, or :obj:`None` when ``val_fraction`` is 0 and there is no split.
        base: An evaluation-mode dataset of the training pool (layout, classes, channels).
        pool_split: The split of the training pool: ``"train"``, or :obj:`None` (every clip) when
            no clip is marked ``train``.
        val_split: The split holding the validation clips (``"val"`` or ``pool_split``).
        val_clips: The validation clip ids within ``val_split`` (:obj:`None` = all of them).
        test_split: ``"test"`` when the data has test clips besides training clips, else
            :obj:`None`.
    """

    train: Dataset
    val: Dataset | None
    base: SkeletonDataset
    pool_split: str | None
    val_split: str | None
    val_clips: np.ndarray | None
    test_split: str | None


def _split_size(root: PathLike, data: DataConfig, split: str, **kwargs: Any) -> int:
    cls = PennAction if is_penn_action(root) else SkeletonFolder
    if split not in cls.SPLITS:
        return 0
    return open_dataset(root, data, split=split, **kwargs).num_clips


def split_data(
    root: PathLike,
    config: TrainConfig,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> DataSplits:
    """Training, validation and test data of ``root`` (see the module docstring).

    The training pool is the ``train`` split (every clip when nothing is marked ``train``). The
    validation part is the ``val`` split when there is one, otherwise a stratified
    ``data.val_fraction`` of the pool's clips (:func:`stratified_split`, grouped by clip).
    ``cache_dir`` and ``progress`` are passed to :func:`open_dataset`.
    """
    data = config.data
    kwargs = {"cache_dir": cache_dir, "progress": progress}
    has_train = _split_size(root, data, "train", **kwargs) > 0
    pool_split = "train" if has_train else None
    base = open_dataset(root, data, split=pool_split, **kwargs)
    pool = open_dataset(root, data, split=pool_split, train=True, **kwargs)
    test_split = "test" if has_train and _split_size(root, data, "test", **kwargs) else None
    if has_train and _split_size(root, data, "val", **kwargs):
        val = open_dataset(root, data, split="val", classes=base.classes, **kwargs)
        return DataSplits(pool, val, base, pool_split, "val", None, test_split)
    if data.val_fraction == 0:
        return DataSplits(pool, None, base, pool_split, None, None, test_split)
    train_clips, val_clips = stratified_split(base.clip_labels, data.val_fraction, config.seed)
    return DataSplits(
        train=subset_by_clips(pool, train_clips),
        val=subset_by_clips(base, val_clips),
        base=base,
        pool_split=pool_split,
        val_split=pool_split,
        val_clips=val_clips,
        test_split=test_split,
    )


def inference_settings(config: TrainConfig) -> dict[str, Any]:
    """How a checkpoint's model expects evaluation samples: stored in ``meta["inference"]``."""
    return {
        "sampling": config.data.sampling,
        "stride": config.data.stride,
        "p_interval": list(config.data.p_interval_val),
        "reduce": config.reduce,
    }


# ------------------------------------------------------------------------------------------------
# trainer


class Trainer:
    """Fits a ``SkeletonModel`` with the settings of a :class:`TrainConfig`.

    Files in ``work_dir`` (rank 0 only): ``last.pt`` (model, optimizer, scheduler, grad scaler,
    epoch, best metric; every epoch), ``best.pt`` (the epoch with the highest validation
    ``config.monitor``; the last epoch when there is no validation data), ``log.jsonl`` (one record
    per epoch: ``epoch``, ``lr`` of its last step, ``epoch_time``, ``train`` = every loss term and
    ``acc``, ``val`` = metrics and loss terms, ``best``) and ``curves.png``.

    Args:
        model: The model (unwrapped; the trainer moves and wraps it).
        config: The training configuration.
        train_set: Training samples (``Data`` with ``x``, ``y``, ``frame_mask``, ``clip_id``).
        val_set: Validation samples, or :obj:`None`.
        work_dir: Output folder (created).
        meta: Checkpoint meta (:func:`~skelgraph.train.checkpoint.make_meta`).
        ctx: Process context; default: one process on ``config.device``.
        progress: Show tqdm bars and a summary line per epoch (rank 0).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_set: Dataset,
        val_set: Dataset | None,
        work_dir: PathLike,
        meta: Mapping[str, Any],
        *,
        ctx: DistContext | None = None,
        progress: bool = True,
    ) -> None:
        if len(train_set) == 0:
            raise ValueError("train_set: expected at least one sample, got none")
        self.config = config
        self.ctx = ctx or DistContext(device=resolve_device(config.device))
        self.meta = dict(meta)
        self.work_dir = Path(work_dir)
        self.progress = progress and self.ctx.is_main
        self.module = model.to(self.ctx.device)
        self.model = wrap_model(self.module, self.ctx)

        self.train_sampler = make_sampler(train_set, self.ctx, shuffle=True, seed=config.seed)
        self.train_loader = make_loader(
            train_set,
            config.batch_size,
            shuffle=self.train_sampler is None,
            sampler=self.train_sampler,
            num_workers=config.num_workers,
            seed=config.seed,
            worker_init_fn=_seed_worker,
        )
        self.val_loader = None
        if val_set is not None and len(val_set):
            self.val_loader = make_loader(
                val_set,
                config.eval_batch_size or config.batch_size,
                shuffle=False,
                sampler=make_sampler(val_set, self.ctx, shuffle=False),
                num_workers=config.num_workers,
            )

        self.optimizer = build_optimizer(self.module, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, len(self.train_loader))
        self.dtype = autocast_dtype(config.precision, self.ctx.device)
        self.scaler = torch.amp.GradScaler(
            self.ctx.device.type, enabled=self.dtype == torch.float16
        )
        self.epoch = 0
        self.lr = self.optimizer.param_groups[0]["lr"]  # the rate of the latest step
        self.best_metric = -math.inf
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []

    # -- paths ------------------------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        """``work_dir/last.pt``."""
        return self.work_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        """``work_dir/best.pt``."""
        return self.work_dir / "best.pt"

    @property
    def log_path(self) -> Path:
        """``work_dir/log.jsonl``."""
        return self.work_dir / "log.jsonl"

    # -- one epoch --------------------------------------------------------------------------------

    def _autocast(self) -> Any:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.dtype)

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()

    def train_epoch(self) -> dict[str, float]:
        """Trains one epoch; returns the sample-weighted mean of every loss term and ``acc``."""
        seed = epoch_seed(self.config.seed, self.epoch, self.ctx.rank)
        seed_everything(seed)
        self.train_loader.generator.manual_seed(seed)
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(self.epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        count = 0
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            leave=False,
            disable=not self.progress,
        )
        for step, batch in enumerate(bar):
            batch = batch.to(self.ctx.device)
            x, mask = to_dense(batch)
            with self._autocast():
                out = self.model(x, mask)
                losses = self.module.loss(out, x, batch.y, mask)
            loss = losses["loss"]
            value = loss.item()
            if not math.isfinite(value):
                terms = {k: float(v) for k, v in losses.items()}
                raise FloatingPointError(
                    f"epoch {self.epoch + 1} step {step + 1}: non-finite loss {terms}"
                )
            self._step(loss)
            size = batch.num_graphs
            for name, term in losses.items():
                sums[name] = sums.get(name, 0.0) + term.detach().double() * size
            with torch.no_grad():
                video = out.video_logits(self.config.reduce, mask)
                correct += (video.argmax(-1) == batch.y).sum()
            count += size
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{self.lr:.2e}")
        names = list(sums)
        totals = torch.stack([*(sums[k] for k in names), correct, correct.new_tensor(count)])
        totals = all_reduce_sum(totals, self.ctx).cpu()
        stats = {name: float(totals[i] / totals[-1]) for i, name in enumerate(names)}
        stats["acc"] = float(totals[-2] / totals[-1])
        return stats

    def validate(self) -> dict[str, Any]:
        """Clip-level validation metrics and loss terms (empty without validation data)."""
        if self.val_loader is None:
            return {}
        metrics = evaluate(
            self.module,
            self.val_loader,
            ctx=self.ctx,
            reduce=self.config.reduce,
            dtype=self.dtype,
            with_loss=True,
            desc="validate",
            progress=self.progress,
        )
        return {k: v for k, v in metrics.items() if k not in ("confusion", "per_class")}

    # -- checkpoints ------------------------------------------------------------------------------

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "config": config_to_dict(self.config),
        }

    def resume(self, path: PathLike | None = None) -> bool:
        """Restores model, optimizer, scheduler, scaler, epoch and best metric from ``last.pt``.

        The log is cut back to the restored epoch (a crash between the checkpoint and the log
        line leaves no duplicate). Returns whether a checkpoint was found.
        """
        path = Path(path) if path is not None else self.last_path
        if not path.is_file():
            return False
        state = read_checkpoint(path, map_location=self.ctx.device)
        load_weights(self.module, state["state_dict"], source=f"checkpoint {path}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best_metric = float(state["best_metric"])
        self.best_epoch = state["best_epoch"]
        if self.log_path.is_file():
            records = [json.loads(line) for line in self.log_path.read_text().splitlines() if line]
            self.history = [r for r in records if r["epoch"] <= self.epoch]
        if self.ctx.is_main:
            self._write_log()
        return True

    def _write_log(self) -> None:
        with atomic_write(self.log_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.history)

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Trains from the current epoch (``last.pt``'s with ``resume``) to ``config.epochs``.

        Returns:
            ``{"best_epoch", "best_metric", "monitor", "history"}``.
        """
        if self.ctx.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.ctx)
        if resume:
            self.resume()
        monitor = self.config.monitor
        epochs = range(self.epoch, self.config.epochs)
        bar = tqdm(epochs, desc="training", unit="epoch", disable=not self.progress)
        for _ in bar:
            start = time.perf_counter()
            train_stats = self.train_epoch()
            val_stats = self.validate()
            self.epoch += 1
            if val_stats and monitor not in val_stats:
                raise ValueError(
                    f"monitor: expected one of the validation metrics {sorted(val_stats)}, "
                    f"got {monitor!r}"
                )
            improved = not val_stats or val_stats[monitor] > self.best_metric
            if improved:  # without validation data the latest epoch is the best
                self.best_epoch = self.epoch
                self.best_metric = float(val_stats.get(monitor, math.nan))
            record = {
                "epoch": self.epoch,
                "lr": self.lr,
                "epoch_time": time.perf_counter() - start,
                "train": train_stats,
                "val": val_stats,
                "best": improved,
            }
            self.history.append(record)
            if self.ctx.is_main:
                self._save_epoch(improved)
            if self.progress:
                bar.write(_summary(record, monitor))
            bar.set_postfix(best=f"{self.best_metric:.4f}")
            barrier(self.ctx)
        return {
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "monitor": monitor,
            "history": self.history,
        }

    def _save_epoch(self, improved: bool) -> None:
        save_checkpoint(
            self.last_path,
            self.module,
            self.meta,
            optimizer=self.optimizer,
            epoch=self.epoch,
            extra=self._trainer_state(),
        )
        if improved:
            save_checkpoint(self.best_path, self.module, self.meta, epoch=self.epoch)
        self._write_log()
        plot_history(self.history, self.work_dir / "curves.png")


def _summary(record: Mapping[str, Any], monitor: str) -> str:
    train = " ".join(f"{k}={v:.4f}" for k, v in record["train"].items())
    line = f"epoch {record['epoch']}: {train} lr={record['lr']:.2e} ({record['epoch_time']:.1f}s)"
    if record["val"]:
        line += f" | val {monitor}={record['val'][monitor]:.4f}"
        line += " *" if record["best"] else ""
    return line


# ------------------------------------------------------------------------------------------------
# a whole run


def split_predictor(
    model: nn.Module,
    root: PathLike,
    config: TrainConfig,
    classes: Sequence[str],
    *,
    split: str | None,
    clips: np.ndarray | None = None,
    ctx: DistContext | None = None,
    cache_dir: PathLike | None = None,
    progress: bool = True,
) -> Callable[[float], ClipPredictions]:
    """The predictions of ``model`` on a split of ``root`` as a function of the observed fraction:
    ``predict_at(f)`` runs the model over the split's clips cut to their first fraction ``f``
    (``1.0``: whole clips), sampled with ``config.data`` (evaluation crop, window, sampling,
    preprocessing) and scored with ``config.reduce`` under ``config.precision``.

    Args:
        model: The trained model.
        root: The data root.
        config: The model's data settings, ``reduce`` and ``precision``.
        classes: Class names in logit order.
        split: The split to predict.
        clips: Restrict to these clip ids of the split (a held-out validation part).
        ctx: Process context.
        cache_dir: Dataset cache folder.
        progress: Show progress bars (rank 0).
    """
    ctx = ctx or DistContext(device=resolve_device(config.device))
    dtype = autocast_dtype(config.precision, ctx.device)

    def predict_at(fraction: float) -> ClipPredictions:
        with main_first(ctx):
            dataset: Dataset = open_dataset(
                root,
                config.data,
                split=split,
                classes=classes,
                observed_fraction=fraction,
                cache_dir=cache_dir,
                progress=progress and ctx.is_main,
            )
        if clips is not None:
            dataset = subset_by_clips(dataset, clips)
        sampler = make_sampler(dataset, ctx, shuffle=False)
        batch_size = config.eval_batch_size or config.batch_size
        loader = make_loader(dataset, batch_size, shuffle=False, sampler=sampler)
        return predict(
            model,
            loader,
            ctx=ctx,
            reduce=config.reduce,
            dtype=dtype,
            desc="test" if fraction == 1.0 else f"{fraction:.0%} observed",
            progress=progress,
        )

    return predict_at


def report_split(
    predict_at: Callable[[float], ClipPredictions],
    classes: Sequence[str],
    out_dir: PathLike,
    *,
    ctx: DistContext | None = None,
    early: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], str]:
    """Metrics of the predictions ``predict_at(1.0)`` (:func:`split_predictor`, or several fused
    with :func:`~skelgraph.train.evaluate.fuse_predictions`), the early-recognition curve over
    ``predict_at`` with ``early``, and the report files in ``out_dir`` (rank 0 writes them).

    Returns:
        ``(metrics, table)``; the table is empty on other ranks.
    """
    ctx = ctx or DistContext()
    whole = predict_at(1.0)
    metrics = prediction_metrics(whole)
    curve = None
    if early:
        curve = early_recognition(
            lambda f: whole if f == 1.0 else predict_at(f), progress=progress and ctx.is_main
        )
    table = ""
    if ctx.is_main:
        table = write_report(metrics, classes, out_dir, curve)
    if curve is not None:
        metrics["early_recognition"] = curve
        metrics["early_auc"] = curve["auc"]
    return metrics, table


def evaluate_split(
    model: nn.Module,
    root: PathLike,
    config: TrainConfig,
    classes: Sequence[str],
    out_dir: PathLike,
    *,
    split: str | None,
    clips: np.ndarray | None = None,
    ctx: DistContext | None = None,
    cache_dir: PathLike | None = None,
    early: bool = True,
    progress: bool = True,
) -> tuple[dict[str, Any], str]:
    """Evaluates ``model`` on a split of ``root`` and writes the report files into ``out_dir``:
    :func:`report_split` of :func:`split_predictor` (arguments as there).

    Returns:
        ``(metrics, table)``; files and the table are written/printed by rank 0 only.
    """
    ctx = ctx or DistContext(device=resolve_device(config.device))
    predict_at = split_predictor(
        model,
        root,
        config,
        classes,
        split=split,
        clips=clips,
        ctx=ctx,
        cache_dir=cache_dir,
        progress=progress,
    )
    return report_split(predict_at, classes, out_dir, ctx=ctx, early=early, progress=progress)


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
