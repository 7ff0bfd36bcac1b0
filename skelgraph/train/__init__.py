"""Training, evaluation and checkpoints for every registered model.

* :mod:`~skelgraph.train.config` — :class:`TrainConfig` from YAML with ``key=value`` overrides.
* :mod:`~skelgraph.train.optim` — SGD / AdamW, per-iteration warm-up then multistep decay.
* :mod:`~skelgraph.train.trainer` — :class:`Trainer` and :func:`train` (a whole run).
* :mod:`~skelgraph.train.evaluate` — clip-level predictions, metrics, early recognition, reports.
* :mod:`~skelgraph.train.metrics` — top-k, macro P/R/F1, confusion matrix, AUC, forecast errors.
* :mod:`~skelgraph.train.checkpoint_data` — the data a checkpoint's model is evaluated on.
* :mod:`~skelgraph.train.distributed` — ``torchrun`` / DDP support.
* :mod:`~skelgraph.train.plots` — training curves, confusion matrix and early-recognition plots.

Names are imported on first access, so ``import skelgraph.train.config`` (the CLI's parser) does
not pull in the models and datasets.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "TrainConfig": "config",
    "load_config": "config",
    "apply_overrides": "config",
    "save_config": "config",
    "available_configs": "config",
    "build_optimizer": "optim",
    "build_scheduler": "optim",
    "Trainer": "trainer",
    "train": "trainer",
    "prepare": "trainer",
    "evaluate_split": "trainer",
    "open_dataset": "trainer",
    "split_data": "trainer",
    "evaluate": "evaluate",
    "predict": "evaluate",
    "early_recognition": "evaluate",
    "write_report": "evaluate",
    "classification_metrics": "metrics",
    "forecast_errors": "metrics",
    "curve_auc": "metrics",
    "check_compatible": "checkpoint_data",
    "init_distributed": "distributed",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skelgraph.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"skelgraph.train.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
