"""Stratified train/validation split by clip, and class-balanced subsets of clips.

Split by clip (or video), never by window: overlapping windows of one clip on both sides of a
split leak the validation set into training and inflate the reported accuracy. Pass the per-window
clip ids as ``groups`` to split a window-sampled dataset; every window of a clip then lands on the
same side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["balanced_subset", "stratified_split"]


def stratified_split(
    labels: Sequence | np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
    *,
    groups: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into ``(train_idx, val_idx)``, stratified per class.

    Each class of ``n`` clips sends ``round(n · fraction)`` of them, clamped to ``[1, n - 1]``, to
    validation, so that every class with at least 2 clips appears on both sides (a class with a
    single clip stays in training). The split is a deterministic function of ``labels``, ``groups``,
    ``fraction`` and ``seed``.

    Parameters
    ----------
    labels : (N,) array-like
        Class of every sample (ints or strings).
    fraction : float
        Fraction of every class's clips that goes to validation, in ``(0, 1)``.
    seed : int
        Seed of the random permutation.
    groups : (N,) array-like of int, optional
        Clip id of every sample (e.g. ``dataset.clip_ids`` for window sampling); all samples of a
        clip go to the same side. Default: every sample is its own clip.

    Returns
    -------
    train_idx, val_idx : (N_train,), (N_val,) int64 arrays
        Sorted, disjoint sample indices covering ``range(N)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a value in (0, 1), got {fraction}")
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)
    if groups.shape != labels.shape:
        raise ValueError(f"groups: expected the shape of labels {labels.shape}, got {groups.shape}")
    clip_ids, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    clip_labels = labels[first]
    mismatch = np.flatnonzero(labels != clip_labels[inverse])
    if mismatch.size:
        i = mismatch[0]
        raise ValueError(
            f"labels: samples of clip {groups[i]} have different labels "
            f"({clip_labels[inverse[i]]!r} and {labels[i]!r})"
        )
    rng = np.random.default_rng(seed)
    is_val = np.zeros(len(clip_ids), dtype=bool)
    for cls in np.unique(clip_labels):
        members = rng.permutation(np.flatnonzero(clip_labels == cls))
        n = len(members)
        n_val = min(max(round(n * fraction), 1), n - 1) if n >= 2 else 0
        is_val[members[:n_val]] = True
    val_sample = is_val[inverse]
    return np.flatnonzero(~val_sample), np.flatnonzero(val_sample)


def balanced_subset(labels: Sequence | np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` items taken in turn from every class: the first item of every
    class (in the order of the sorted class values), then the second, and so on, so that a small
    subset still covers the classes. Deterministic.

    Parameters
    ----------
    labels : (N,) array-like
        Class of every item (ints or strings).
    limit : int
        The most items to keep, positive.

    Returns
    -------
    (min(N, limit),) int64 array
        Sorted indices into ``labels``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    if limit < 1:
        raise ValueError(f"limit: expected a positive number of items, got {limit}")
    _, classes = np.unique(labels, return_inverse=True)
    order = np.argsort(classes, kind="stable")
    starts = np.searchsorted(classes[order], classes[order])  # first position of each class
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts  # position of every item within its class
    return np.sort(np.lexsort((classes, rank))[:limit])
