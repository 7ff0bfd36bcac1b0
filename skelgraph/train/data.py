"""The data of a training run: a skeleton folder or a Penn Action root opened with a config's data
settings, and its training, validation and test parts.

The validation part is the data's ``val`` split when it has one, otherwise a stratified
``data.val_fraction`` of the training clips, held out by clip (never by window) so that no clip has
windows on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset
from torch_geometric.transforms import Compose

from skelgraph.augment import (
    GaussianJitter,
    RandomMirror,
    RandomRotation,
    RandomScale,
    RandomTranslation,
)
from skelgraph.data import PennAction, SkeletonDataset, SkeletonFolder, stratified_split
from skelgraph.layouts import Layout
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import DataConfig, TrainConfig
from skelgraph.utils import PathLike

__all__ = [
    "DataSplits",
    "inference_settings",
    "is_penn_action",
    "open_dataset",
    "split_data",
    "subset_by_clips",
    "train_transform",
]


def is_penn_action(root: PathLike) -> bool:
    """Whether ``root`` is a Penn Action root (``labels/*.mat``) rather than a skeleton folder."""
    labels = Path(root) / "labels"
    return labels.is_dir() and any(labels.glob("*.mat"))


def train_transform(data: DataConfig, layout: Layout) -> Compose:
    """The switched-on geometric augmentations of ``data`` (rotation, scale, translation, mirror,
    jitter; default magnitudes of :mod:`skelgraph.augment`), in that order."""
    transforms = []
    if data.rotation:
        transforms.append(RandomRotation())
    if data.scale:
        transforms.append(RandomScale())
    if data.translation:
        transforms.append(RandomTranslation())
    if data.mirror:
        transforms.append(RandomMirror(layout))
    if data.jitter:
        transforms.append(GaussianJitter())
    return Compose(transforms)


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
        dataset.transform = train_transform(data, dataset.layout)
    return dataset


def subset_by_clips(dataset: SkeletonDataset, clips: np.ndarray) -> Subset:
    """The samples of ``dataset`` whose clip id is in ``clips`` (every window of those clips)."""
    return Subset(dataset, np.flatnonzero(np.isin(dataset.clip_ids, clips)).tolist())


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
        test_split: ``"test"`` when the data has test clips besides training clips, else
            :obj:`None`.
    """

    train: Dataset
    val: Dataset | None
    base: SkeletonDataset
    pool_split: str | None
    val_split: str | None
    val_clips: np.ndarray | None
    test_split: str | None


def _split_size(root: PathLike, data: DataConfig, split: str, **kwargs: Any) -> int:
    cls = PennAction if is_penn_action(root) else SkeletonFolder
    if split not in cls.SPLITS:
        return 0
    return open_dataset(root, data, split=split, **kwargs).num_clips


def split_data(
    root: PathLike,
    config: TrainConfig,
    cache_dir: PathLike | None = None,
    progress: bool = False,
) -> DataSplits:
    """Training, validation and test data of ``root`` (see the module docstring).

    The training pool is the ``train`` split (every clip when nothing is marked ``train``). The
    validation part is the ``val`` split when there is one, otherwise a stratified
    ``data.val_fraction`` of the pool's clips (:func:`stratified_split`, grouped by clip).
    ``cache_dir`` and ``progress`` are passed to :func:`open_dataset`.
    """
    data = config.data
    kwargs = {"cache_dir": cache_dir, "progress": progress}
    has_train = _split_size(root, data, "train", **kwargs) > 0
    pool_split = "train" if has_train else None
    base = open_dataset(root, data, split=pool_split, **kwargs)
    pool = open_dataset(root, data, split=pool_split, train=True, **kwargs)
    test_split = "test" if has_train and _split_size(root, data, "test", **kwargs) else None
    if has_train and _split_size(root, data, "val", **kwargs):
        val = open_dataset(root, data, split="val", classes=base.classes, **kwargs)
        return DataSplits(pool, val, base, pool_split, "val", None, test_split)
    if data.val_fraction == 0:
        return DataSplits(pool, None, base, pool_split, None, None, test_split)
    train_clips, val_clips = stratified_split(base.clip_labels, data.val_fraction, config.seed)
    return DataSplits(
        train=subset_by_clips(pool, train_clips),
        val=subset_by_clips(base, val_clips),
        base=base,
        pool_split=pool_split,
        val_split=pool_split,
        val_clips=val_clips,
        test_split=test_split,
    )


def inference_settings(config: TrainConfig) -> dict[str, Any]:
    """How a checkpoint's model expects evaluation samples: stored in ``meta["inference"]``."""
    return {
        "sampling": config.data.sampling,
        "stride": config.data.stride,
        "p_interval": list(config.data.p_interval_val),
        "reduce": config.reduce,
    }
