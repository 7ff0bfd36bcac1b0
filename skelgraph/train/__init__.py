"""Training, evaluation and checkpoints for every registered model.

* :mod:`~skelgraph.train.config` — :class:`TrainConfig` from YAML with ``key=value`` overrides.
* :mod:`~skelgraph.train.optim` — SGD / AdamW, per-iteration warm-up then multistep decay.
* :mod:`~skelgraph.train.data` — a data root opened with a config's settings; its train/val/test
  parts.
* :mod:`~skelgraph.train.trainer` — :class:`Trainer`: the epochs, checkpoints, resume and log.
* :mod:`~skelgraph.train.run` — :func:`train`: a whole run (data, model, fit, final evaluation).
* :mod:`~skelgraph.train.search` — :func:`tune`: hyperparameter search on the validation part
  (Optuna, the optional extra ``skelgraph[tune]``).
* :mod:`~skelgraph.train.evaluate` — clip-level predictions, metrics, early recognition, the
  evaluation of a split.
* :mod:`~skelgraph.train.report` — report files and the printed metric table.
* :mod:`~skelgraph.train.metrics` — top-k, macro P/R/F1, confusion matrix, AUC, forecast errors,
  motion-prediction MPJPE and PCK.
* :mod:`~skelgraph.train.checkpoint_data` — the data a checkpoint's model is evaluated on.
* :mod:`~skelgraph.train.distributed` — ``torchrun`` / DDP support, autocast.
* :mod:`~skelgraph.train.precision` — ``precision: auto``: the faster precision, measured on the
  model at hand and cached per model and machine.
* :mod:`~skelgraph.train.plots` — training curves, confusion matrix and early-recognition plots.

Names are imported on first access, so ``import skelgraph.train.config`` (the CLI's parser) does
not pull in matplotlib, the models and the datasets: importing them all here would add nearly a
second to every ``skelgraph`` command, ``--help`` included.
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
    "open_dataset": "data",
    "split_data": "data",
    "Trainer": "trainer",
    "train": "run",
    "prepare": "run",
    "tune": "search",
    "evaluate": "evaluate",
    "evaluate_split": "evaluate",
    "predict": "evaluate",
    "early_recognition": "evaluate",
    "write_report": "report",
    "classification_metrics": "metrics",
    "forecast_errors": "metrics",
    "motion_error_sums": "metrics",
    "motion_means": "metrics",
    "mpjpe": "metrics",
    "pck": "metrics",
    "curve_auc": "metrics",
    "check_compatible": "checkpoint_data",
    "evaluation_config": "checkpoint_data",
    "init_distributed": "distributed",
    "resolve_precision": "precision",
    "measure_precision": "precision",
}

#: names that need an optional extra (tune: Optuna), left out of ``import *``
_OPTIONAL = frozenset({"tune"})

__all__ = sorted(set(_EXPORTS) - _OPTIONAL)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'skelgraph.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"skelgraph.train.{_EXPORTS[name]}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
