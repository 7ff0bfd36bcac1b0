"""Optimisers and the learning-rate schedule: per-iteration linear warm-up, then multistep decay."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from functools import partial

import torch
from torch import nn

from skelgraph.train.config import OptimConfig

__all__ = ["build_optimizer", "build_scheduler", "lr_factor", "parameter_groups"]


def parameter_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Splits the trainable parameters into a decayed and a non-decayed group.

    With ``no_decay_norm_bias``, parameters with at most one dimension (biases, norm scales and
    shifts) and the weights of :class:`torch.nn.Embedding` modules get no weight decay.

    Args:
        model: The model.
        weight_decay: Weight decay of the decayed group.
        no_decay_norm_bias: Whether to exempt norms, biases and embeddings.

    Returns:
        Parameter groups for a :class:`torch.optim.Optimizer` (empty groups left out).
    """
    embeddings = {
        id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
    }
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        exempt = no_decay_norm_bias and (param.ndim <= 1 or id(param) in embeddings)
        (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW over :func:`parameter_groups` of ``model``."""
    groups = parameter_groups(model, config.weight_decay, config.no_decay_norm_bias)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))
    raise ValueError(f"optim.optimizer: expected 'sgd' or 'adamw', got {config.optimizer!r}")


def lr_factor(
    step: int,
    *,
    steps_per_epoch: int,
    warmup_epochs: float,
    lr_steps: Sequence[int],
    lr_decay: float,
) -> float:
    r"""The learning-rate multiplier after ``step`` optimiser steps.

    During the first ``W = round(warmup_epochs · steps_per_epoch)`` steps the factor rises linearly,
    :math:`(s + 1) / W`, so the first step already uses a small non-zero rate and step ``W - 1``
    reaches 1. Afterwards it is :math:`\gamma^{m}` with ``m`` the number of milestones in
    ``lr_steps`` that the current epoch ``s // steps_per_epoch`` has reached.

    Args:
        step: Optimiser steps taken so far (0-based).
        steps_per_epoch: Optimiser steps per epoch.
        warmup_epochs: Warm-up length in epochs.
        lr_steps: Milestone epochs, increasing.
        lr_decay: Decay factor :math:`\gamma`.
    """
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return lr_decay ** bisect_right(lr_steps, step // steps_per_epoch)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` schedule to step once per iteration; see :func:`lr_factor`."""
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch: expected a positive integer, got {steps_per_epoch}")
    factor = partial(
        lr_factor,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=config.warmup_epochs,
        lr_steps=tuple(config.lr_steps),
        lr_decay=config.lr_decay,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
