"""The whole Penn Action annotation set (../shared/data/penn_action): conversion, validation,
preprocessing, the dataset and PyG batching. Skips when the data is absent."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.loader import DataLoader

from skelgraph.cli import main
from skelgraph.data import PennAction, SkeletonFolder
from skelgraph.data.penn_action import penn_action_files, read_penn_action
from skelgraph.layouts import get_layout
from skelgraph.preprocess import preprocess

pytestmark = pytest.mark.slow  # about 1.5 min on 2 cores: two conversions, three cache builds

NUM_CLIPS, NUM_TRAIN, NUM_TEST, NUM_CLASSES = 2326, 1258, 1068, 15


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("penn_action_cache")


@pytest.fixture(scope="session")
def build_times(penn_action_root: Path, cache_dir: Path) -> tuple[float, float]:
    """Seconds for the first (cache-building) and a second (cached) ``PennAction`` construction."""
    start = time.perf_counter()
    PennAction(penn_action_root, "test", cache_dir=cache_dir, progress=False)
    first = time.perf_counter() - start
    start = time.perf_counter()
    PennAction(penn_action_root, "test", cache_dir=cache_dir, progress=False)
    return first, time.perf_counter() - start


@pytest.fixture(scope="session")
def converted(penn_action_root: Path, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("penn_npz") / "folder"
    assert main(["convert", "penn-action", str(penn_action_root), str(dst), "--quiet"]) == 0
    return dst


def test_convert_writes_clips_and_the_official_split(converted: Path) -> None:
    rows = read_rows(converted)
    assert len(rows) == NUM_CLIPS == len(list((converted / "clips").glob("*.npz")))
    assert Counter(r["split"] for r in rows) == {"train": NUM_TRAIN, "test": NUM_TEST}
    assert len({r["label"] for r in rows}) == NUM_CLASSES
    assert rows[0]["path"] == "clips/0001.npz"


def test_convert_entry_point(penn_action_root: Path, converted: Path, tmp_path: Path) -> None:
    dst = tmp_path / "folder"
    command = [sys.executable, "-m", "skelgraph", "convert", "penn-action"]
    result = subprocess.run(
        [*command, str(penn_action_root), str(dst), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {NUM_CLIPS} clips ({NUM_TEST} test, {NUM_TRAIN} train; 15 classes)" in (
        result.stdout
    )
    assert (dst / "labels.csv").read_text() == (converted / "labels.csv").read_text()


def test_every_clip_validates_and_preprocesses(penn_action_root: Path) -> None:
    files = penn_action_files(penn_action_root)
    assert len(files) == NUM_CLIPS
    for path in files:
        clip, _, split = read_penn_action(path)  # validated on construction
        assert clip.layout.name == "penn13" and clip.fps == 30.0 and split in ("train", "test")
        kp = preprocess(clip)
        assert kp.shape == clip.keypoints.shape and np.isfinite(kp).all(), path


def test_dataset_sizes_and_build_time(
    penn_action_root: Path, cache_dir: Path, build_times: tuple[float, float]
) -> None:
    first, cached = build_times
    assert first < 60.0 and cached < 2.0, build_times
    test = PennAction(penn_action_root, "test", cache_dir=cache_dir)
    train = PennAction(penn_action_root, "train", cache_dir=cache_dir)
    assert len(test) == NUM_TEST and len(train) == NUM_TRAIN
    assert test.classes == train.classes and len(test.classes) == NUM_CLASSES
    assert test.classes == sorted(test.classes)
    assert np.bincount(test.labels, minlength=NUM_CLASSES).min() > 0


def test_batch_of_eight(penn_action_root: Path, cache_dir: Path, build_times) -> None:
    ds = PennAction(penn_action_root, "test", cache_dir=cache_dir)
    batch = next(iter(DataLoader(ds, batch_size=8, shuffle=True)))
    num_joints = get_layout("penn13").num_joints
    assert batch.x.shape == (8 * num_joints, ds.window, 3)
    assert batch.frame_mask.shape == (8, ds.window) and batch.y.shape == (8,)
    bones = {tuple(b) for b in get_layout("penn13").bones}
    expected = bones | {(parent, child) for child, parent in bones}
    edges = batch.edge_index.t().tolist()
    for g in range(8):
        offset = g * num_joints
        mine = {
            (s - offset, t - offset)
            for s, t in edges
            if offset <= s < offset + num_joints and offset <= t < offset + num_joints
        }
        assert mine == expected
    assert batch.edge_index.size(1) == 8 * len(expected)


def test_converted_folder_matches_penn_action(
    penn_action_root: Path, converted: Path, cache_dir: Path, build_times
) -> None:
    folder = SkeletonFolder(converted, "test", cache_dir=cache_dir, progress=False)
    penn = PennAction(penn_action_root, "test", cache_dir=cache_dir)
    assert folder.classes == penn.classes and len(folder) == len(penn)
    np.testing.assert_array_equal(folder.labels, penn.labels)
    for i in (0, 500, len(penn) - 1):
        assert torch.equal(folder[i].x, penn[i].x)
