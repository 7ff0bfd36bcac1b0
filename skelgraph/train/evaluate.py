"""Running a model over data: clip-level predictions, metrics, early recognition, and the
evaluation of a split of a data root with its report (:func:`evaluate_split`).

Every sample of a loader is one window of a clip (``data.clip_id``); a clip's video-level prediction
is the mean of its windows' video logits (:meth:`ModelOutput.video_logits` with ``reduce``), so
``sampling="window"`` and ``sampling="clip"`` datasets are scored the same way: once per clip.
Clip predictions of several models, each made with its own data settings (window, preprocessing,
crop), fuse by their averaged class probabilities (:func:`fuse_predictions`, score fusion).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from skelgraph.data import make_loader, to_dense
from skelgraph.models.ensemble import fuse_logits
from skelgraph.train.config import TrainConfig
from skelgraph.train.data import limit_clips, open_dataset, subset_by_clips
from skelgraph.train.distributed import (
    DistContext,
    all_reduce_sum,
    autocast,
    gather_by_index,
    main_first,
    make_sampler,
)
from skelgraph.train.metrics import classification_metrics, curve_auc, forecast_errors
from skelgraph.train.precision import resolve_precision
from skelgraph.train.report import write_report
from skelgraph.utils import PathLike, progress_bar, resolve_device

__all__ = [
    "EARLY_FRACTIONS",
    "ClipPredictions",
    "early_recognition",
    "evaluate",
    "evaluate_split",
    "fuse_predictions",
    "predict",
    "prediction_metrics",
    "report_split",
    "split_predictor",
]

#: Observed fractions of the early-recognition curve.
EARLY_FRACTIONS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))


@dataclass
class ClipPredictions:
    """Video-level outputs of a model over a dataset, one row per clip (sorted by clip id).

    Attributes:
        clip_ids: ``(N,)`` clip ids.
        labels: ``(N,)`` true classes.
        logits: ``(N, K)`` mean video logits of the clip's windows.
        losses: Mean loss terms over the samples (empty unless requested).
        forecast: ``{"mse": (S,), "pck": (S,)}`` per future step, or :obj:`None` without a forecast.
    """

    clip_ids: np.ndarray
    labels: np.ndarray
    logits: np.ndarray
    losses: dict[str, float]
    forecast: dict[str, np.ndarray] | None


def _clip_means(
    clip_ids: np.ndarray, labels: np.ndarray, logits: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Averages the logits of every clip's windows; returns ``(clip_ids, labels, logits)``."""
    unique, first, inverse = np.unique(clip_ids, return_index=True, return_inverse=True)
    sums = np.zeros((len(unique), logits.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, logits)
    counts = np.bincount(inverse, minlength=len(unique))[:, None]
    return unique, labels[first], (sums / counts).astype(np.float32)


def predict(
    model: nn.Module,
    loader: DataLoader,
    *,
    ctx: DistContext | None = None,
    reduce: str = "mean",
    dtype: torch.dtype | None = None,
    with_loss: bool = False,
    forecast: bool = True,
    desc: str = "eval",
    progress: bool = True,
) -> ClipPredictions:
    """Runs ``model`` over ``loader`` in inference mode and collects clip-level predictions.

    Under ``torchrun`` each rank runs its shard (a non-shuffling :class:`DistributedSampler`) and
    the results of all ranks are gathered; the sampler's padding duplicates are dropped by sample
    index from the predictions (the loss and forecast means, sums over the shards, still count
    those few repeated samples). Leaves ``model`` in eval mode.

    Args:
        model: A model with the ``SkeletonModel`` interface (not wrapped in DDP).
        loader: A PyG loader of ``Data`` samples with ``clip_id``.
        ctx: Process context (device, ranks); default: a single CPU process.
        reduce: Per-step to video logits: ``"last"`` or ``"mean"``.
        dtype: Autocast dtype, or :obj:`None` for float32.
        with_loss: Also average ``model.loss`` terms over the samples.
        forecast: Also measure the forecast errors of forecasting models. Without it (and
            without ``with_loss``) only the clip scores are computed
            (:meth:`~skelgraph.models.base.SkeletonModel.clip_logits`), which spares a per-step
            model the work at the steps ``reduce`` does not read.
        desc: Progress-bar label.
        progress: Show a progress bar (rank 0 only).
    """
    ctx = ctx or DistContext()
    if len(loader) == 0:
        raise ValueError("loader: expected at least one sample, got an empty dataset")
    model.eval()
    sample_indices = np.fromiter(iter(loader.sampler), dtype=np.int64)
    logits, labels, clip_ids = [], [], []
    loss_sums: dict[str, torch.Tensor] = {}
    forecast_sums: dict[str, torch.Tensor] | None = None
    with torch.inference_mode():
        bar = progress_bar(
            loader, desc=desc, unit="batch", leave=False, disable=not (progress and ctx.is_main)
        )
        for batch in bar:
            batch = batch.to(ctx.device)
            x, mask = to_dense(batch)
            out, losses = None, {}
            with autocast(ctx.device, dtype):
                if with_loss or forecast:
                    out = model(x, mask)
                    losses = model.loss(out, x, batch.y, mask) if with_loss else {}
                    video = out.video_logits(reduce, mask)
                else:  # the clip scores alone: only the steps ``reduce`` reads
                    video = model.clip_logits(x, mask, reduce)
            logits.append(video.float().cpu())
            labels.append(batch.y.cpu())
            clip_ids.append(batch.clip_id.cpu())
            for name, value in losses.items():
                total = value.detach().double() * batch.num_graphs
                loss_sums[name] = loss_sums.get(name, 0.0) + total
            if out is not None and out.forecast is not None:
                sums = forecast_errors(out.forecast.float(), x.float(), mask, steps=out.steps)
                forecast_sums = (
                    sums
                    if forecast_sums is None
                    else {k: forecast_sums[k] + v for k, v in sums.items()}
                )
    _, gathered = gather_by_index(
        sample_indices,
        {
            "logits": torch.cat(logits).numpy(),
            "labels": torch.cat(labels).numpy(),
            "clip_ids": torch.cat(clip_ids).numpy(),
        },
        ctx,
    )
    clips, clip_labels, clip_logits = _clip_means(
        gathered["clip_ids"], gathered["labels"], gathered["logits"]
    )
    return ClipPredictions(
        clip_ids=clips,
        labels=clip_labels,
        logits=clip_logits,
        losses=_mean_losses(loss_sums, len(sample_indices), ctx),
        forecast=None if forecast_sums is None else _forecast_means(forecast_sums, ctx),
    )


def _mean_losses(
    sums: Mapping[str, torch.Tensor], count: int, ctx: DistContext
) -> dict[str, float]:
    if not sums:
        return {}
    totals = torch.stack(
        [*(v.cpu() for v in sums.values()), torch.tensor(float(count), dtype=torch.float64)]
    )
    totals = all_reduce_sum(totals, ctx).cpu()
    return {name: float(totals[i] / totals[-1]) for i, name in enumerate(sums)}


def _forecast_means(sums: Mapping[str, torch.Tensor], ctx: DistContext) -> dict[str, np.ndarray]:
    keys = ("sq_err", "count", "pck_hits", "pck_count")
    stacked = all_reduce_sum(torch.stack([sums[k] for k in keys]), ctx).cpu().numpy()
    sq_err, count, hits, visible = stacked
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"mse": sq_err / count, "pck": hits / visible}


def prediction_metrics(preds: ClipPredictions) -> dict[str, Any]:
    """Clip-level classification metrics of ``preds`` (see :func:`classification_metrics`), plus
    its loss terms and, for forecasting models, ``"forecast_mse"`` / ``"forecast_pck"`` per future
    step and their means."""
    metrics = classification_metrics(preds.logits, preds.labels)
    metrics.update(preds.losses)
    if preds.forecast is not None:
        metrics["forecast_mse"] = preds.forecast["mse"].tolist()
        metrics["forecast_pck"] = preds.forecast["pck"].tolist()
        metrics["forecast_mse_mean"] = float(np.nanmean(preds.forecast["mse"]))
        metrics["forecast_pck_mean"] = float(np.nanmean(preds.forecast["pck"]))
    return metrics


def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    ctx: DistContext | None = None,
    reduce: str = "mean",
    dtype: torch.dtype | None = None,
    with_loss: bool = False,
    desc: str = "eval",
    progress: bool = True,
) -> dict[str, Any]:
    """:func:`prediction_metrics` of ``model`` over ``loader`` (``"loss"`` terms with
    ``with_loss``); arguments as for :func:`predict`."""
    return prediction_metrics(
        predict(
            model,
            loader,
            ctx=ctx,
            reduce=reduce,
            dtype=dtype,
            with_loss=with_loss,
            desc=desc,
            progress=progress,
        )
    )


def fuse_predictions(
    predictions: Sequence[ClipPredictions], weights: Sequence[float] | None = None
) -> ClipPredictions:
    r"""Score fusion: the clip predictions of several models on the same clips, fused into one
    whose logits are the log of the (weighted) averaged class probabilities,
    :math:`\ell = \log \sum_m w_m \mathrm{softmax}(\ell^{(m)}) / \sum_m w_m` (equal weights
    without ``weights``, one positive number per prediction), and whose forecast errors are the
    first model's (loss terms are dropped). One prediction is returned as it is.

    Raises:
        ValueError: when the predictions differ in their clips, labels or number of classes.
    """
    if not predictions:
        raise ValueError("fuse_predictions: predictions: expected at least one, got none")
    first = predictions[0]
    if len(predictions) == 1:
        return first
    for i, other in enumerate(predictions[1:], start=1):
        if not np.array_equal(other.clip_ids, first.clip_ids):
            raise ValueError(
                f"fuse_predictions: predictions[{i}]: expected the clips of predictions[0] "
                f"({len(first.clip_ids)} clips), got {len(other.clip_ids)} clips, not the same"
            )
        if not np.array_equal(other.labels, first.labels):
            raise ValueError(
                f"fuse_predictions: predictions[{i}]: labels differ from predictions[0]'s on "
                f"{int((other.labels != first.labels).sum())} clips (other class orders?)"
            )
        if other.logits.shape != first.logits.shape:
            raise ValueError(
                f"fuse_predictions: predictions[{i}].logits: expected shape "
                f"{list(first.logits.shape)}, got {list(other.logits.shape)}"
            )
    fused = fuse_logits([torch.from_numpy(p.logits) for p in predictions], weights)
    return ClipPredictions(
        clip_ids=first.clip_ids,
        labels=first.labels,
        logits=fused.numpy(),
        losses={},
        forecast=first.forecast,
    )


def early_recognition(
    predict_at: Callable[[float], ClipPredictions],
    *,
    fractions: Sequence[float] = EARLY_FRACTIONS,
    progress: bool = True,
) -> dict[str, Any]:
    """Top-1 accuracy when only the first fraction of every clip is observed, and the curve's area.

    Args:
        predict_at: The clip predictions when every clip is cut to its first fraction ``f``
            (e.g. :func:`predict` over a dataset with ``observed_fraction=f``).
        fractions: Increasing observed fractions (default 0.1, 0.2, ..., 1.0).
        progress: Show a progress bar.

    Returns:
        ``{"fractions": [...], "accuracy": [...], "auc": float}`` with the trapezoid area normalised
        by the fraction range (:func:`curve_auc`).
    """
    accuracy = []
    for fraction in progress_bar(fractions, desc="early recognition", disable=not progress):
        preds = predict_at(fraction)
        accuracy.append(float((preds.logits.argmax(1) == preds.labels).mean()))
    return {
        "fractions": [float(f) for f in fractions],
        "accuracy": accuracy,
        "auc": curve_auc(fractions, accuracy),
    }


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

    The split is opened (read and preprocessed, or loaded from the cache) once, here; every
    fraction cuts the loaded clips (:meth:`~skelgraph.data.SkeletonDataset.observe`).

    Args:
        model: The trained model.
        root: The data root.
        config: The model's data settings, ``reduce``, ``precision`` and ``limit`` (at most that
            many clips, taken in turn from every class).
        classes: Class names in logit order.
        split: The split to predict.
        clips: Restrict to these clip ids of the split (a held-out validation part).
        ctx: Process context.
        cache_dir: Dataset cache folder.
        progress: Show progress bars (rank 0).
    """
    ctx = ctx or DistContext(device=resolve_device(config.device))
    with main_first(ctx):
        whole = open_dataset(
            root,
            config.data,
            split=split,
            classes=classes,
            cache_dir=cache_dir,
            progress=progress and ctx.is_main,
        )
    if whole.num_clips == 0:
        raise ValueError(f"split {split!r} of {root}: expected clips to evaluate, found none")
    clips = limit_clips(whole, clips, config.limit)
    batch_size = config.eval_batch_size or config.batch_size
    dtype = resolve_precision(
        config.precision,
        model,
        (batch_size, *whole[0].x.shape),
        ctx,
        train=False,
        log=print if progress else None,
    )

    def predict_at(fraction: float) -> ClipPredictions:
        dataset: Dataset = whole.observe(fraction)
        if clips is not None:
            dataset = subset_by_clips(dataset, clips)
        sampler = make_sampler(dataset, ctx, shuffle=False)
        loader = make_loader(dataset, batch_size, shuffle=False, sampler=sampler)
        return predict(
            model,
            loader,
            ctx=ctx,
            reduce=config.reduce,
            dtype=dtype,
            forecast=fraction == 1.0,
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
    with :func:`fuse_predictions`), the early-recognition curve over
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
