"""Checkpoints shipped with the package: ``skelgraph/pretrained/<name>.pt``.

A packaged checkpoint is a trainer checkpoint (:mod:`skelgraph.models.checkpoint`) — possibly a
fused :class:`~skelgraph.models.Ensemble` — whose ``meta`` holds the class names, layout, window,
preprocessing and inference settings::

    from skelgraph.models import load_pretrained

    model, meta = load_pretrained("penn-action")     # eval mode
    meta["classes"], meta["layout"]["name"], meta["window"]

Where a checkpoint file is also accepted, :func:`~skelgraph.models.checkpoint.resolve_checkpoint`
turns a name or a path into the file.
"""

from __future__ import annotations

from typing import Any

import torch

from skelgraph.models.base import SkeletonModel
from skelgraph.models.checkpoint import (
    PRETRAINED_SUFFIX,
    available_pretrained,
    load_checkpoint,
    pretrained_path,
)

__all__ = ["PRETRAINED_SUFFIX", "available_pretrained", "load_pretrained", "pretrained_path"]


def load_pretrained(
    name: str = "penn-action", *, map_location: str | torch.device = "cpu"
) -> tuple[SkeletonModel, dict[str, Any]]:
    """Loads the packaged checkpoint ``name``.

    Args:
        name: One of :func:`available_pretrained`.
        map_location: Device of the model.

    Returns:
        ``(model, meta)`` with the model in eval mode and the checkpoint meta (``classes``,
        ``layout``, ``in_channels``, ``window``, ``preprocess``, ``inference``, ...).

    Raises:
        FileNotFoundError: when no such checkpoint is packaged (see :func:`pretrained_path`).
    """
    return load_checkpoint(pretrained_path(name), map_location=map_location)
