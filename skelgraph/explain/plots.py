"""Pictures of an explanation, drawn with matplotlib (no pyplot, no GUI) and written as PNG.

Coordinates are the model's preprocessed joints (pelvis-centred, torso-scaled, image ``y``
downwards); adjacency matrices weigh the message ``j → i`` at ``[i, j]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from skelgraph.layouts import Layout
from skelgraph.utils import atomic_write

__all__ = [
    "plot_edges",
    "plot_importance",
    "plot_probability",
    "plot_temporal_attention",
    "top_edges",
]


def top_edges(adjacency: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """The ``k`` strongest edges ``(j, i, weight)`` of ``adjacency`` :math:`(V, V)` by
    magnitude, self-loops and the weaker direction of each pair left out."""
    a = np.asarray(adjacency, dtype=np.float64)
    pair = np.where(np.abs(a) >= np.abs(a.T), a, 0.0)
    np.fill_diagonal(pair, 0.0)
    flat = np.argsort(-np.abs(pair), axis=None)[:k]
    targets, sources = np.unravel_index(flat, a.shape)
    return [(int(j), int(i), float(a[i, j])) for i, j in zip(targets, sources, strict=True)]


def draw_skeleton(
    ax: Axes,
    coords: np.ndarray,
    layout: Layout,
    *,
    edges: Sequence[tuple[int, int, float]] = (),
    importance: np.ndarray | None = None,
    title: str = "",
) -> None:
    """The bones (grey), ``edges`` (red for positive, blue for negative weights, width by
    magnitude) and the joints (size and colour by ``importance`` :math:`(V,)` when given) of
    ``coords`` :math:`(V, \\ge 2)` on ``ax``."""
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    for i, j in layout.bones:
        ax.plot(*xy[[i, j]].T, color="0.7", lw=2, zorder=1)
    strongest = max((abs(w) for *_, w in edges), default=1.0) or 1.0
    for j, i, w in edges:
        ax.plot(
            *xy[[j, i]].T,
            color="tab:red" if w > 0 else "tab:blue",
            lw=0.5 + 3.5 * abs(w) / strongest,
            alpha=0.8,
            zorder=2,
        )
    if importance is None:
        ax.scatter(*xy.T, s=15, color="k", zorder=3)
    else:
        scale = np.abs(importance).max() or 1.0
        ax.scatter(
            *xy.T,
            s=10 + 150 * np.abs(importance) / scale,
            c=importance,
            cmap="coolwarm",
            vmin=-scale,
            vmax=scale,
            edgecolors="k",
            linewidths=0.3,
            zorder=3,
        )
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)


def plot_edges(
    path: str | os.PathLike[str],
    coords: np.ndarray,
    layout: Layout,
    graphs: Mapping[str, np.ndarray],
    top_k: int,
) -> None:
    """One panel per graph :math:`(V, V)` of ``graphs`` (e.g. every layer and their mean):
    the skeleton ``coords`` :math:`(V, C)` with the graph's ``top_k`` strongest edges."""
    fig, axes = _grid(len(graphs))
    for ax, (name, graph) in zip(axes, graphs.items(), strict=False):
        draw_skeleton(ax, coords, layout, edges=top_edges(graph, top_k), title=name)
    _save(fig, path)


def plot_importance(
    path: str | os.PathLike[str],
    coords: np.ndarray,
    layout: Layout,
    importance: np.ndarray,
    panels: int = 8,
) -> None:
    """Joint importance over time: ``panels`` evenly spaced frames of ``coords``
    :math:`(T, V, C)` with every joint sized and coloured by ``importance`` :math:`(T, V)`."""
    frames = np.unique(np.linspace(0, len(coords) - 1, panels).round().astype(int))
    fig, axes = _grid(len(frames))
    scale = np.abs(importance).max() or 1.0
    for ax, t in zip(axes, frames, strict=False):
        draw_skeleton(ax, coords[t], layout, importance=importance[t] / scale, title=f"frame {t}")
    _save(fig, path)


def plot_temporal_attention(
    path: str | os.PathLike[str], temporal: Mapping[str, np.ndarray]
) -> None:
    """A heatmap per layer of temporal attention :math:`(T, T)` (query frame by key frame)."""
    fig, axes = _grid(len(temporal), size=3.0)
    for ax, (name, weights) in zip(axes, temporal.items(), strict=False):
        image = ax.imshow(weights, cmap="viridis", origin="upper")
        ax.set_xlabel("key frame", fontsize=8)
        ax.set_ylabel("query frame", fontsize=8)
        ax.set_title(name, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    _save(fig, path)


def plot_probability(
    path: str | os.PathLike[str], probabilities: np.ndarray, classes: Sequence[str], top: int = 5
) -> None:
    """The probability of the ``top`` classes (by their mean) over the frames,
    ``probabilities`` :math:`(T, K)`; a clip-level model (:math:`T = 1`) gets bars."""
    order = np.argsort(-probabilities.mean(axis=0))[:top]
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    if len(probabilities) == 1:
        ax.barh([classes[c] for c in order][::-1], probabilities[0, order][::-1])
        ax.set_xlabel("probability")
    else:
        for c in order:
            ax.plot(probabilities[:, c], label=classes[c])
        ax.set_xlabel("frame")
        ax.set_ylabel("probability")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    _save(fig, path)


def _grid(panels: int, size: float = 2.2) -> tuple[Figure, list[Axes]]:
    columns = min(panels, 5)
    rows = -(-panels // columns)
    fig = Figure(figsize=(size * columns, size * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.set_axis_off()
    return fig, flat[:panels]


def _save(fig: Figure, path: str | os.PathLike[str]) -> None:
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
