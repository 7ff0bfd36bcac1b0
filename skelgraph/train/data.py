"""The data of a training run: a skeleton folder or a Penn Action root opened with a config's data
settings, and its training, validation and test parts.

The validation part is the data's ``val`` split when it has one, otherwise ``data.val_fraction``
of the training clips, held out by clip (never by window) so that no clip has windows on both
sides: whole groups of clips when the clips have groups (``labels.csv``'s ``group`` column,
:func:`~skelgraph.data.grouped_split`), else a split stratified by class
(:func:`~skelgraph.data.stratified_split`). With ``data.folds`` (cross-validation) it is fold
``data.fold`` of the training clips (:func:`~skelgraph.data.kfold_splits`, grouped in the same
way) and the test split is left alone. With ``limit`` every part keeps at most that many clips,
taken in turn from every class (:func:`~skelgraph.data.balanced_subset`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset
from torch_geometric.transforms import Compose

from skelgraph.augment import RandomRotation, default_train_transform
from skelgraph.clip import SkeletonClip
from skelgraph.data import (
    PennAction,
    SkeletonDataset,
    SkeletonFolder,
    balanced_subset,
    grouped_split,
    kfold_splits,
    stratified_split,
)
from skelgraph.data.folder import LABELS_FILE, read_labels_csv
from skelgraph.data.penn_action import penn_action_files, read_penn_action
from skelgraph.layouts import Layout
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import DataConfig, TrainConfig
from skelgraph.utils import PathLike

__all__ = [
    "DataSplits",
    "inference_settings",
    "is_penn_action",
    "limit_clips",
    "open_dataset",
    "read_clips",
    "split_data",
    "subset_by_clips",
    "train_transform",
    "training_pool",
]


def is_penn_action(root: PathLike) -> bool:
    """Whether ``root`` is a Penn Action root (``labels/*.mat``) rather than a skeleton folder."""
    labels = Path(root) / "labels"
    return labels.is_dir() and any(labels.glob("*.mat"))


def read_clips(root: PathLike) -> Iterator[tuple[SkeletonClip, str, str]]:
    """``(clip, class name, split)`` of every clip of a Penn Action root or a skeleton folder, in
    clip order, as read (not preprocessed); the split is ``""`` for a folder row without one."""
    root = Path(root)
    if is_penn_action(root):
        yield from map(read_penn_action, penn_action_files(root))
        return
    for entry in read_labels_csv(root):
        try:
            clip = SkeletonClip.load(root / entry.path)
        except (ValueError, TypeError, OSError) as e:
            raise ValueError(f"{root / LABELS_FILE} line {entry.line}: {e}") from e
        yield clip, entry.label, entry.split


def train_transform(data: DataConfig, layout: Layout, in_channels: int) -> Compose:
    """The switched-on augmentations of ``data`` with its magnitudes, in the order rotation,
    scale, shear, translation, mirror, jitter (:func:`~skelgraph.augment.default_train_transform`).

    Raises:
        ValueError: When ``data.rotation_degrees`` rotates about x or y and the clips are 2D
            (``in_channels`` 3).
    """
    degrees = data.rotation_degrees
    max_degrees = (degrees[0] if len(degrees) == 1 else tuple(degrees)) if data.rotation else None
    if max_degrees is not None:
        try:
            RandomRotation(max_degrees).check_dims(in_channels - 1)
        except ValueError as e:
            raise ValueError(f"data.rotation_degrees: {e}; the clips are 2D") from None
    return default_train_transform(
        layout,
        max_degrees=max_degrees,
        scales=tuple(data.scale_range) if data.scale else None,
        scale_per_axis=data.scale_per_axis,
        max_shear=data.shear_max if data.shear else None,
        max_offset=data.translation_max if data.translation else None,
        mirror_p=data.mirror_p if data.mirror else None,
        jitter_std=data.jitter_std if data.jitter else None,
    )


def open_dataset(
    root: PathLike,
    data: DataConfig,
    *,
    split: str | None,
    train: bool = False,
    classes: Sequence[str] | None = None,
    observed_fraction: float = 1.0,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> SkeletonDataset:
    """A :class:`PennAction` or :class:`SkeletonFolder` dataset of ``root`` with ``data`` settings.

    Args:
        root: A Penn Action root (``labels/*.mat``) or a skeleton folder (``labels.csv``).
        data: Window, sampling, crop ratios, augmentation switches and preprocessing.
        split: Split to select (``None`` = every clip).
        train: Training mode: random crop with ``p_interval_train`` and the switched-on
            augmentations; otherwise the deterministic ``p_interval_val`` crop.
        classes: Class names in label order (default: the dataset's own).
        observed_fraction: Keep the first fraction of every clip (early recognition).
        cache_dir: Where the preprocessed cache lives (default: the datasets' user cache folder).
        progress: Show a progress bar while the cache is built.
    """
    kwargs: dict[str, Any] = {
        "classes": classes,
        "window": data.window,
        "sampling": data.sampling,
        "stride": data.stride,
        "train": train,
        "p_interval": data.p_interval_train if train else data.p_interval_val,
        "preprocess": PreprocessConfig(**data.preprocess),
        "observed_fraction": observed_fraction,
        "cache_dir": cache_dir,
        "progress": progress,
    }
    cls = PennAction if is_penn_action(root) else SkeletonFolder
    dataset = cls(root, split, **kwargs)
    if train:
        dataset.transform = train_transform(data, dataset.layout, dataset.in_channels)
    return dataset


def subset_by_clips(dataset: SkeletonDataset, clips: np.ndarray) -> Subset:
    """The samples of ``dataset`` whose clip id is in ``clips`` (every window of those clips)."""
    return Subset(dataset, np.flatnonzero(np.isin(dataset.clip_ids, clips)).tolist())


def limit_clips(
    dataset: SkeletonDataset, clips: np.ndarray | None, limit: int | None
) -> np.ndarray | None:
    """The clip ids of ``dataset`` (``clips``, or all of them for :obj:`None`) cut to at most
    ``limit``, taken in turn from every class; ``clips`` as they are without a limit."""
    if limit is None:
        return clips
    if clips is None:
        clips = np.arange(dataset.num_clips)
    return clips[balanced_subset(dataset.clip_labels[clips], limit)]


@dataclass
class DataSplits:
    """The datasets of a training run.

    Attributes:
        train: Training samples (augmented).
        val: Validation samples, or :obj:`None` when ``val_fraction`` is 0 and there is no split.
        base: An evaluation-mode dataset of the training pool (layout, classes, channels).
        pool_split: The split of the training pool: ``"train"``, or :obj:`None` (every clip) when
            no clip is marked ``train``.
        val_split: The split holding the validation clips (``"val"`` or ``pool_split``).
        val_clips: The validation clip ids within ``val_split`` (:obj:`None` = all of them).
        test_split: ``"test"`` when the data has test clips besides training clips (and the run
            is no cross-validation fold), else :obj:`None`.
        val_groups: The clip groups of the validation part, sorted, when it holds out whole
            groups of the training pool; else :obj:`None`.
        val_rule: How the validation part was chosen, in one line (printed by
            :func:`~skelgraph.train.run.train`).
    """

    train: Dataset
    val: Dataset | None
    base: SkeletonDataset
    pool_split: str | None
    val_split: str | None
    val_clips: np.ndarray | None
    test_split: str | None
    val_groups: list[str] | None = None
    val_rule: str = ""


def _split_size(root: PathLike, data: DataConfig, split: str, **kwargs: Any) -> int:
    cls = PennAction if is_penn_action(root) else SkeletonFolder
    if split not in cls.SPLITS:
        return 0
    return open_dataset(root, data, split=split, **kwargs).num_clips


def training_pool(root: PathLike, data: DataConfig, **kwargs: Any) -> str | None:
    """The split of the training pool: ``"train"``, or :obj:`None` (every clip) when no clip is
    marked ``train``. ``kwargs`` go to :func:`open_dataset`."""
    return "train" if _split_size(root, data, "train", **kwargs) > 0 else None


def split_data(
    root: PathLike,
    config: TrainConfig,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> DataSplits:
    """Training, validation and test data of ``root`` (see the module docstring).

    The training pool is the ``train`` split (every clip when nothing is marked ``train``). The
    validation part is, in this order:

    * with ``data.folds``: fold ``data.fold`` of the pool's clips (:func:`kfold_splits` with the
      pool's ``clip_groups``: whole groups when the clips have groups, else stratified); the
      data's ``val`` split is not used and ``test_split`` is :obj:`None`, so that nothing of a
      cross-validation run sees the test clips;
    * the ``val`` split when there is one;
    * none when ``data.val_fraction`` is 0;
    * else ``data.val_fraction`` of the pool's clips: whole groups when the clips have groups
      (:func:`grouped_split`), else stratified by class (:func:`stratified_split`).

    With ``config.limit`` the training and validation parts keep that many clips at most
    (:func:`limit_clips`). ``cache_dir`` and ``progress`` are passed to :func:`open_dataset`.

    Raises:
        ValueError: When the pool's clips cannot be split as asked: fewer clips (or groups) than
            ``data.folds``, or a single group for a grouped ``val_fraction``.
    """
    data = config.data
    kwargs = {"cache_dir": cache_dir, "progress": progress}
    pool_split = training_pool(root, data, **kwargs)
    has_train = pool_split is not None
    base = open_dataset(root, data, split=pool_split, **kwargs)
    pool = open_dataset(root, data, split=pool_split, train=True, **kwargs)
    test_split = "test" if has_train and _split_size(root, data, "test", **kwargs) else None
    groups = base.clip_groups
    pool_name = "training clips" if has_train else "clips"
    grouping = "whole groups of labels.csv's group column" if groups is not None else None
    val_groups: list[str] | None = None
    if data.folds is not None:
        try:
            folds = kfold_splits(base.clip_labels, data.folds, config.seed, clip_groups=groups)
        except ValueError as e:
            raise ValueError(f"{root}: data.folds: {e}") from None
        train_clips, val_clips = folds[data.fold]
        train_clips = limit_clips(pool, train_clips, config.limit)
        val_clips = limit_clips(base, val_clips, config.limit)
        val, val_split, test_split = subset_by_clips(base, val_clips), pool_split, None
        val_groups = _groups_of(groups, val_clips)
        rule = (
            f"fold {data.fold} (folds 0-{data.folds - 1}) of the {base.num_clips} {pool_name}, "
            f"{grouping or 'stratified by class'} (seed {config.seed})"
        )
        if has_train and _split_size(root, data, "val", **kwargs):
            rule += "; the data's val split is not used"
    elif has_train and _split_size(root, data, "val", **kwargs):
        val_set = open_dataset(root, data, split="val", classes=base.classes, **kwargs)
        train_clips = limit_clips(pool, None, config.limit)
        val_clips = limit_clips(val_set, None, config.limit)
        val = val_set if val_clips is None else subset_by_clips(val_set, val_clips)
        val_split, rule = "val", "the data's val split"
    elif data.val_fraction == 0:
        train_clips = limit_clips(pool, None, config.limit)
        val, val_split, val_clips = None, None, None
        rule = "none (data.val_fraction=0)"
    else:
        labels, fraction = base.clip_labels, data.val_fraction
        if groups is not None:
            try:
                train_clips, val_clips = grouped_split(labels, groups, fraction, config.seed)
            except ValueError as e:
                raise ValueError(
                    f"{root}: data.val_fraction: {e} (the {pool_name} name "
                    f"{len(set(groups) - {''})} group; set data.val_fraction=0 or drop the "
                    "group column)"
                ) from None
        else:
            train_clips, val_clips = stratified_split(labels, fraction, config.seed)
        train_clips = limit_clips(pool, train_clips, config.limit)
        val_clips = limit_clips(base, val_clips, config.limit)
        val, val_split = subset_by_clips(base, val_clips), pool_split
        val_groups = _groups_of(groups, val_clips)
        rule = (
            f"{fraction:g} of the {base.num_clips} {pool_name}, "
            f"{grouping or 'stratified by class'} (seed {config.seed})"
        )
    if val is not None:
        count = len(val_clips) if val_clips is not None else val.num_clips
        rule = f"{count} clips: {rule}"
        if val_groups:
            shown = ", ".join(val_groups[:8]) + (", ..." if len(val_groups) > 8 else "")
            rule += f"; held-out groups: {shown}"
    train = pool if train_clips is None else subset_by_clips(pool, train_clips)
    return DataSplits(
        train, val, base, pool_split, val_split, val_clips, test_split, val_groups, rule
    )


def _groups_of(groups: np.ndarray | None, clips: np.ndarray) -> list[str] | None:
    """The sorted names of the groups of ``clips`` (:obj:`None` without groups)."""
    return None if groups is None else sorted(set(groups[clips].tolist()) - {""})


def inference_settings(config: TrainConfig) -> dict[str, Any]:
    """How a checkpoint's model expects evaluation samples: stored in ``meta["inference"]``."""
    return {
        "sampling": config.data.sampling,
        "stride": config.data.stride,
        "p_interval": list(config.data.p_interval_val),
        "reduce": config.reduce,
    }
