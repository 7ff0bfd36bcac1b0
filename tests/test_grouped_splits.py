"""Clip groups (``labels.csv``'s ``group`` column): reading and writing them, splits that hold out
whole groups, K-fold partitions, and the training data's validation part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_folder
from hypothesis import given, settings
from hypothesis import strategies as st

from skelgraph.clip import SkeletonClip
from skelgraph.data import SkeletonFolder, grouped_split, kfold_splits, write_skeleton_folder
from skelgraph.data.folder import read_labels_csv
from skelgraph.train.config import load_config
from skelgraph.train.data import split_data


def clip(i: int) -> SkeletonClip:
    kp = np.random.default_rng(i).normal(size=(6, 17, 3)).astype(np.float32)
    kp[..., 2] = 1.0
    return SkeletonClip(kp, "coco17", source=f"clip{i}")


def grouped_clips(draw_sizes: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and groups of clips: group ``g`` holds ``draw_sizes[g][c]`` clips of class ``c``."""
    labels, groups = [], []
    for g, per_class in enumerate(draw_sizes):
        for c, n in enumerate(per_class):
            labels += [c] * n
            groups += [f"g{g}"] * n
    return np.array(labels), np.array(groups)


group_sizes = st.lists(
    st.lists(st.integers(0, 4), min_size=3, max_size=3).filter(any), min_size=2, max_size=9
)


# -- grouped validation split -----------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(sizes=group_sizes, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 1000))
def test_grouped_split_holds_out_whole_groups(
    sizes: list[list[int]], fraction: float, seed: int
) -> None:
    labels, groups = grouped_clips(sizes)
    train_idx, val_idx = grouped_split(labels, groups, fraction, seed)
    np.testing.assert_array_equal(np.sort(np.r_[train_idx, val_idx]), np.arange(len(labels)))
    assert train_idx.size and val_idx.size
    assert not set(groups[train_idx]) & set(groups[val_idx])
    for c in np.unique(labels):  # a class held by 2 groups or more keeps training clips
        if len(set(groups[labels == c])) >= 2:
            assert (labels[train_idx] == c).any()
    # no group left in training could still bring the size closer without losing a class
    target, n_val = fraction * len(labels), len(val_idx)
    for g in set(groups[train_idx]):
        members = groups == g
        closer = abs(n_val + members.sum() - target) < abs(n_val - target)
        rest = labels[np.setdiff1d(train_idx, np.flatnonzero(members))]
        keeps = all((rest == c).any() for c in set(labels[members]))
        assert not (closer and keeps), (g, n_val, target)
    again = grouped_split(labels, groups, fraction, seed)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train_idx, val_idx), strict=True))


def test_grouped_split_size_coverage_and_seed() -> None:
    # ten groups of ten clips, every class in every group: 30 % is exactly three groups
    labels = np.tile(np.repeat([0, 1], 5), 10)
    groups = np.repeat([f"s{i}" for i in range(10)], 10)
    held = {tuple(sorted(set(groups[grouped_split(labels, groups, 0.3, s)[1]]))) for s in range(8)}
    assert all(len(h) == 3 for h in held) and len(held) > 1  # the seed chooses the groups
    # class 2 only in groups a and b, the rarest: the held-out group is one of them, so that
    # validation covers every class, and training keeps every class
    labels = np.array([0, 2, 1, 0, 2, 1, 0, 1, 0, 0, 1, 0])
    groups = np.array(list("aaabbbcccddd"))
    for seed in range(10):
        train_idx, val_idx = grouped_split(labels, groups, 0.25, seed)
        assert set(groups[val_idx]) in ({"a"}, {"b"})
        assert set(labels[val_idx]) == set(labels[train_idx]) == {0, 1, 2}
    # every group larger than twice the target: one group is held out all the same
    train_idx, val_idx = grouped_split([0] * 10 + [1] * 10, ["x"] * 10 + ["y"] * 10, 0.1)
    assert len(val_idx) == 10 and len(train_idx) == 10


def test_grouped_split_clips_without_a_group_are_groups_of_their_own() -> None:
    labels = np.zeros(8, dtype=int)
    groups = np.array(["a", "a", "a", "a", "", "", "", ""], dtype=object)
    groups[5] = None
    for seed in range(6):
        _, val_idx = grouped_split(labels, groups, 0.25, seed)
        assert len(val_idx) == 2 and not {0, 1, 2, 3} & set(val_idx)  # two single clips


def test_grouped_split_errors() -> None:
    with pytest.raises(ValueError, match="expected at least 2 groups to hold out whole groups"):
        grouped_split([0, 1, 0], ["a", "a", "a"])
    with pytest.raises(ValueError, match=r"clip_groups: expected the shape of labels \(3,\)"):
        grouped_split([0, 1, 0], ["a", "b"])
    with pytest.raises(ValueError, match="fraction"):
        grouped_split([0, 1], ["a", "b"], 0.0)


# -- K-fold ------------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(sizes=group_sizes, k=st.integers(2, 6), seed=st.integers(0, 1000))
def test_grouped_kfold_partitions_clips_and_keeps_groups_whole(
    sizes: list[list[int]], k: int, seed: int
) -> None:
    labels, groups = grouped_clips(sizes)
    if k > len(sizes):
        with pytest.raises(ValueError, match="at most as many folds as groups"):
            kfold_splits(labels, k, seed, clip_groups=groups)
        return
    folds = kfold_splits(labels, k, seed, clip_groups=groups)
    assert len(folds) == k
    validated = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(validated), np.arange(len(labels)))  # each clip once
    largest = max(map(sum, sizes))
    counts = [len(val) for _, val in folds]
    assert min(counts) > 0 and max(counts) - min(counts) <= largest  # balanced clip counts
    for train, val in folds:
        np.testing.assert_array_equal(np.sort(np.r_[train, val]), np.arange(len(labels)))
        assert not set(groups[train]) & set(groups[val])


@settings(max_examples=80, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    k=st.integers(2, 5),
    seed=st.integers(0, 1000),
)
def test_stratified_kfold_keeps_classes_on_both_sides(counts: list[int], k: int, seed: int):
    labels = np.repeat([f"c{i}" for i in range(len(counts))], counts)
    np.random.default_rng(seed).shuffle(labels)
    if len(labels) < k:
        with pytest.raises(ValueError, match="at most as many folds as clips"):
            kfold_splits(labels, k, seed)
        return
    folds = kfold_splits(labels, k, seed)
    validated = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(validated), np.arange(len(labels)))
    sizes = [len(val) for _, val in folds]
    assert max(sizes) - min(sizes) <= 1
    classes, class_counts = np.unique(labels, return_counts=True)
    for c, n in zip(classes, class_counts, strict=True):
        in_val = sum((labels[val] == c).any() for _, val in folds)
        assert in_val == min(n, k)  # spread over as many folds as it has clips
        if n >= 2:  # and kept in training in every fold
            assert all((labels[train] == c).any() for train, _ in folds)
    again = kfold_splits(labels, k, seed)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(again, folds, strict=True))


def test_kfold_errors() -> None:
    for k in (1, 2.0, True):
        with pytest.raises(ValueError, match="k: expected an integer number of folds >= 2"):
            kfold_splits([0, 1, 0], k)


# -- labels.csv --------------------------------------------------------------------------------


def test_group_column_round_trip(tmp_path: Path) -> None:
    items = [
        (clip(0), "wave", "train", "subject 1"),
        (clip(1), "wave", "train", "subject,2"),  # quoted by the writer
        (clip(2), "jump", "train", ""),
        (clip(3), "jump", "test", "subject 1"),
    ]
    write_skeleton_folder(tmp_path / "f", items, progress=False)
    header = (tmp_path / "f/labels.csv").read_text().splitlines()[0]
    assert header == "path,label,split,group"
    entries = read_labels_csv(tmp_path / "f")
    assert [e.group for e in entries] == ["subject 1", "subject,2", "", "subject 1"]
    train = SkeletonFolder(tmp_path / "f", "train", window=4, progress=False)
    assert train.clip_groups.tolist() == ["subject 1", "subject,2", ""]
    test = SkeletonFolder(tmp_path / "f", "test", window=4, progress=False)
    assert test.clip_groups.tolist() == ["subject 1"]
    assert test.observe(0.5).clip_groups.tolist() == ["subject 1"]
    # without groups: three columns, no clip_groups
    plain = [(clip(0), "wave", "train"), (clip(1), "jump", "test", "")]
    write_skeleton_folder(tmp_path / "p", plain, progress=False)
    assert (tmp_path / "p/labels.csv").read_text().startswith("path,label,split\n")
    assert SkeletonFolder(tmp_path / "p", window=4, progress=False).clip_groups is None
    assert read_labels_csv(tmp_path / "p")[0].group == ""


def test_group_column_errors(tmp_path: Path) -> None:
    clip(0).save(tmp_path / "a.npz")
    (tmp_path / "labels.csv").write_text("path,label,split\na.npz,x,train,subject1\n")
    with pytest.raises(
        ValueError,
        match=r"labels\.csv line 2: expected at most 3 fields like the header "
        r"\(path,label,split\), got 4; a group column needs its name in the header",
    ):
        read_labels_csv(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label,split,group,group\na.npz,x,train,s,s\n")
    with pytest.raises(ValueError, match=r"header: expected every column once.*group repeated"):
        read_labels_csv(tmp_path)
    (tmp_path / "labels.csv").write_text("path,label,group\na.npz,x,s\n")
    with pytest.raises(ValueError, match=r"expected columns path,label,split\[,group\].*split"):
        read_labels_csv(tmp_path)
    # a short row in a grouped file: no group
    (tmp_path / "labels.csv").write_text("path,label,split,group\na.npz,x,train\n")
    assert read_labels_csv(tmp_path)[0].group == ""
    for item, match in [
        ((clip(0), "x", "train", " s"), "group: expected a one-line string"),
        ((clip(0), "x", "train", "a\nb"), "group: expected a one-line string"),
        ((clip(0), "x", "train", 3), "group: expected a one-line string"),
        ((clip(0), "x", "train", "s", "extra"), r"expected \(clip, label, split\) or"),
    ]:
        with pytest.raises(ValueError, match=match):
            write_skeleton_folder(tmp_path / "out", [item], progress=False)


def test_extract_keeps_the_groups_of_earlier_rows(tmp_path: Path) -> None:
    from skelgraph.cli.extract import label_rows, publish

    items = [(clip(0), "wave", "train", "s1"), (clip(1), "jump", "test")]
    write_skeleton_folder(tmp_path, items, progress=False)
    rows = label_rows(tmp_path, [])
    assert rows == [
        ("clips/clip0.npz", "wave", "train", "s1"),
        ("clips/clip1.npz", "jump", "test", ""),
    ]
    header = ("path", "label", "split", "group")
    publish(tmp_path / "labels.csv", lambda r: header[: len(r[0])], lambda: rows, "0-of-1")
    assert [e.group for e in read_labels_csv(tmp_path)] == ["s1", ""]


# -- the training data's validation part -------------------------------------------------------

#: a small window, so that the tiny folders open fast
WINDOW = ["data.window=8"]


def test_split_data_holds_out_whole_groups_and_folds(tmp_path: Path) -> None:
    data = synthetic_folder(tmp_path / "data", "coco17", 17, per_class=9, groups=3)
    cache = tmp_path / "cache"
    config = load_config("infogcn2_small", [*WINDOW, "data.val_fraction=0.3"])
    splits = split_data(data, config, cache)
    groups = splits.base.clip_groups
    train_groups = set(groups[splits.train.indices])
    assert splits.val_groups and not train_groups & set(splits.val_groups)
    assert set(groups[splits.val_clips]) == set(splits.val_groups)
    assert "whole groups of labels.csv's group column" in splits.val_rule
    assert splits.test_split == "test"
    fold_groups = []
    for fold in range(3):
        config = load_config("infogcn2_small", [*WINDOW, "data.folds=3", f"data.fold={fold}"])
        splits = split_data(data, config, cache)
        assert splits.test_split is None and splits.val_split == "train"
        assert f"fold {fold} (folds 0-2)" in splits.val_rule
        fold_groups += splits.val_groups
        assert not set(groups[splits.train.indices]) & set(splits.val_groups)
    assert sorted(fold_groups) == ["subject0", "subject1", "subject2"]
    config = load_config("infogcn2_small", [*WINDOW, "data.folds=4"])
    with pytest.raises(
        ValueError, match=r"data\.folds: k: expected at most as many folds as groups"
    ):
        split_data(data, config, cache)


def test_split_data_without_groups_stays_stratified(tmp_path: Path) -> None:
    data = synthetic_folder(tmp_path / "data", "coco17", 17, per_class=6)
    config = load_config("infogcn2_small", [*WINDOW, "data.val_fraction=0.25"])
    splits = split_data(data, config, tmp_path / "cache")
    assert splits.base.clip_groups is None and splits.val_groups is None
    assert "stratified by class" in splits.val_rule
    assert len(splits.val_clips) == 3  # one of the 4 training clips of each class


def test_split_data_with_one_group_says_what_to_do(tmp_path: Path) -> None:
    data = synthetic_folder(tmp_path / "data", "coco17", 17, per_class=3, groups=1)
    config = load_config("infogcn2_small", WINDOW)
    with pytest.raises(ValueError, match=r"name 1 group; set data\.val_fraction=0 or drop"):
        split_data(data, config, tmp_path / "cache")
    config = load_config("infogcn2_small", [*WINDOW, "data.val_fraction=0"])
    assert split_data(data, config, tmp_path / "cache").val is None


def test_fold_keys_are_checked() -> None:
    with pytest.raises(ValueError, match=r"data\.folds: expected at least 2 folds"):
        load_config("infogcn2_small", ["data.folds=1"])
    with pytest.raises(ValueError, match=r"data\.fold: expected a fold in \[0, 2\]"):
        load_config("infogcn2_small", ["data.folds=3", "data.fold=3"])
    with pytest.raises(ValueError, match=r"data\.fold: expected 0 without data\.folds"):
        load_config("infogcn2_small", ["data.fold=1"])


def test_msr_action3d_validation_holds_out_whole_subjects(msr_action3d_root, tmp_path) -> None:
    config = load_config("infogcn2_small", ["data.window=16"])
    splits = split_data(msr_action3d_root, config, tmp_path / "cache")
    groups = splits.base.clip_groups
    assert splits.val_groups and all(g.startswith("subject") for g in splits.val_groups)
    assert not set(groups[splits.train.indices]) & set(splits.val_groups)
    assert set(groups[splits.val_clips]) == set(splits.val_groups)
    fraction = len(splits.val_clips) / splits.base.num_clips
    assert 0.1 < fraction < 0.3  # one of the five training subjects
    assert len(np.unique(splits.base.clip_labels[splits.train.indices])) == 20
