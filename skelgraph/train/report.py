"""Report files of an evaluation: ``metrics.json``, per-class and confusion tables and plots, the
printed metric table, and what was evaluated (model, ensemble members, test-time augmentation)."""

from __future__ import annotations

import json
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

__all__ = ["REPORT_ROWS", "describe_model", "describe_models", "update_report", "write_report"]

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
