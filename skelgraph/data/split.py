"""Train/validation splits by clip or by group of clips, K-fold partitions, and class-balanced
subsets of clips.

Split by clip (or video), never by window: overlapping windows of one clip on both sides of a
split leak the validation set into training and inflate the reported accuracy.
:func:`stratified_split` takes the per-window clip ids as its ``groups`` argument to split a
window-sampled dataset; every window of a clip then lands on the same side.

Clips may also belong to a *group* (the ``group`` column of a skeleton folder's ``labels.csv``:
a subject, performer, camera or video; ``dataset.clip_groups``). Clips of one group share more
than their class (the same person, the same scene), so a split that puts one group on both sides
measures how well a model recognises that group again, not a new one. :func:`grouped_split` and
:func:`kfold_splits` with ``clip_groups`` keep every group whole on one side; their inputs are
per clip. A clip without a group (``""`` or :obj:`None`) is a group of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["balanced_subset", "grouped_split", "kfold_splits", "stratified_split"]


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
        clip go to the same side. Default: every sample is its own clip. These are clip ids, not
        the clip groups of ``labels.csv``: hold out whole groups with :func:`grouped_split`.

    Returns
    -------
    train_idx, val_idx : (N_train,), (N_val,) int64 arrays
        Sorted, disjoint sample indices covering ``range(N)``.
    """
    labels = _check_labels(labels)
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


def grouped_split(
    labels: Sequence | np.ndarray,
    clip_groups: Sequence | np.ndarray,
    fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Split clip indices into ``(train_idx, val_idx)`` holding out whole groups of clips.

    No group has clips on both sides. With ``N`` clips the target size of the validation part is
    :math:`n^* = \mathrm{fraction} \cdot N`; the groups are taken in an order drawn from ``seed``,
    and a group is *admissible* when it is not yet held out, holding it out brings the validation
    size strictly closer to :math:`n^*` (:math:`|n_\mathrm{val} + n_g - n^*| <
    |n_\mathrm{val} - n^*|`), and it leaves every class at least one training clip. Then:

    1. Coverage: for every class, the rarest first (held by the fewest groups; ties in the
       sorted order of the classes), that has no validation clip yet, the first admissible group
       holding it (in the seeded order) is held out.
    2. Fill: every further admissible group, in the seeded order, is held out.
    3. When no group was admissible (every group is larger than :math:`2 n^*`, or holds the last
       clips of a class), the one group that takes the fewest classes out of training, then the
       one closest in size to :math:`n^*`, then the first in the seeded order, is held out: the
       validation part is never empty.

    So validation covers as many classes as the groups allow without losing a class from
    training, its size is as close to :math:`n^*` as adding any single further group can bring
    it, and the split is a deterministic function of the arguments.

    Parameters
    ----------
    labels : (N,) array-like
        Class of every clip (ints or strings).
    clip_groups : (N,) array-like
        Group of every clip (strings or ints; ``""`` or :obj:`None`: a group of its own), e.g.
        ``dataset.clip_groups``. At least 2 groups.
    fraction : float
        Target fraction of the clips in validation, in ``(0, 1)``.
    seed : int
        Seed of the order of the groups.

    Returns
    -------
    train_idx, val_idx : (N_train,), (N_val,) int64 arrays
        Sorted, disjoint clip indices covering ``range(N)``.

    Raises
    ------
    ValueError
        On a fraction outside ``(0, 1)``, mismatched shapes, or fewer than 2 groups.
    """
    labels = _check_labels(labels)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a value in (0, 1), got {fraction}")
    group_of = _group_ids(clip_groups, labels.shape)
    num_groups = int(group_of.max()) + 1 if len(group_of) else 0
    if num_groups < 2:
        raise ValueError(
            f"clip_groups: expected at least 2 groups to hold out whole groups, got {num_groups}"
        )
    _, class_of = np.unique(labels, return_inverse=True)
    num_classes = int(class_of.max()) + 1
    rng = np.random.default_rng(seed)
    rank = np.empty(num_groups, dtype=np.int64)  # position of every group in the seeded order
    rank[rng.permutation(num_groups)] = np.arange(num_groups)
    sizes = np.bincount(group_of, minlength=num_groups)
    # per group: its classes and how many clips of each it holds
    pairs, counts = np.unique(group_of * num_classes + class_of, return_counts=True)
    pair_group, pair_class = np.divmod(pairs, num_classes)
    bounds = np.searchsorted(pair_group, np.arange(num_groups + 1))
    holds = [
        (pair_class[bounds[g] : bounds[g + 1]], counts[bounds[g] : bounds[g + 1]])
        for g in range(num_groups)
    ]
    target = fraction * len(labels)
    in_train = np.bincount(class_of, minlength=num_classes)  # training clips of every class
    in_val = np.zeros(num_classes, dtype=bool)
    held = np.zeros(num_groups, dtype=bool)
    size = 0

    def admissible(g: int) -> bool:
        classes, n = holds[g]
        return (
            not held[g]
            and abs(size + sizes[g] - target) < abs(size - target)
            and bool((in_train[classes] > n).all())
        )

    def hold_out(g: int) -> None:
        nonlocal size
        classes, n = holds[g]
        held[g] = True
        size += int(sizes[g])
        in_train[classes] -= n
        in_val[classes] = True

    order = np.argsort(rank)  # the groups in the seeded order
    groups_of_class = [
        order[np.isin(order, pair_group[pair_class == c])] for c in range(num_classes)
    ]
    # 1. coverage: the classes with the fewest groups have the fewest chances, so they go first
    rarest = sorted(range(num_classes), key=lambda c: (len(groups_of_class[c]), c))
    for c in rarest:
        if in_val[c]:
            continue
        for g in groups_of_class[c]:
            if admissible(int(g)):
                hold_out(int(g))
                break
    # 2. fill: one pass suffices, as a group that is not admissible never becomes so (the size
    # only grows towards the target, the training counts only shrink)
    for g in order:
        if admissible(int(g)):
            hold_out(int(g))
    # 3. nothing admissible: one group all the same, the least harmful
    if size == 0:
        lost = [int((in_train[holds[g][0]] == holds[g][1]).sum()) for g in range(num_groups)]
        hold_out(min(range(num_groups), key=lambda g: (lost[g], abs(sizes[g] - target), rank[g])))
    val = held[group_of]
    return np.flatnonzero(~val), np.flatnonzero(val)


def kfold_splits(
    labels: Sequence | np.ndarray,
    k: int,
    seed: int = 0,
    *,
    clip_groups: Sequence | np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K-fold cross-validation splits of clip indices: ``k`` pairs ``(train_idx, val_idx)`` whose
    validation parts partition the clips (every clip is validated exactly once).

    * Without ``clip_groups``: stratified by class. The clips of every class (in the sorted order
      of the classes), each class permuted by ``seed``, are dealt to the folds in turn, the deal
      continuing from class to class; so fold sizes differ by at most one clip, a class of ``n``
      clips has a clip in ``min(n, k)`` folds, and every class of at least 2 clips keeps training
      clips in every fold.
    * With ``clip_groups``: grouped. Every group goes whole into one fold: the groups, largest
      first (equal sizes in an order drawn from ``seed``), each join the fold with the fewest
      clips so far (the lowest fold on a tie), which balances the folds' clip counts. Class
      balance then follows the groups; a group holding a whole class leaves that class out of
      its fold's training part.

    Parameters
    ----------
    labels : (N,) array-like
        Class of every clip (ints or strings).
    k : int
        The number of folds, at least 2 and at most the number of clips (or of groups).
    seed : int
        Seed of the permutations.
    clip_groups : (N,) array-like, optional
        Group of every clip (``""`` or :obj:`None`: a group of its own), e.g.
        ``dataset.clip_groups``. Default: no groups.

    Returns
    -------
    list of (train_idx, val_idx) int64 array pairs
        Fold ``i``'s training and validation clip indices, sorted and disjoint.
    """
    labels = _check_labels(labels)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"k: expected an integer number of folds >= 2, got {k!r}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=np.int64)
    if clip_groups is None:
        if len(labels) < k:
            raise ValueError(f"k: expected at most as many folds as clips ({len(labels)}), got {k}")
        dealt = np.concatenate(
            [rng.permutation(np.flatnonzero(labels == cls)) for cls in np.unique(labels)]
        )
        fold[dealt] = np.arange(len(labels)) % k
    else:
        group_of = _group_ids(clip_groups, labels.shape)
        sizes = np.bincount(group_of)
        if len(sizes) < k:
            raise ValueError(f"k: expected at most as many folds as groups ({len(sizes)}), got {k}")
        shuffled = rng.permutation(len(sizes))
        fold_sizes = np.zeros(k, dtype=np.int64)
        group_fold = np.empty(len(sizes), dtype=np.int64)
        for g in shuffled[np.argsort(-sizes[shuffled], kind="stable")]:
            f = int(np.argmin(fold_sizes))  # the first of the smallest folds
            group_fold[g] = f
            fold_sizes[f] += sizes[g]
        fold = group_fold[group_of]
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(k)]


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
    labels = _check_labels(labels)
    if limit < 1:
        raise ValueError(f"limit: expected a positive number of items, got {limit}")
    _, classes = np.unique(labels, return_inverse=True)
    order = np.argsort(classes, kind="stable")
    starts = np.searchsorted(classes[order], classes[order])  # first position of each class
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - starts  # position of every item within its class
    return np.sort(np.lexsort((classes, rank))[:limit])


def _check_labels(labels: Sequence | np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array, got shape {labels.shape}")
    return labels


def _group_ids(clip_groups: Sequence | np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``(N,)`` int64 ids ``0 .. G-1`` of the groups of ``clip_groups``: the named groups in their
    sorted order, then every clip without a group (``""`` or :obj:`None`) as a group of its own."""
    groups = np.asarray(clip_groups, dtype=object)
    if groups.shape != shape:
        raise ValueError(f"clip_groups: expected the shape of labels {shape}, got {groups.shape}")
    named = np.array([g is not None and g != "" for g in groups], dtype=bool)
    ids = np.empty(len(groups), dtype=np.int64)
    names = [str(g) for g in groups[named]]  # one type, so that sorting works on any mix
    _, ids[named] = np.unique(np.array(names, dtype=str), return_inverse=True)
    count = int(ids[named].max()) + 1 if named.any() else 0
    ids[~named] = count + np.arange(int((~named).sum()))
    return ids
