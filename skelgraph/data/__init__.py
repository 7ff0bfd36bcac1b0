"""Skeleton datasets as PyG samples, splits and label maps.

* :class:`SkeletonDataset` — base: preprocessing cache, clip/window sampling, ``Data`` samples;
  :func:`to_dense`, :func:`make_loader`.
* :class:`PennAction` — the Penn Action annotations with the official split.
* :class:`SkeletonFolder` — a folder of ``.npz`` clips plus ``labels.csv``;
  :func:`write_skeleton_folder` writes one.
* :func:`stratified_split` — per-class train/validation split by clip; :func:`grouped_split` —
  one holding out whole groups of clips (``labels.csv``'s ``group`` column, ``clip_groups``);
  :func:`kfold_splits` — cross-validation folds, grouped or stratified; :func:`balanced_subset` —
  a few clips of every class (quick runs).
* :data:`SPORT14`, :func:`to_sport14` — the sport-14 label set and its name normaliser.
* :func:`example_clips` — the example clips shipped with the package (one per Penn Action class).
"""

from __future__ import annotations

from skelgraph.data.bundled import example_clips, example_datasets
from skelgraph.data.dataset import SkeletonDataset, make_loader, to_dense
from skelgraph.data.folder import SkeletonFolder, write_skeleton_folder
from skelgraph.data.penn_action import PennAction
from skelgraph.data.split import balanced_subset, grouped_split, kfold_splits, stratified_split
from skelgraph.data.sport14 import SPORT14, to_sport14

__all__ = [
    "SPORT14",
    "PennAction",
    "SkeletonDataset",
    "SkeletonFolder",
    "balanced_subset",
    "example_clips",
    "example_datasets",
    "grouped_split",
    "kfold_splits",
    "make_loader",
    "stratified_split",
    "to_dense",
    "to_sport14",
    "write_skeleton_folder",
]
