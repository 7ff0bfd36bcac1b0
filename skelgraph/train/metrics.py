"""Classification, early-recognition and forecasting metrics (NumPy; no scikit-learn), and the
motion-prediction errors of future poses (torch).

Conventions: ``scores`` are ``(N, K)`` logits or probabilities, ``labels`` ``(N,)`` integer classes
in ``[0, K)``. Macro averages run over the classes that occur in the labels or the predictions (as
scikit-learn does without ``labels=``), so a class absent from a small test split does not count
as 0; a class that occurs but is never predicted has precision 0 (zero-division safe) and recall 0.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from skelgraph.models.losses import future_targets
from skelgraph.utils import atomic_write

__all__ = [
    "MOTION_PCK_THRESHOLD",
    "PCK_THRESHOLD",
    "classification_metrics",
    "confusion_matrix",
    "curve_auc",
    "forecast_errors",
    "format_table",
    "motion_error_sums",
    "motion_means",
    "mpjpe",
    "pck",
    "per_class_metrics",
    "topk_accuracy",
    "write_confusion_csv",
    "write_per_class_csv",
]

#: Default PCK threshold, relative to the larger side of the ground-truth skeleton's bounding box.
PCK_THRESHOLD = 0.05

#: Default PCK threshold of the motion-prediction errors (:func:`motion_error_sums`), in the
#: preprocessed coordinates' unit, the torso length: 0.2 torso lengths, about 10 cm on an adult.
MOTION_PCK_THRESHOLD = 0.2


def _check_labels(labels: Any, num_classes: int, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name}: expected shape (N,), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{name}: expected classes in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.int64)


def _check_scores(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected shape (N, K), got {scores.shape}")
    labels = _check_labels(labels, scores.shape[1])
    if labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels: expected {scores.shape[0]} entries (one per row of scores), "
            f"got {labels.shape[0]}"
        )
    return scores, labels


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """The ``(K, K)`` count matrix: row = true class, column = predicted class."""
    labels = _check_labels(labels, num_classes)
    predictions = _check_labels(predictions, num_classes, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(f"predictions: expected shape {labels.shape}, got {predictions.shape}")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def topk_accuracy(scores: Any, labels: Any, k: int) -> float:
    """Fraction of rows whose true class is among the ``k`` highest scores (``k`` capped at ``K``).

    Ties are broken towards the lower class index, as :func:`numpy.argmax` does for top-1.
    """
    scores, labels = _check_scores(scores, labels)
    if not len(labels):
        return math.nan
    k = min(k, scores.shape[1])
    true = scores[np.arange(len(labels)), labels][:, None]
    index = np.arange(scores.shape[1])[None, :]
    rank = (scores > true).sum(1) + ((scores == true) & (index < labels[:, None])).sum(1)
    return float((rank < k).mean())


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "support": support.astype(np.int64),
        "predicted": predicted.astype(np.int64),
    }


def classification_metrics(scores: Any, labels: Any) -> dict[str, Any]:
    """Top-1, top-5, mean class accuracy, macro precision / recall / F1 and the confusion matrix.

    Args:
        scores: ``(N, K)`` class scores.
        labels: ``(N,)`` true classes.

    Returns:
        ``{"top1", "top5", "mean_class_acc", "macro_precision", "macro_recall", "macro_f1",
        "num_samples"}`` as floats/ints, plus ``"confusion"`` (``(K, K)`` array) and ``"per_class"``
        (see :func:`per_class_metrics`).
    """
    scores, labels = _check_scores(scores, labels)
    num_classes = scores.shape[1]
    cm = confusion_matrix(labels, scores.argmax(1), num_classes)
    per_class = per_class_metrics(cm)
    present = (per_class["support"] > 0) | (per_class["predicted"] > 0)
    supported = per_class["support"] > 0

    def macro(values: np.ndarray, where: np.ndarray) -> float:
        return float(values[where].mean()) if where.any() else math.nan

    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_acc": macro(per_class["recall"], supported),
        "macro_precision": macro(per_class["precision"], present),
        "macro_recall": macro(per_class["recall"], present),
        "macro_f1": macro(per_class["f1"], present),
        "num_samples": len(labels),
        "confusion": cm,
        "per_class": per_class,
    }


def curve_auc(x: Sequence[float], y: Sequence[float]) -> float:
    """Area under ``y(x)`` by the trapezoid rule, divided by the ``x`` range (so in ``[0, 1]`` for
    accuracies)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
        raise ValueError(
            f"x, y: expected two 1-D arrays of equal length >= 2, got {x.shape}, {y.shape}"
        )
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"x: expected strictly increasing values, got {x.tolist()}")
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    return area / float(x[-1] - x[0])


def forecast_errors(
    forecast: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    steps: torch.Tensor | None = None,
    threshold: float = PCK_THRESHOLD,
) -> dict[str, torch.Tensor]:
    r"""Sums for the per-step forecasting MSE and PCK of one batch.

    The forecast made at frame ``t`` for step ``n`` (``1 ≤ n ≤ N``) is compared with frame ``t + n``
    where both frames are real (``mask``) and ``t + n < T``. Coordinates are the first ``C_out``
    channels of ``x`` (the last channel is the confidence). MSE averages the squared error over
    joints and coordinates; PCK counts joints with confidence > 0 whose error is below ``threshold``
    times the larger side of the ground-truth skeleton's bounding box in frame ``t + n``.

    Args:
        forecast: ``[B, T, N, V, C_out]`` predicted joints made at every frame, or
            ``[B, S, N, V, C_out]`` made at the frames ``steps`` (``ModelOutput.steps``).
        x: ``[B, V, T, C]`` input (target) joints.
        mask: ``[B, T]`` real-frame mask, or :obj:`None` for all frames.
        steps: ``[B, S]`` the frames the forecasts were made at; :obj:`None` for every frame.
        threshold: PCK threshold :math:`\alpha`.

    Returns:
        ``{"sq_err": [N], "count": [N], "pck_hits": [N], "pck_count": [N]}`` float64 sums; divide
        ``sq_err / count`` and ``pck_hits / pck_count`` after accumulating over batches.
    """
    if forecast.dim() != 5:
        raise ValueError(
            f"forecast: expected shape [B, T, N, V, C_out], got {list(forecast.shape)}"
        )
    batch, origins, steps_ahead, joints, c_out = forecast.shape
    frames = x.shape[2] if x.dim() == 4 else -1
    if x.dim() != 4 or x.shape[0] != batch or x.shape[1] != joints or x.shape[3] <= c_out:
        raise ValueError(
            f"x: expected shape [{batch}, {joints}, T, > {c_out}], got {list(x.shape)}"
        )
    if steps is None:
        if frames != origins:
            raise ValueError(
                f"x: expected shape [{batch}, {joints}, {origins}, > {c_out}] (a forecast at "
                f"every frame), got {list(x.shape)}"
            )
        steps = torch.arange(frames, device=x.device).expand(batch, -1)
    elif steps.shape != (batch, origins):
        raise ValueError(f"steps: expected shape [{batch}, {origins}], got {list(steps.shape)}")
    target, valid = future_targets(x.double(), steps, steps_ahead, mask)  # [B, S, N, V, C]
    forecast = forecast.double()
    out = {
        k: torch.zeros(steps_ahead, dtype=torch.float64)
        for k in ("sq_err", "count", "pck_hits", "pck_count")
    }
    for n in range(steps_ahead):
        pred = forecast[:, :, n]  # [B, S, V, C_out]
        coords, conf = target[:, :, n, :, :c_out], target[:, :, n, :, -1]
        real = valid[:, :, n]  # [B, S]
        err = (pred - coords).square()
        out["sq_err"][n] = err.mean((-1, -2))[real].sum().cpu()
        out["count"][n] = real.sum().cpu()
        visible = (conf > 0) & real[..., None]  # [B, S, V]
        big = torch.finfo(torch.float64).max
        low = torch.where(visible[..., None], coords, big).amin(-2)
        high = torch.where(visible[..., None], coords, -big).amax(-2)
        size = (high - low).amax(-1).clamp_min(0)  # [B, S]
        hit = err.sum(-1).sqrt() < threshold * size[..., None]
        out["pck_hits"][n] = (hit & visible).sum().cpu()
        out["pck_count"][n] = visible.sum().cpu()
    return out


def motion_error_sums(
    pred: torch.Tensor, target: torch.Tensor, *, threshold: float = MOTION_PCK_THRESHOLD
) -> dict[str, torch.Tensor]:
    r"""Per-future-step sums of the joint position errors of predicted poses, for
    :func:`motion_means` (MPJPE and PCK) after accumulating over batches.

    With the predicted coordinates :math:`\hat{\mathbf{x}}_{b,h,v}`, the true ones
    :math:`\mathbf{x}_{b,h,v}` and their confidence :math:`c_{b,h,v}` (sample :math:`b`, future
    step :math:`h`, joint :math:`v`), a joint counts where the truth is known,
    :math:`m_{b,h,v} = [c_{b,h,v} > 0 \wedge \mathbf{x}_{b,h,v} \text{ finite}]`, and its error
    is the Euclidean distance :math:`e_{b,h,v} = \lVert \hat{\mathbf{x}}_{b,h,v} -
    \mathbf{x}_{b,h,v} \rVert_2` in the coordinates' unit (the torso length for preprocessed
    clips). Per step :math:`h`:

    .. math::
        \mathrm{error}_h = \sum_{b,v} m_{b,h,v} \, e_{b,h,v}, \qquad
        \mathrm{hits}_h = \sum_{b,v} m_{b,h,v} \, [e_{b,h,v} < \alpha], \qquad
        \mathrm{count}_h = \sum_{b,v} m_{b,h,v}.

    Unlike :func:`forecast_errors` (per-step forecasts inside a window, PCK relative to the
    skeleton's bounding box), the threshold :math:`\alpha` is absolute, in the coordinates'
    unit: the preprocessing already divides every clip by its torso length.

    Args:
        pred (Tensor): predicted coordinates :math:`(B, H, V, D)`.
        target (Tensor): true joints :math:`(B, H, V, D + 1)`, confidence last.
        threshold (float): :math:`\alpha`. (default: :data:`MOTION_PCK_THRESHOLD`)

    Returns:
        dict: ``{"error", "hits", "count"}``, each :math:`(H,)` float64 on the CPU.
    """
    if pred.dim() != 4:
        raise ValueError(f"pred: expected shape [B, H, V, D], got {list(pred.shape)}")
    expected = [*pred.shape[:-1], pred.size(-1) + 1]
    if list(target.shape) != expected:
        raise ValueError(
            f"target: expected shape {expected} (pred's coordinates and a confidence), "
            f"got {list(target.shape)}"
        )
    if not threshold > 0:
        raise ValueError(f"threshold: expected a positive number, got {threshold!r}")
    coords, confidence = target[..., :-1].double(), target[..., -1]
    known = (confidence > 0) & torch.isfinite(coords).all(dim=-1)  # [B, H, V]
    error = (pred.double() - coords).norm(dim=-1)  # NaN where the truth is not finite
    return {
        "error": torch.where(known, error, 0.0).sum(dim=(0, 2)).cpu(),
        "hits": ((error < threshold) & known).double().sum(dim=(0, 2)).cpu(),
        "count": known.double().sum(dim=(0, 2)).cpu(),
    }


def motion_means(sums: Mapping[str, Any]) -> dict[str, np.ndarray]:
    r"""MPJPE and PCK per future step from the (accumulated) sums of
    :func:`motion_error_sums`:

    .. math::
        \mathrm{MPJPE}_h = \frac{\mathrm{error}_h}{\mathrm{count}_h}, \qquad
        \mathrm{PCK}_h = \frac{\mathrm{hits}_h}{\mathrm{count}_h},

    the mean error of every joint with a known position (pooled over samples and joints) and
    the fraction of them within :math:`\alpha`; NaN at a step without one.

    Returns:
        dict: ``{"mpjpe", "pck"}``, each :math:`(H,)` float64.
    """
    error, hits, count = (np.asarray(sums[k], dtype=np.float64) for k in ("error", "hits", "count"))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"mpjpe": error / count, "pck": hits / count}


def mpjpe(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """Mean per-joint position error per future step :math:`(H,)` of predicted coordinates
    ``pred`` :math:`(B, H, V, D)` against ``target`` :math:`(B, H, V, D + 1)` (confidence last;
    joints with confidence 0 are left out): :func:`motion_means` of
    :func:`motion_error_sums`."""
    return motion_means(motion_error_sums(pred, target))["mpjpe"]


def pck(
    pred: torch.Tensor, target: torch.Tensor, threshold: float = MOTION_PCK_THRESHOLD
) -> np.ndarray:
    """Fraction of the joints within ``threshold`` of the truth per future step :math:`(H,)`
    (arguments as :func:`mpjpe`): :func:`motion_means` of :func:`motion_error_sums`."""
    return motion_means(motion_error_sums(pred, target, threshold=threshold))["pck"]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def format_table(metrics: Mapping[str, Any], rows: Mapping[str, str] | None = None) -> str:
    """A two-column ``Metric | Score`` text table of the scalar entries of ``metrics``.

    Args:
        metrics: Metric values; non-scalar entries are skipped.
        rows: ``key -> label`` of the rows to show, in order; default every scalar under its key.
    """
    rows = rows or {k: k for k in metrics}
    table = [
        (label, _fmt(metrics[key]))
        for key, label in rows.items()
        if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics[key], bool)
    ]
    width = max([len("Metric"), *(len(k) for k, _ in table)])
    value_width = max([len("Score"), *(len(v) for _, v in table)])
    lines = [
        f"| {'Metric':<{width}} | {'Score':>{value_width}} |",
        f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|",
    ]
    lines += [f"| {k:<{width}} | {v:>{value_width}} |" for k, v in table]
    return "\n".join(lines)


def write_per_class_csv(
    per_class: Mapping[str, np.ndarray], classes: Sequence[str], path: str | os.PathLike[str]
) -> None:
    """Writes ``class, precision, recall, f1, support, predicted`` rows (atomically)."""
    columns = ("precision", "recall", "f1", "support", "predicted")
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["class", *columns])
        for i, name in enumerate(classes):
            writer.writerow([name, *(_fmt(per_class[c][i].item()) for c in columns)])


def write_confusion_csv(
    cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str]
) -> None:
    """Writes the confusion matrix: a header row of predicted, a first column of true classes."""
    with atomic_write(path, "w") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name, row in zip(classes, np.asarray(cm), strict=True):
            writer.writerow([name, *(int(v) for v in row)])
