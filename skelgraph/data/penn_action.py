"""Penn Action (Zhang et al., ICCV 2013): 2326 clips, 15 actions, 13 joints, official split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from skelgraph.clip import SkeletonClip
from skelgraph.data.dataset import SkeletonDataset
from skelgraph.io import load_penn_action_mat

__all__ = ["PennAction", "penn_action_files", "read_penn_action"]


def penn_action_files(root: str | os.PathLike[str]) -> list[Path]:
    """The annotation files ``root/labels/*.mat``, sorted by name.

    Raises:
        FileNotFoundError: When ``root/labels`` is missing or holds no ``.mat`` file.
    """
    labels = Path(root) / "labels"
    if not labels.is_dir():
        raise FileNotFoundError(f"{labels}: expected the Penn Action 'labels' folder, not found")
    files = sorted(labels.glob("*.mat"))
    if not files:
        raise FileNotFoundError(f"{labels}: expected Penn Action .mat files, found none")
    return files


def read_penn_action(path: str | os.PathLike[str]) -> tuple[SkeletonClip, str, str]:
    """One ``.mat`` file as ``(clip, action name, "train" | "test")`` (the official split)."""
    clip = load_penn_action_mat(path)
    return clip, str(clip.label), str(clip.meta["split"])


class PennAction(SkeletonDataset):
    r"""The Penn Action annotations (``root/labels/*.mat``) as a PyG skeleton dataset.

    Layout ``penn13``, 30 fps, confidence = visibility (0 or 1). ``split="train"`` gives the 1258
    clips of the official training split, ``"test"`` the 1068 official test clips, ``"all"`` (or
    :obj:`None`) all 2326; ``classes`` are the 15 action names, sorted. Choose hyperparameters on
    a part of the training split (:func:`~skelgraph.data.stratified_split`), not on the test split.

    Args:
        root (str or os.PathLike): The directory holding ``labels/``.
        split (str, optional): ``"train"``, ``"test"`` or ``"all"``. (default: :obj:`"train"`)
        **kwargs: See :class:`~skelgraph.data.SkeletonDataset` (``window``, ``sampling``,
            ``train``, ``transform``, ``preprocess``, ``cache_dir``, ...).
    """

    SPLITS = ("train", "test")

    def __init__(
        self, root: str | os.PathLike[str], split: str | None = "train", **kwargs: Any
    ) -> None:
        self._files = penn_action_files(root)
        super().__init__(root, split, **kwargs)

    def _sources(self) -> list[Path]:
        return self._files

    def _read(self, index: int) -> tuple[SkeletonClip, str, str]:
        return read_penn_action(self._files[index])
