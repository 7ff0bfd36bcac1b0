"""Report files of an evaluation: ``metrics.json``, per-class and confusion tables and plots, the
printed metric table, and what was evaluated (model, ensemble members, test-time augmentation);
the summary of a cross-validation over folds (``cv.json`` and its table)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from skelgraph.models import Ensemble, registered_name
from skelgraph.train.metrics import (
    format_table,
    write_confusion_csv,
    write_per_class_csv,
)
from skelgraph.train.plots import plot_confusion, plot_curve
from skelgraph.utils import PathLike, atomic_write

__all__ = [
    "REPORT_ROWS",
    "describe_model",
    "describe_models",
    "scalar_metrics",
    "update_report",
    "write_cv_report",
    "write_report",
]

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
    out_dir: PathLike,
    early: Mapping[str, Any] | None = None,
) -> str:
    """Writes ``metrics.json``, ``per_class.csv``, ``confusion.csv``/``.png`` and, with ``early``,
    ``early_recognition.png`` into ``out_dir``; returns the printed metric table.

    Args:
        metrics: Output of :func:`~skelgraph.train.evaluate.evaluate`.
        classes: Class names in logit order.
        out_dir: Destination folder (created).
        early: Output of :func:`~skelgraph.train.evaluate.early_recognition`.
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
    (:func:`~skelgraph.train.evaluate.fuse_predictions`), ``{"model": "score_fusion",
    "ensemble": True, "members"}`` with every model's members, ``"fused_models"`` (each model's
    name) and ``"tta"`` (the models' common test-time augmentation, or the list of them when they
    differ)."""
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


def update_report(out_dir: PathLike, fields: Mapping[str, Any]) -> None:
    """Adds ``fields`` to ``out_dir/metrics.json`` (written by :func:`write_report`), atomically."""
    path = Path(out_dir) / "metrics.json"
    record = json.loads(path.read_text())
    record.update(_jsonable(fields))
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=2)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, int | float]:
    """The entries of ``metrics`` that are single numbers (not flags, lists or tables), as
    Python numbers."""
    return {
        key: _jsonable(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, (bool, np.bool_))
    }


def write_cv_report(
    folds: Sequence[Mapping[str, Any]], path: PathLike | None, **fields: Any
) -> tuple[dict[str, Any], str]:
    r"""Writes the summary of a cross-validation, ``cv.json``, atomically, and returns it with its
    printed table.

    For every scalar metric :math:`m` that every fold reports (:func:`scalar_metrics` of each
    fold's ``"metrics"``), the mean :math:`\bar m = \frac1K \sum_i m_i` and the sample standard
    deviation :math:`s = \sqrt{\frac{1}{K-1} \sum_i (m_i - \bar m)^2}` over the ``K`` folds
    (0 for one fold). Values that are not finite are written as ``null``.

    Args:
        folds: One record per fold: ``"metrics"`` (the fold's validation metrics) and any other
            JSON-serialisable fields (fold index, work dir, held-out groups), kept as they are.
        path: The JSON file; :obj:`None` only returns the summary (ranks other than 0).
        **fields: Further top-level entries (the number of folds, the grouping, the seed).

    Returns:
        ``(record, table)``: the written record, ``{**fields, "folds": [...], "mean": {...},
        "std": {...}}`` with every fold's scalar metrics only, and the printed table: one row per
        metric of :data:`REPORT_ROWS`, one column per fold and ``mean ± std``.
    """
    if not folds:
        raise ValueError("write_cv_report: folds: expected at least one fold, got none")
    per_fold = [scalar_metrics(f["metrics"]) for f in folds]
    keys = [k for k in per_fold[0] if all(k in m for m in per_fold[1:])]
    values = {k: np.array([m[k] for m in per_fold], dtype=np.float64) for k in keys}
    mean = {k: float(v.mean()) for k, v in values.items()}
    std = {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in values.items()}
    record = {
        **_jsonable(dict(fields)),
        "folds": [
            _finite({**_jsonable(dict(f)), "metrics": m})
            for f, m in zip(folds, per_fold, strict=True)
        ],
        "mean": _finite(mean),
        "std": _finite(std),
    }
    if path is not None:
        with atomic_write(path, "w") as f:
            json.dump(record, f, indent=2, allow_nan=False)
    header = ["Metric", *(f"fold {f.get('fold', i)}" for i, f in enumerate(folds)), "mean ± std"]
    rows = [
        [
            label,
            *(_format(v, key) for v in values[key]),
            f"{_format(mean[key], key)} ± {_format(std[key], key)}",
        ]
        for key, label in REPORT_ROWS.items()
        if key in values
    ]
    widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
    lines = [
        "| "
        + " | ".join(
            cell.ljust(w) if c == 0 else cell.rjust(w)
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        + " |"
        for row in [header, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return record, "\n".join(lines)


def _format(value: float, key: str) -> str:
    """A table cell: counts (``num_samples``) as short numbers, metrics with 4 decimals."""
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}" if key == "num_samples" else f"{value:.4f}"


def _finite(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by :obj:`None` (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
