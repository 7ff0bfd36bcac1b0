"""Checkpoints shipped with the package: ``skelgraph/pretrained/<name>.pt``.

A packaged checkpoint is a trainer checkpoint (:mod:`skelgraph.train.checkpoint`) — possibly a fused
:class:`~skelgraph.models.Ensemble` — whose ``meta`` holds the class names, layout, window,
preprocessing and inference settings::

    from skelgraph.models import load_pretrained

    model, meta = load_pretrained("penn-action")     # eval mode
    meta["classes"], meta["layout"]["name"], meta["window"]
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import torch

from skelgraph.models.base import SkeletonModel

__all__ = ["PRETRAINED_SUFFIX", "available_pretrained", "load_pretrained", "pretrained_path"]

#: File suffix of a packaged checkpoint.
PRETRAINED_SUFFIX = ".pt"


def _pretrained_dir() -> Path:
    return Path(str(importlib.resources.files("skelgraph").joinpath("pretrained")))


def available_pretrained() -> list[str]:
    """The names of the packaged checkpoints (file stems in ``skelgraph/pretrained``), sorted."""
    folder = _pretrained_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{PRETRAINED_SUFFIX}") if p.is_file())


def pretrained_path(name: str) -> Path:
    """The file of the packaged checkpoint ``name``.

    Raises:
        FileNotFoundError: naming the expected file and the known names when there is none.
    """
    known = available_pretrained()
    path = _pretrained_dir() / f"{name}{PRETRAINED_SUFFIX}"
    if name not in known:
        listed = ", ".join(repr(n) for n in known) or "none (no checkpoint is packaged)"
        raise FileNotFoundError(
            f"pretrained model {name!r}: expected the file {path}, not found; known names: {listed}"
        )
    return path


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
    from skelgraph.train.checkpoint import load_checkpoint

    model, meta = load_checkpoint(pretrained_path(name), map_location=map_location)
    return model.eval(), meta
