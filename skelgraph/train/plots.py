"""PNG plots of training curves, confusion matrices and early-recognition curves (matplotlib Agg).

Figures are drawn on :class:`matplotlib.figure.Figure` with the Agg canvas, never through
``pyplot``, so plotting changes no global backend state and works without a display.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from skelgraph.utils import atomic_write

__all__ = ["plot_confusion", "plot_curve", "plot_history", "save_figure"]

#: Confusion matrices with at most this many classes get their counts written into the cells.
_ANNOTATE_MAX_CLASSES = 30


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    FigureCanvasAgg(fig)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


def plot_history(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Loss terms, accuracy and learning rate per epoch from the training log.

    Args:
        records: One dict per epoch with ``"epoch"``, ``"lr"``, ``"train"`` (loss terms and
            ``"acc"``) and optionally ``"val"`` (loss terms and ``"top1"``), as in ``log.jsonl``.
        path: Destination ``.png``.
    """
    epochs = [r["epoch"] for r in records]
    terms = [k for k in records[0]["train"] if k != "acc"] if records else []
    panels = [*terms, "accuracy", "lr"]
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()

    def series(split: str, key: str) -> list[float]:
        return [r.get(split, {}).get(key, np.nan) for r in records]

    for ax, name in zip(axes, panels, strict=False):
        if name == "lr":
            ax.plot(epochs, [r["lr"] for r in records], color="tab:gray")
            ax.set_yscale("log")
        elif name == "accuracy":
            ax.plot(epochs, series("train", "acc"), label="train")
            ax.plot(epochs, series("val", "top1"), label="val top-1")
            ax.set_ylim(0, 1)
            ax.legend()
        else:
            ax.plot(epochs, series("train", name), label="train")
            ax.plot(epochs, series("val", name), "--", label="val")
            ax.legend()
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    save_figure(fig, path)


def plot_confusion(
    cm: np.ndarray, classes: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> None:
    """The row-normalised confusion matrix (recall per true class), with counts for few classes."""
    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.45 * len(classes) + 2.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels=classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    if len(classes) <= _ANNOTATE_MAX_CLASSES:
        for (i, j), count in np.ndenumerate(cm):
            if count:
                color = "white" if rates[i, j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=color)
    save_figure(fig, path)


def plot_curve(
    x: Sequence[float],
    y: Sequence[float],
    path: str | os.PathLike[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
) -> None:
    """A single line plot with markers, ``y`` in ``[0, 1]`` (e.g. accuracy vs observed fraction)."""
    fig = Figure(figsize=(5, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(x, y, marker="o")
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
