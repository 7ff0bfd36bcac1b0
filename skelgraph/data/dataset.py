"""The base of the skeleton datasets: preprocessing cache, temporal sampling and PyG samples.

A dataset reads every clip of its source once, preprocesses it
(:func:`skelgraph.preprocess.preprocess`) and stores all clips in one ``.pt`` file: the frames of
every clip concatenated, ``[F, V, C]``, with the clip lengths, labels, splits and names. Later
constructions load the file and only select a split, cut clips (``observed_fraction``) and index
the samples, so one file serves every split, window, sampling and observed fraction.

The file is named ``<dataset>-<slot>-<content>.pt``: the slot is a hash of the source folder and
the settings the values depend on (preprocessing, target layout), the content a hash of those
settings and of what every source file holds (:func:`content_digest`: re-writing identical clips,
as a re-run converter does, keeps the cache). Building a new file for a slot removes the slot's
older files, so changed sources leave no stale cache behind.

One sample is a :class:`torch_geometric.data.Data`::

    x          FloatTensor [V, T, C]   joints as nodes, their time series as features (T = window)
    edge_index LongTensor  [2, E]      the layout's bones in both directions
    y          LongTensor  [1]         class index into ``dataset.classes``
    frame_mask BoolTensor  [1, T]      True for real frames, False for padding
    layout     Layout                  the joint layout (names, bones), a list in a batch
    clip_id    LongTensor  [1]         index of the sample's clip in this dataset

``torch_geometric.loader.DataLoader`` batches them as ``x [B·V, T, C]``, ``y [B]``,
``frame_mask [B, T]``, ``clip_id [B]``; :func:`to_dense` views that as ``[B, V, T, C]``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from skelgraph.augment import RandomTemporalCrop, default_train_transform
from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout, check_mappable, get_layout, map_keypoints
from skelgraph.layouts.graph import bone_edge_index
from skelgraph.preprocess import PreprocessConfig, preprocess, sliding_windows
from skelgraph.utils import atomic_write, progress_bar, user_cache_dir

__all__ = ["SkeletonDataset", "content_digest", "make_loader", "to_dense"]

Sampling = Literal["clip", "window"]

#: bump when the cache file layout, a loader or the preprocessing changes what a cache holds
CACHE_VERSION = 3


class SkeletonDataset(Dataset):
    r"""Base class of the skeleton datasets (:class:`PennAction`, :class:`SkeletonFolder`).

    Subclasses list their clip files (:meth:`_sources`) and read one of them (:meth:`_read`); this
    class caches, selects a split and turns clips into samples.

    Sampling (``window = T``):

    * ``"clip"`` — one sample per clip. Training (``train=True``): a random contiguous crop of a
      fraction ``p ~ U(p_interval)`` of the clip, resampled to ``T`` frames; evaluation: the
      centred ``p_interval = (0.95,)`` crop resampled to ``T`` (InfoGCN's convention, see
      :class:`~skelgraph.augment.RandomTemporalCrop`).
    * ``"window"`` — every sliding window of ``T`` frames with ``stride``
      (:func:`~skelgraph.preprocess.sliding_windows`: the last window is aligned to the end of the
      clip); a clip shorter than ``T`` gives one window, zero-padded and masked.

    Args:
        root (str or os.PathLike): The dataset directory.
        split (str, optional): Which clips to use: one of the subclass's :attr:`SPLITS`, or
            :obj:`None` / ``"all"`` for every clip.
        layout (Layout or str, optional): Target layout; clips in another layout are mapped with
            :func:`~skelgraph.layouts.map_keypoints` when :func:`~skelgraph.layouts.check_mappable`
            allows it. :obj:`None` takes the clips' own layout (they must then all share it).
            (default: :obj:`None`)
        classes (Sequence[str], optional): Class names, in label-index order; every clip's label
            must be one of them. (default: the subclass's :meth:`_default_classes`)
        window (int, optional): Frames per sample ``T``. (default: :obj:`64`)
        sampling (str, optional): ``"clip"`` or ``"window"``. (default: :obj:`"clip"`)
        stride (int, optional): Window stride; :obj:`None` = ``window // 2``. (default: :obj:`None`)
        train (bool, optional): Training mode: random temporal crop, and
            :func:`~skelgraph.augment.default_train_transform` when ``transform`` is :obj:`None`.
            (default: :obj:`False`)
        p_interval (Sequence[float], optional): Temporal crop ratio(s) for ``sampling="clip"``;
            :obj:`None` = ``(0.5, 1.0)`` in training, ``(0.95,)`` otherwise. (default: :obj:`None`)
        transform (Callable, optional): Applied to every sample after temporal sampling. In
            training mode it replaces the default augmentation (pass
            ``torch_geometric.transforms.Compose([])`` for none). (default: :obj:`None`)
        preprocess (PreprocessConfig, optional): Preprocessing settings.
            (default: :obj:`PreprocessConfig()`)
        observed_fraction (float, optional): Keep only the first ``ceil(f · T)`` frames of every
            preprocessed clip (early recognition; :meth:`observe` makes the same cut of a loaded
            dataset). With causal preprocessing these frames are exactly what the first
            ``ceil(f · T)`` raw frames preprocess to; otherwise the clip's scale and gap filling
            come from the whole clip. (default: :obj:`1.0`)
        cache_dir (str or os.PathLike, optional): Where the processed ``.pt`` file lives.
            The file name holds hashes of the folder, the settings and the source contents, so
            one folder serves every dataset. (default: ``$XDG_CACHE_HOME/skelgraph``, else
            ``~/.cache/skelgraph``)
        progress (bool, optional): Show a progress bar while building the cache.
            (default: :obj:`True`)
    """

    #: split names this dataset knows (besides ``None`` / ``"all"``)
    SPLITS: tuple[str, ...] = ("train", "val", "test")

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = None,
        *,
        layout: Layout | str | None = None,
        classes: Sequence[str] | None = None,
        window: int = 64,
        sampling: Sampling = "clip",
        stride: int | None = None,
        train: bool = False,
        p_interval: Sequence[float] | None = None,
        transform: Callable[[Data], Data] | None = None,
        preprocess: PreprocessConfig | None = None,
        observed_fraction: float = 1.0,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        if split is not None and split != "all" and split not in self.SPLITS:
            raise ValueError(
                f"split: expected one of {[*self.SPLITS, 'all']} or None, got {split!r}"
            )
        if sampling not in ("clip", "window"):
            raise ValueError(f"sampling: expected 'clip' or 'window', got {sampling!r}")
        if int(window) < 1:
            raise ValueError(f"window: expected a positive number of frames, got {window}")
        stride = max(int(window) // 2, 1) if stride is None else int(stride)
        if stride < 1:
            raise ValueError(f"stride: expected a positive number of frames, got {stride}")
        _check_fraction(observed_fraction)
        self.root = Path(root)
        self.split = None if split == "all" else split
        self.window = int(window)
        self.sampling: Sampling = sampling
        self.stride = stride
        self.train = bool(train)
        self.preprocess_config = preprocess if preprocess is not None else PreprocessConfig()
        self.observed_fraction = float(observed_fraction)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else user_cache_dir()
        self.progress = progress
        if p_interval is None:
            p_interval = (0.5, 1.0) if self.train else (0.95,)
        self._temporal_crop = RandomTemporalCrop(p_interval, self.window)
        self.p_interval = self._temporal_crop.p_interval

        target = get_layout(layout) if layout is not None else None
        cache = self._load_or_build(target)
        self._layout = Layout.from_dict(cache["layout"])
        self._edge_index = bone_edge_index(self._layout)
        self._classes = list(classes) if classes is not None else self._default_classes(cache)
        self._select(cache)

        if transform is None and self.train:
            transform = default_train_transform(self._layout)
        self.transform = transform

    # -- what subclasses provide ----------------------------------------------------------------

    def _sources(self) -> list[Path]:
        """The clip files, in dataset order."""
        raise NotImplementedError

    def _read(self, index: int) -> tuple[SkeletonClip, str, str]:
        """Clip ``index`` of :meth:`_sources` with its label name and split (``""`` for none)."""
        raise NotImplementedError

    def _key_files(self) -> list[Path]:
        """The files whose names and contents key the cache."""
        return self._sources()

    def _groups(self) -> list[str] | None:
        """The group of every clip of :meth:`_sources` (``""`` for none; see
        :attr:`clip_groups`), or :obj:`None` when the source names no groups. Read with the
        source's index, never cached: the files that name them must be among :meth:`_key_files`
        so that the cached clips follow the same list."""
        return None

    def _default_classes(self, cache: dict[str, Any]) -> list[str]:
        """The class names when ``classes`` is not given: the sorted unique labels of all clips."""
        return sorted(set(cache["labels"]))

    # -- cache ----------------------------------------------------------------------------------

    @property
    def cache_path(self) -> Path:
        """The processed ``.pt`` file of this dataset's settings."""
        return self._cache_path

    def _cache_name(self, target: Layout | None) -> tuple[str, str]:
        """``(slot, content)`` hashes of the cache file name (see the module docstring)."""
        settings = {
            "version": CACHE_VERSION,
            "dataset": type(self).__name__,
            "preprocess": self.preprocess_config.to_dict(),
            "layout": target.to_dict() if target is not None else None,
        }
        files = [
            [os.path.relpath(path, self.root), content_digest(path)] for path in self._key_files()
        ]
        slot = {"root": str(self.root.resolve()), **settings}
        return _digest(slot), _digest({**settings, "files": files})

    def _load_or_build(self, target: Layout | None) -> dict[str, Any]:
        slot, key = self._cache_name(target)
        prefix = f"{type(self).__name__.lower()}-{slot}-"
        self._cache_path = self.cache_dir / f"{prefix}{key}.pt"
        if self._cache_path.is_file():
            try:
                cache = torch.load(self._cache_path, weights_only=True)
                if cache.get("key") == key:
                    return cache
            except Exception as e:  # a truncated or foreign file: rebuild it
                warnings.warn(
                    f"{self._cache_path}: unreadable cache ({e}), rebuilding", stacklevel=3
                )
        cache = self._build(target)
        cache["key"] = key
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_write(self._cache_path) as f:
            torch.save(cache, f)
        for stale in self.cache_dir.glob(f"{prefix}*.pt"):
            if stale != self._cache_path:
                stale.unlink(missing_ok=True)
        return cache

    def _build(self, target: Layout | None) -> dict[str, Any]:
        sources = self._sources()
        frames: list[np.ndarray] = []
        labels: list[str] = []
        splits: list[str] = []
        first: tuple[Layout, int, Path] | None = None  # layout, channels and file of the first clip
        checked: set[Layout] = set()
        desc = f"{type(self).__name__}: preprocessing {len(sources)} clips"
        bar = progress_bar(range(len(sources)), desc=desc, unit="clip", disable=not self.progress)
        for i in bar:
            clip, label, split = self._read(i)
            if first is None:
                first = (target or clip.layout, clip.num_channels, sources[i])
            layout, channels, first_path = first
            if clip.num_channels != channels:
                raise ValueError(
                    f"{sources[i]}: keypoints: expected {channels} channels like {first_path}, "
                    f"got {clip.num_channels}"
                )
            kp = clip.keypoints
            if clip.layout != layout:
                if target is None:
                    raise ValueError(
                        f"{sources[i]}: layout: expected {layout.name!r} like {first_path}, got "
                        f"{clip.layout.name!r} (pass layout= to map every clip to one layout)"
                    )
                if clip.layout not in checked:
                    try:
                        check_mappable(clip.layout, layout)
                    except ValueError as e:
                        raise ValueError(f"{sources[i]}: layout: {e}") from None
                    checked.add(clip.layout)
                kp = map_keypoints(kp, clip.layout, layout)
            frames.append(preprocess(kp, layout, self.preprocess_config))
            labels.append(label)
            splits.append(split)
        if first is None:
            raise ValueError(f"{self.root}: expected at least one clip, found none")
        return {
            "layout": first[0].to_dict(),
            "frames": torch.from_numpy(np.concatenate(frames)),
            "lengths": torch.tensor([len(f) for f in frames], dtype=torch.long),
            "labels": labels,
            "splits": splits,
            "names": [str(os.path.relpath(p, self.root)) for p in sources],
        }

    # -- samples --------------------------------------------------------------------------------

    def _select(self, cache: dict[str, Any]) -> None:
        lengths: Tensor = cache["lengths"]
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)[:-1]])
        keep = [i for i, s in enumerate(cache["splits"]) if self.split is None or s == self.split]
        index = {name: i for i, name in enumerate(self._classes)}
        if len(index) != len(self._classes):
            raise ValueError(f"classes: expected unique names, got {self._classes}")
        for i in keep:
            if cache["labels"][i] not in index:
                raise ValueError(
                    f"{cache['names'][i]}: label: expected one of classes {self._classes}, "
                    f"got {cache['labels'][i]!r}"
                )
        self._frames: Tensor = cache["frames"]
        self._clip_offset = offsets[keep]
        self._whole_length = lengths[keep]
        self._clip_label = torch.tensor([index[cache["labels"][i]] for i in keep], dtype=torch.long)
        self._clip_names: list[str] = [cache["names"][i] for i in keep]
        groups = self._groups()
        kept = None if groups is None else np.array([groups[i] for i in keep], dtype=str)
        # no group in the selected clips: the same as a source without groups
        self._clip_group = kept if kept is not None and (kept != "").any() else None
        self._index_samples()

    def _index_samples(self) -> None:
        """Cuts every clip to its observed frames and lists the samples (clip, start frame)."""
        self._clip_length = torch.tensor(
            [_observed_frames(int(n), self.observed_fraction) for n in self._whole_length],
            dtype=torch.long,
        )
        num_clips = len(self._clip_length)
        if self.sampling == "clip":
            self._sample_clip = torch.arange(num_clips)
            self._sample_start = torch.zeros(num_clips, dtype=torch.long)
        else:
            starts = [_window_starts(int(n), self.window, self.stride) for n in self._clip_length]
            counts = [len(s) for s in starts]
            self._sample_clip = torch.from_numpy(np.repeat(np.arange(num_clips), counts))
            self._sample_start = torch.from_numpy(np.concatenate([np.zeros(0, np.int64), *starts]))

    def observe(self, fraction: float) -> SkeletonDataset:
        """This dataset with every clip cut to its first ``ceil(fraction · T)`` frames (early
        recognition), sharing the loaded frames: nothing is read or preprocessed again.

        Args:
            fraction (float): The observed fraction of every whole clip, in ``(0, 1]``.
        """
        _check_fraction(fraction)
        observed = copy.copy(self)
        observed.observed_fraction = float(fraction)
        observed._index_samples()
        return observed

    def __len__(self) -> int:
        return len(self._sample_clip)

    def __getitem__(self, index: int) -> Data:
        clip = int(self._sample_clip[index])
        offset, length = int(self._clip_offset[clip]), int(self._clip_length[clip])
        frames = self._frames[offset : offset + length]  # [T_clip, V, C], a view of the cache
        if self.sampling == "clip":
            data = Data(
                x=frames.permute(1, 0, 2),
                frame_mask=torch.ones(1, length, dtype=torch.bool),
            )
            data = self._temporal_crop(data)
        else:
            start = int(self._sample_start[index])
            real = frames[start : start + self.window]
            x = frames.new_zeros(frames.size(1), self.window, frames.size(2))
            x[:, : len(real)] = real.permute(1, 0, 2)
            mask = torch.zeros(1, self.window, dtype=torch.bool)
            mask[:, : len(real)] = True
            data = Data(x=x, frame_mask=mask)
        data.edge_index = self._edge_index
        data.layout = self._layout
        data.y = self._clip_label[clip : clip + 1].clone()
        data.clip_id = torch.tensor([clip], dtype=torch.long)
        if self.transform is not None:
            data = self.transform(data)
        return data

    # -- properties -----------------------------------------------------------------------------

    @property
    def layout(self) -> Layout:
        """The layout of every sample."""
        return self._layout

    @property
    def classes(self) -> list[str]:
        """Class names; ``y`` indexes this list."""
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        """The number of classes ``K``."""
        return len(self._classes)

    @property
    def in_channels(self) -> int:
        """Channels per joint and frame ``C`` (3 for 2D, 4 for 3D)."""
        return int(self._frames.size(-1))

    @property
    def num_clips(self) -> int:
        """The number of clips in the selected split."""
        return len(self._clip_names)

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` int64: the class index of every sample."""
        return self._clip_label[self._sample_clip].numpy()

    @property
    def clip_ids(self) -> np.ndarray:
        """``(N,)`` int64: the clip index of every sample (``groups`` for a split by clip)."""
        return self._sample_clip.numpy().copy()

    @property
    def clip_labels(self) -> np.ndarray:
        """``(num_clips,)`` int64: the class index of every clip."""
        return self._clip_label.numpy().copy()

    @property
    def clip_lengths(self) -> np.ndarray:
        """``(num_clips,)`` int64: the frames of every whole clip."""
        return self._whole_length.numpy().copy()

    def clip_frames(self, clip: int) -> Tensor:
        """The preprocessed frames ``[T, V, C]`` of whole clip ``clip`` (a view of the loaded
        data: no crop, resampling or augmentation)."""
        if not 0 <= clip < self.num_clips:
            raise IndexError(f"clip: expected an index in [0, {self.num_clips}), got {clip}")
        offset = int(self._clip_offset[clip])
        return self._frames[offset : offset + int(self._whole_length[clip])]

    @property
    def clip_groups(self) -> np.ndarray | None:
        """``(num_clips,)`` str: the group of every clip (the ``group`` column of a skeleton
        folder's ``labels.csv``: subject, performer, camera or video; ``""`` for a clip without
        one), or :obj:`None` when no clip of the selected split has a group. Splits hold out
        whole groups (:func:`~skelgraph.data.grouped_split`, :func:`~skelgraph.data.kfold_splits`).
        """
        return None if self._clip_group is None else self._clip_group.copy()

    @property
    def clip_names(self) -> list[str]:
        """The source file of every clip, relative to ``root``."""
        return list(self._clip_names)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self)} samples from {self.num_clips} clips, "
            f"split={self.split!r}, layout={self._layout.name!r}, window={self.window}, "
            f"sampling={self.sampling!r}, train={self.train})"
        )


def _digest(value: Any) -> str:
    """A short hex digest of a JSON-serialisable value."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


def content_digest(path: str | os.PathLike[str]) -> str:
    """A digest of what the file ``path`` holds, independent of when it was written.

    For a zip archive (``.npz``) it covers the name, size and CRC-32 of every member, read from
    the archive's directory: :func:`numpy.savez` stamps members with the time of writing, so two
    archives of the same arrays differ in their bytes. Any other file is digested byte by byte.
    Digests are remembered for the process by the file's path and status (inode, size, times):
    a run opens a dataset several times.
    """
    stat = os.stat(path)
    status = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    return _content_digest(str(Path(path).resolve()), status)


@functools.lru_cache(maxsize=1 << 20)
def _content_digest(path: str, status: tuple[int, ...]) -> str:
    """:func:`content_digest` of ``path`` in the state ``status`` (part of the memo's key)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [[m.filename, m.file_size, m.CRC] for m in archive.infolist()]
        return _digest(members)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:20]


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"observed_fraction: expected a value in (0, 1], got {fraction}")


def _observed_frames(num_frames: int, fraction: float) -> int:
    """``ceil(fraction · num_frames)``, at least 1, robust to floating-point noise."""
    return max(1, math.ceil(round(fraction * num_frames, 6)))


def _window_starts(num_frames: int, window: int, stride: int) -> np.ndarray:
    """Start frames of the sliding windows of a clip, as :func:`sliding_windows` places them."""
    placeholder = np.zeros((num_frames, 1, 3), dtype=np.float32)
    return sliding_windows(placeholder, window, stride)[2]


def to_dense(batch: Data) -> tuple[Tensor, Tensor]:
    """Views a batch of equally-sized skeleton graphs as dense tensors (no copy).

    Args:
        batch (Data or Batch): ``x [B·V, T, C]`` and, optionally, ``frame_mask [B, T]``, as made by
            ``torch_geometric.loader.DataLoader`` from :class:`SkeletonDataset` samples (a single
            sample counts as ``B = 1``).

    Returns:
        (Tensor, Tensor): ``x`` viewed as ``[B, V, T, C]`` and the frame mask ``[B, T]`` (all
        ``True`` when the batch has none).
    """
    x = batch.x
    num_graphs = getattr(batch, "num_graphs", None) or 1
    if x.dim() != 3 or x.size(0) % num_graphs:
        raise ValueError(
            f"batch.x: expected shape [B·V, T, C] with B = {num_graphs} graphs of equal size, "
            f"got {tuple(x.shape)}"
        )
    dense = x.view(num_graphs, x.size(0) // num_graphs, *x.shape[1:])
    mask = getattr(batch, "frame_mask", None)
    if mask is None:
        mask = torch.ones(num_graphs, x.size(1), dtype=torch.bool, device=x.device)
    return dense, mask.view(num_graphs, x.size(1))


def make_loader(
    dataset: Dataset,
    batch_size: int = 32,
    shuffle: bool | None = None,
    *,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int | None = None,
    **kwargs: Any,
) -> DataLoader:
    """A :class:`torch_geometric.loader.DataLoader` over a skeleton dataset.

    Args:
        dataset (Dataset): A :class:`SkeletonDataset` (or a ``Subset`` of one).
        batch_size (int, optional): Samples per batch. (default: :obj:`32`)
        shuffle (bool, optional): Reshuffle every epoch; :obj:`None` = the dataset's ``train``
            flag. (default: :obj:`None`)
        num_workers (int, optional): Worker processes (kept alive between epochs).
            (default: :obj:`0`)
        drop_last (bool, optional): Drop the last incomplete batch. (default: :obj:`False`)
        seed (int, optional): Seed of the shuffling order. (default: :obj:`None`)
        **kwargs: Passed to the ``DataLoader``.
    """
    if shuffle is None:
        shuffle = bool(getattr(dataset, "train", False))
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=num_workers > 0,
        **kwargs,
    )
