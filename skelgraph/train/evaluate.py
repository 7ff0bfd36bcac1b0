"""Running a model over a loader: clip-level predictions, metrics, early recognition, report files.

Every sample of a loader is one window of a clip (``data.clip_id``); a clip's video-level prediction
is the mean of its windows' video logits (:meth:`ModelOutput.video_logits` with ``reduce``), so
``sampling="window"`` and ``sampling="clip"`` datasets are scored the same way: once per clip.
Clip predictions of several models, each made with its own data settings (window, preprocessing,
crop), fuse by their averaged class probabilities (:func:`fuse_predictions`, score fusion).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from skelgraph.data import to_dense
from skelgraph.io import atomic_write
from skelgraph.models import Ensemble, registered_name
from skelgraph.models.ensemble import fuse_logits
from skelgraph.train.distributed import DistContext, all_reduce_sum, gather_by_index
from skelgraph.train.metrics import (
    classification_metrics,
    curve_auc,
    forecast_errors,
    format_table,
    write_confusion_csv,
    write_per_class_csv,
)
from skelgraph.train.plots import plot_confusion, plot_curve

__all__ = [
    "EARLY_FRACTIONS",
    "REPORT_ROWS",
    "ClipPredictions",
    "describe_model",
    "describe_models",
    "early_recognition",
    "evaluate",
    "fuse_predictions",
    "predict",
    "prediction_metrics",
    "update_report",
    "write_report",
]

#: Observed fractions of the early-recognition curve.
EARLY_FRACTIONS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))

#: Rows of the printed metric table: metrics.json key -> label (the blog's four first).
REPORT_ROWS: dict[str, str] = {
    "macro_precision": "Macro Precision",
    "macro_recall": "Macro Recall",
    "macro_f1": "Macro F1",
    "top1": "Accuracy",
    "top5": "Top-5 accuracy",
    "mean_class_acc": "Mean class accuracy",
    "early_auc": "Early-recognition AUC",
    "forecast_mse_mean": "Forecast MSE (mean over steps)",
    "forecast_pck_mean": "Forecast PCK@0.05 (mean over steps)",
    "num_samples": "Clips",
}


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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
        for batch in tqdm(loader, desc=desc, leave=False, disable=not (progress and ctx.is_main)):
            batch = batch.to(ctx.device)
            x, mask = to_dense(batch)
            with _autocast(ctx.device, dtype):
                out = model(x, mask)
                losses = model.loss(out, x, batch.y, mask) if with_loss else {}
            logits.append(out.video_logits(reduce, mask).float().cpu())
            labels.append(batch.y.cpu())
            clip_ids.append(batch.clip_id.cpu())
            for name, value in losses.items():
                total = value.detach().double() * batch.num_graphs
                loss_sums[name] = loss_sums.get(name, 0.0) + total
            if out.forecast is not None:
                sums = forecast_errors(out.forecast.float(), x.float(), mask)
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


def fuse_predictions(predictions: Sequence[ClipPredictions]) -> ClipPredictions:
    r"""Score fusion: the clip predictions of several models on the same clips, fused into one
    whose logits are the log of the averaged class probabilities,
    :math:`\ell = \log \frac{1}{M} \sum_m \mathrm{softmax}(\ell^{(m)})`, and whose forecast
    errors are the first model's (loss terms are dropped). One prediction is returned as it is.

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
    fused = fuse_logits([torch.from_numpy(p.logits) for p in predictions])
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
    for fraction in tqdm(fractions, desc="early recognition", disable=not progress):
        preds = predict_at(fraction)
        accuracy.append(float((preds.logits.argmax(1) == preds.labels).mean()))
    return {
        "fractions": [float(f) for f in fractions],
        "accuracy": accuracy,
        "auc": curve_auc(fractions, accuracy),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_report(
    metrics: Mapping[str, Any],
    classes: Sequence[str],
    out_dir: str | os.PathLike[str],
    early: Mapping[str, Any] | None = None,
) -> str:
    """Writes ``metrics.json``, ``per_class.csv``, ``confusion.csv``/``.png`` and, with ``early``,
    ``early_recognition.png`` into ``out_dir``; returns the printed metric table.

    Args:
        metrics: Output of :func:`evaluate`.
        classes: Class names in logit order.
        out_dir: Destination folder (created).
        early: Output of :func:`early_recognition`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {k: v for k, v in metrics.items() if k not in ("confusion", "per_class")}
    record["classes"] = list(classes)
    record["per_class"] = {
        name: {k: metrics["per_class"][k][i] for k in metrics["per_class"]}
        for i, name in enumerate(classes)
    }
    record["confusion"] = metrics["confusion"]
    if early is not None:
        record["early_recognition"] = dict(early)
        record["early_auc"] = early["auc"]
        plot_curve(
            early["fractions"],
            early["accuracy"],
            out / "early_recognition.png",
            xlabel="observed fraction of the clip",
            ylabel="top-1 accuracy",
            title=f"early recognition (AUC {early['auc']:.3f})",
        )
    with atomic_write(out / "metrics.json", "w") as f:
        json.dump(_jsonable(record), f, indent=2)
    write_per_class_csv(metrics["per_class"], classes, out / "per_class.csv")
    write_confusion_csv(metrics["confusion"], classes, out / "confusion.csv")
    plot_confusion(metrics["confusion"], classes, out / "confusion.png")
    return format_table(record, REPORT_ROWS)


def describe_model(model: nn.Module) -> dict[str, Any]:
    """What a report evaluated: ``{"model", "ensemble", "members", "tta"}`` — the registered
    model name, whether it fuses several models (:class:`~skelgraph.models.Ensemble`), the
    members' model names (the model's own name for a single model) and the test-time
    augmentation (``"mirror"`` or :obj:`None`)."""
    if isinstance(model, Ensemble):
        return {
            "model": "ensemble",
            "ensemble": len(model.members) > 1,
            "members": model.member_names,
            "tta": "mirror" if model.mirror else None,
        }
    name = registered_name(model)
    return {"model": name, "ensemble": False, "members": [name], "tta": None}


def describe_models(models: Sequence[nn.Module]) -> dict[str, Any]:
    """:func:`describe_model` of one model; for several whose scores are fused
    (:func:`fuse_predictions`), ``{"model": "score_fusion", "ensemble": True, "members"}`` with
    every model's members, ``"fused_models"`` (each model's name) and ``"tta"`` (the models'
    common test-time augmentation, or the list of them when they differ)."""
    described = [describe_model(m) for m in models]
    if len(described) == 1:
        return described[0]
    tta = [d["tta"] for d in described]
    return {
        "model": "score_fusion",
        "ensemble": True,
        "members": [name for d in described for name in d["members"]],
        "fused_models": [d["model"] for d in described],
        "tta": tta[0] if len(set(tta)) == 1 else tta,
    }


def update_report(out_dir: str | os.PathLike[str], fields: Mapping[str, Any]) -> None:
    """Adds ``fields`` to ``out_dir/metrics.json`` (written by :func:`write_report`), atomically."""
    path = Path(out_dir) / "metrics.json"
    record = json.loads(path.read_text())
    record.update(_jsonable(fields))
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=2)
