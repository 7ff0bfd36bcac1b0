from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data
from torch_geometric.transforms import Compose

from skelgraph.augment import RandomTemporalCrop
from skelgraph.cli import main
from skelgraph.clip import SkeletonClip
from skelgraph.data import (
    SPORT14,
    PennAction,
    SkeletonFolder,
    make_loader,
    stratified_split,
    to_dense,
    to_sport14,
    write_skeleton_folder,
)
from skelgraph.io import load_npz, save_pyskl
from skelgraph.layouts import MappingWarning
from skelgraph.layouts.graph import bone_edge_index
from skelgraph.preprocess import PreprocessConfig, preprocess, sliding_windows
from skelgraph.utils import user_cache_dir

LENGTHS = (5, 12, 20, 33, 8, 40, 17, 25, 6, 30, 14, 22)
CLASSES = ["jump", "run", "sit"]


def random_clip(
    seed: int, frames: int, layout: str = "coco17", channels: int = 3, **kwargs
) -> SkeletonClip:
    rng = np.random.default_rng(seed)
    num_joints = {"coco17": 17, "penn13": 13}[layout]
    kp = rng.normal(100.0, 30.0, size=(frames, num_joints, channels)).astype(np.float32)
    kp[..., -1] = rng.uniform(0.0, 1.0, size=(frames, num_joints))
    return SkeletonClip(kp, layout, **kwargs)


def make_penn_root(root: Path, specs: list[tuple[str, bool, int]]) -> Path:
    """A Penn Action-like root: ``labels/NNNN.mat`` per ``(action, train, frames)``."""
    labels = root / "labels"
    labels.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (action, train, frames) in enumerate(specs, start=1):
        scipy.io.savemat(
            labels / f"{i:04d}.mat",
            {
                "action": action,
                "pose": "front",
                "x": rng.uniform(0, 480, size=(frames, 13)),
                "y": rng.uniform(0, 360, size=(frames, 13)),
                "visibility": (rng.uniform(size=(frames, 13)) > 0.1).astype(np.uint8),
                "train": np.array([[1 if train else -1]], dtype=np.int32),
                "bbox": np.zeros((frames, 4)),
                "dimensions": np.array([[360, 480, frames]], dtype=np.uint16),
                "nframes": np.array([[frames]]),
            },
        )
    return root


@pytest.fixture(scope="module")
def pyskl_clips() -> list[SkeletonClip]:
    return [random_clip(i, n, label=i % 3, source=f"video/{i:02d}") for i, n in enumerate(LENGTHS)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, pyskl_clips) -> Path:
    """A skeleton folder made by ``skelgraph convert pyskl`` from a pickle: clips 0–7 train,
    8–10 val, 11 in no split."""
    tmp = tmp_path_factory.mktemp("pyskl")
    names = [c.source for c in pyskl_clips]
    save_pyskl(
        pyskl_clips, tmp / "ann.pkl", split={"xsub_train": names[:8], "xsub_val": names[8:11]}
    )
    (tmp / "names.txt").write_text("\n".join(CLASSES) + "\n")
    dst = tmp / "folder"
    argv = ["convert", "pyskl", str(tmp / "ann.pkl"), str(dst), "--classes", str(tmp / "names.txt")]
    assert main([*argv, "--quiet"]) == 0
    return dst


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_pyskl_round_trip(folder: Path, pyskl_clips) -> None:
    rows = read_rows(folder)
    assert [r["split"] for r in rows] == ["train"] * 8 + ["val"] * 3 + [""]
    assert [r["label"] for r in rows] == [CLASSES[c.label] for c in pyskl_clips]
    assert (folder / "classes.txt").read_text().split() == CLASSES
    for row, clip in zip(rows, pyskl_clips, strict=True):
        assert row["path"] == f"clips/{clip.source.replace('/', '_')}.npz"
        loaded = load_npz(folder / row["path"])
        np.testing.assert_allclose(loaded.keypoints, clip.keypoints)
        assert loaded.layout.name == "coco17" and loaded.label == row["label"]


def test_folder_samples(folder: Path, tmp_path: Path, pyskl_clips) -> None:
    ds = SkeletonFolder(folder, "train", window=16, cache_dir=tmp_path, progress=False)
    assert len(ds) == ds.num_clips == 8
    assert ds.classes == CLASSES and ds.num_classes == 3 and ds.in_channels == 3
    assert ds.layout.name == "coco17"
    np.testing.assert_array_equal(ds.labels, [c.label for c in pyskl_clips[:8]])
    np.testing.assert_array_equal(ds.clip_labels, ds.labels)
    data = ds[3]
    assert set(data.keys()) == {"x", "edge_index", "y", "frame_mask", "clip_id", "layout"}
    assert data.x.shape == (17, 16, 3) and data.x.dtype == torch.float32
    assert data.y.dtype == torch.long and data.y.tolist() == [pyskl_clips[3].label]
    assert data.frame_mask.shape == (1, 16) and data.frame_mask.dtype == torch.bool
    assert data.clip_id.tolist() == [3]
    assert torch.equal(data.edge_index, bone_edge_index("coco17"))
    assert len(SkeletonFolder(folder, "val", cache_dir=tmp_path)) == 3
    assert len(SkeletonFolder(folder, "all", cache_dir=tmp_path)) == 12
    assert len(SkeletonFolder(folder, cache_dir=tmp_path)) == 12
    assert len(SkeletonFolder(folder, "test", cache_dir=tmp_path)) == 0


def test_clip_sampling_eval_is_the_centre_crop(folder: Path, tmp_path: Path, pyskl_clips) -> None:
    ds = SkeletonFolder(folder, "train", window=16, cache_dir=tmp_path)
    assert ds.p_interval == (0.95,) and ds.transform is None
    for i in (0, 5):
        expected = preprocess(pyskl_clips[i])
        sample = Data(x=torch.from_numpy(expected).permute(1, 0, 2))
        expected_x = RandomTemporalCrop((0.95,), 16)(sample).x
        torch.testing.assert_close(ds[i].x, expected_x)
        assert torch.equal(ds[i].x, ds[i].x)
        assert bool(ds[i].frame_mask.all())


def test_clip_sampling_train_is_random(folder: Path, tmp_path: Path) -> None:
    ds = SkeletonFolder(folder, "train", window=16, train=True, cache_dir=tmp_path)
    assert ds.p_interval == (0.5, 1.0) and ds.transform is not None
    torch.manual_seed(0)
    first = ds[7].x
    torch.manual_seed(1)
    assert not torch.equal(first, ds[7].x)
    torch.manual_seed(0)
    assert torch.equal(first, ds[7].x)
    plain = SkeletonFolder(
        folder, "train", window=16, train=True, transform=Compose([]), cache_dir=tmp_path
    )
    assert plain.transform is not None and plain[7].x.shape == (17, 16, 3)


def test_window_sampling_covers_clips(folder: Path, tmp_path: Path, pyskl_clips) -> None:
    window, stride = 8, 3
    ds = SkeletonFolder(folder, window=window, sampling="window", stride=stride, cache_dir=tmp_path)
    samples = [ds[i] for i in range(len(ds))]
    clip_ids = np.array([int(s.clip_id) for s in samples])
    np.testing.assert_array_equal(clip_ids, ds.clip_ids)
    assert np.all(np.diff(clip_ids) >= 0) and set(clip_ids) == set(range(12))
    for c, clip in enumerate(pyskl_clips):
        expected = preprocess(clip)
        windows, masks, starts = sliding_windows(expected, window, stride)
        mine = [s for s in samples if int(s.clip_id) == c]
        assert len(mine) == len(windows)
        covered = set()
        for s, w, m, start in zip(mine, windows, masks, starts, strict=True):
            torch.testing.assert_close(s.x, torch.from_numpy(w).permute(1, 0, 2))
            assert s.frame_mask[0].tolist() == m.tolist()
            assert torch.count_nonzero(s.x[:, ~s.frame_mask[0]]) == 0
            assert int(s.y) == clip.label
            covered |= set(range(start, min(start + window, clip.num_frames)))
        assert covered == set(range(clip.num_frames))
    short = samples[0]  # clip 0 has 5 frames < window: one padded window
    assert short.frame_mask.sum() == 5


def test_cache_is_reused_and_rebuilt_when_settings_change(folder: Path, tmp_path: Path) -> None:
    ds = SkeletonFolder(folder, cache_dir=tmp_path, window=16)
    path = ds.cache_path
    assert path.parent == tmp_path and path.suffix == ".pt"
    mtime = path.stat().st_mtime_ns
    again = SkeletonFolder(folder, cache_dir=tmp_path, window=32, sampling="window", train=True)
    assert again.cache_path == path and path.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    uncentred = SkeletonFolder(
        folder, cache_dir=tmp_path, window=16, preprocess=PreprocessConfig(center=False)
    )
    assert uncentred.cache_path != path and len(list(tmp_path.glob("*.pt"))) == 2
    assert not torch.allclose(uncentred[0].x, ds[0].x)
    early = SkeletonFolder(folder, cache_dir=tmp_path, observed_fraction=0.5)
    assert early.cache_path == path  # clips are cut after loading: one cache for every fraction
    mapped = SkeletonFolder(folder, cache_dir=tmp_path, layout="penn13")
    assert mapped.cache_path not in (path, uncentred.cache_path)
    assert len(list(tmp_path.glob("*.pt"))) == 3


def count_calls(monkeypatch, module, name: str) -> list[int]:
    """Counts the calls of ``module.name`` (a one-element list that grows with every call)."""
    calls = [0]
    original = getattr(module, name)

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_rewriting_identical_clips_keeps_the_cache_and_changes_clean_up(
    tmp_path: Path, monkeypatch
) -> None:
    import skelgraph.data.dataset as dataset_module

    items = [(random_clip(i, 10, source=f"c{i}"), "ab"[i % 2], "train") for i in range(4)]
    write_skeleton_folder(tmp_path / "f", items, progress=False)
    cache = tmp_path / "cache"
    first = SkeletonFolder(tmp_path / "f", cache_dir=cache, progress=False)
    other_settings = SkeletonFolder(
        tmp_path / "f", cache_dir=cache, preprocess=PreprocessConfig(scale=False), progress=False
    )
    calls = count_calls(monkeypatch, dataset_module, "preprocess")
    write_skeleton_folder(tmp_path / "f", items, progress=False)  # a re-run converter: new files
    again = SkeletonFolder(tmp_path / "f", cache_dir=cache, progress=False)
    assert again.cache_path == first.cache_path and calls[0] == 0  # loaded, nothing preprocessed

    items[0] = (random_clip(99, 12, source="c0"), "b", "train")
    write_skeleton_folder(tmp_path / "f", items, progress=False)
    changed = SkeletonFolder(tmp_path / "f", cache_dir=cache, progress=False)
    assert changed.cache_path != first.cache_path and calls[0] == 4
    assert not first.cache_path.exists()  # the stale file of these settings is gone
    assert sorted(cache.glob("*.pt")) == sorted([changed.cache_path, other_settings.cache_path])


def test_content_digest_ignores_zip_timestamps_not_contents(tmp_path: Path) -> None:
    import zipfile

    from skelgraph.data.dataset import content_digest

    random_clip(0, 6, source="a").save(tmp_path / "a.npz")
    with (
        zipfile.ZipFile(tmp_path / "a.npz") as src,
        zipfile.ZipFile(tmp_path / "b.npz", "w") as dst,
    ):
        for info in src.infolist():
            moved = zipfile.ZipInfo(info.filename, date_time=(2001, 2, 3, 4, 5, 6))
            dst.writestr(moved, src.read(info))
    assert (tmp_path / "a.npz").read_bytes() != (tmp_path / "b.npz").read_bytes()
    assert content_digest(tmp_path / "a.npz") == content_digest(tmp_path / "b.npz")
    random_clip(1, 6, source="a").save(tmp_path / "c.npz")
    assert content_digest(tmp_path / "c.npz") != content_digest(tmp_path / "a.npz")
    (tmp_path / "labels.csv").write_text("path,label,split\n")
    digest = content_digest(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("path,label,split\nx.npz,a,\n")
    assert content_digest(tmp_path / "labels.csv") != digest


def test_cache_rebuilt_when_sources_change(tmp_path: Path) -> None:
    items = [(random_clip(i, 10, source=f"c{i}"), "a" if i % 2 else "b", "train") for i in range(4)]
    write_skeleton_folder(tmp_path / "f", items, progress=False)
    first = SkeletonFolder(tmp_path / "f", "train")
    assert first.cache_path.parent == Path(os.environ["XDG_CACHE_HOME"]) / "skelgraph"
    csv_path = tmp_path / "f" / "labels.csv"
    csv_path.write_text(csv_path.read_text().replace("train", "test", 1))
    second = SkeletonFolder(tmp_path / "f", "train")
    assert second.cache_path != first.cache_path and len(second) == 3
    second.cache_path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable cache"):
        third = SkeletonFolder(tmp_path / "f", "train")
    assert len(third) == 3 and third.cache_path == second.cache_path


def test_observed_fraction_keeps_the_first_frames(folder: Path, tmp_path: Path) -> None:
    ds = SkeletonFolder(
        folder, window=64, sampling="window", observed_fraction=0.3, cache_dir=tmp_path
    )
    real = [int(ds[i].frame_mask.sum()) for i in range(len(ds))]
    assert real == [math.ceil(0.3 * n) for n in LENGTHS]
    whole = SkeletonFolder(folder, window=64, sampling="window", cache_dir=tmp_path)
    for fraction in (0.3, 1.0):
        cut = whole.observe(fraction)
        assert cut._frames is whole._frames  # the loaded frames, shared
        for i in range(len(ds)):
            torch.testing.assert_close(cut[i].x, (ds if fraction == 0.3 else whole)[i].x)
    with pytest.raises(ValueError, match="observed_fraction"):
        whole.observe(0.0)


def test_causal_preprocessing_cut_after_equals_preprocessing_the_cut(tmp_path: Path) -> None:
    clip = random_clip(3, 40, source="c")
    write_skeleton_folder(tmp_path / "f", [(clip, "a", "")], progress=False)
    config = PreprocessConfig(causal=True)
    ds = SkeletonFolder(tmp_path / "f", window=64, sampling="window", preprocess=config)
    n = math.ceil(0.35 * clip.num_frames)
    expected = preprocess(clip.keypoints[:n], "coco17", config)
    cut = ds.observe(0.35)[0]
    torch.testing.assert_close(cut.x[:, :n], torch.from_numpy(expected).permute(1, 0, 2))


def test_layout_mapping(folder: Path, tmp_path: Path) -> None:
    ds = SkeletonFolder(folder, "train", layout="penn13", window=16, cache_dir=tmp_path)
    assert ds.layout.name == "penn13" and ds[0].x.shape == (13, 16, 3)
    assert torch.equal(ds[0].edge_index, bone_edge_index("penn13"))
    items = [
        (random_clip(0, 10, "coco17", source="a"), "x", "train"),
        (random_clip(1, 12, "penn13", source="b"), "y", "train"),
    ]
    write_skeleton_folder(tmp_path / "mixed", items, progress=False)
    with pytest.raises(ValueError, match=r"b\.npz: layout: expected 'coco17'.*pass layout="):
        SkeletonFolder(tmp_path / "mixed")
    with pytest.warns(MappingWarning, match="left_eye, right_eye, left_ear, right_ear"):
        mixed = SkeletonFolder(tmp_path / "mixed", layout="coco17", window=8)
    assert [d.x.shape for d in (mixed[0], mixed[1])] == [(17, 8, 3), (17, 8, 3)]


def test_penn_action_dataset(tmp_path: Path) -> None:
    specs = [("squat", True, 20), ("bowl", False, 15), ("squat", False, 30), ("bowl", True, 9)]
    root = make_penn_root(tmp_path / "penn", specs)
    train = PennAction(root, window=16, progress=False)
    assert train.split == "train" and len(train) == 2 and train.classes == ["bowl", "squat"]
    assert train.clip_names == ["labels/0001.mat", "labels/0004.mat"]
    np.testing.assert_array_equal(train.clip_labels, [1, 0])
    assert train.clip_groups is None  # Penn Action names no groups
    test = PennAction(root, "test", window=16)
    assert len(test) == 2 and test[0].x.shape == (13, 16, 3)
    assert len(PennAction(root, "all")) == 4
    with pytest.raises(ValueError, match=r"split: expected one of \['train', 'test', 'all'\]"):
        PennAction(root, "val")
    with pytest.raises(FileNotFoundError, match="labels"):
        PennAction(tmp_path)


# -- errors ---------------------------------------------------------------------------------------


def write_csv(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(text)
    return root


def test_missing_labels_csv(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"labels\.csv: not found"):
        SkeletonFolder(tmp_path)


def test_missing_columns(tmp_path: Path) -> None:
    root = write_csv(tmp_path, "path,label\nclips/a.npz,x\n")
    with pytest.raises(ValueError, match=r"expected columns path,label,split.*missing split"):
        SkeletonFolder(root)
    root = write_csv(tmp_path, "")
    with pytest.raises(ValueError, match="empty file"):
        SkeletonFolder(root)
    root = write_csv(tmp_path, "path,label,split\n")
    with pytest.raises(ValueError, match="at least one clip row"):
        SkeletonFolder(root)


def test_missing_and_corrupt_clip_files(tmp_path: Path) -> None:
    random_clip(0, 5).save(tmp_path / "a.npz")
    root = write_csv(tmp_path, "path,label,split\na.npz,x,train\nb.npz,y,test\n")
    with pytest.raises(
        FileNotFoundError, match=r"labels\.csv line 3: clip file 'b\.npz' not found"
    ):
        SkeletonFolder(root)
    (tmp_path / "b.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"labels\.csv line 3: .*b\.npz: expected an \.npz"):
        SkeletonFolder(root, progress=False)


def test_bad_rows_and_arguments(tmp_path: Path) -> None:
    random_clip(0, 5).save(tmp_path / "a.npz")
    write_csv(tmp_path, "path,label,split\na.npz,x,training\n")
    with pytest.raises(ValueError, match=r"line 2: split: expected one of train, val, test"):
        SkeletonFolder(tmp_path)
    write_csv(tmp_path, "path,label,split\na.npz,,train\n")
    with pytest.raises(ValueError, match="line 2: expected a path and a label"):
        SkeletonFolder(tmp_path)
    write_csv(tmp_path, "path,label,split\na.npz,x,train\na.npz,x,test\n")
    with pytest.raises(ValueError, match=r"line 3: path 'a\.npz' already listed on line 2"):
        SkeletonFolder(tmp_path)
    write_csv(tmp_path, "path,label,split\na.npz,x,train\n")
    with pytest.raises(
        ValueError, match=r"split: expected one of \['train', 'val', 'test', 'all'\]"
    ):
        SkeletonFolder(tmp_path, "validation")
    with pytest.raises(
        ValueError, match=r"a\.npz: label: expected one of classes \['y'\], got 'x'"
    ):
        SkeletonFolder(tmp_path, classes=["y"])
    (tmp_path / "classes.txt").write_text("x\nx\n")
    with pytest.raises(ValueError, match=r"classes\.txt: expected unique class names"):
        SkeletonFolder(tmp_path)
    (tmp_path / "classes.txt").unlink()
    for kwargs, match in [
        ({"sampling": "frames"}, "sampling"),
        ({"window": 0}, "window"),
        ({"stride": 0}, "stride"),
        ({"observed_fraction": 0.0}, "observed_fraction"),
        ({"p_interval": (1.5,)}, "p_interval"),
    ]:
        with pytest.raises(ValueError, match=match):
            SkeletonFolder(tmp_path, **kwargs)


def test_mixed_channels_are_rejected(tmp_path: Path) -> None:
    items = [
        (random_clip(0, 6, source="two_d"), "x", ""),
        (random_clip(1, 6, channels=4, source="three_d"), "x", ""),
    ]
    write_skeleton_folder(tmp_path / "f", items, progress=False)
    with pytest.raises(ValueError, match=r"three_d\.npz: keypoints: expected 3 channels"):
        SkeletonFolder(tmp_path / "f")


# -- folder writer --------------------------------------------------------------------------------


def test_write_folder_overwrites_cleanly(tmp_path: Path) -> None:
    dst = tmp_path / "out"
    first = [(random_clip(i, 5, source=f"old{i}"), "a", "train") for i in range(3)]
    assert write_skeleton_folder(dst, first, progress=False) == 3
    second = [(random_clip(9, 5, source="new"), "b", "test")]
    write_skeleton_folder(dst, second, classes=["a", "b"], progress=False)
    assert sorted(os.listdir(dst / "clips")) == ["new.npz"]
    assert read_rows(dst) == [{"path": "clips/new.npz", "label": "b", "split": "test"}]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
    with pytest.raises(ValueError, match="split"):
        write_skeleton_folder(dst, [(random_clip(0, 5), "a", "dev")], progress=False)
    assert read_rows(dst)[0]["path"] == "clips/new.npz"  # a failed write leaves dst as it was
    with pytest.raises(ValueError, match=r"label: expected one of \['a'\]"):
        write_skeleton_folder(dst, [(random_clip(0, 5), "b", "")], classes=["a"], progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not part of a skeleton folder"):
        write_skeleton_folder(tmp_path / "other", second, progress=False)


def test_write_folder_names_are_safe_and_unique(tmp_path: Path) -> None:
    items = [
        (random_clip(0, 5, source="a/b c"), "x", ""),
        (random_clip(1, 5, source="a/b c"), "x", ""),
        (random_clip(2, 5), "x", ""),
    ]
    write_skeleton_folder(tmp_path / "f", items, progress=False)
    paths = [r["path"] for r in read_rows(tmp_path / "f")]
    assert paths == ["clips/a_b_c.npz", "clips/a_b_c-1.npz", "clips/clip_000002.npz"]


# -- batching -------------------------------------------------------------------------------------


def test_loader_and_to_dense(folder: Path, tmp_path: Path) -> None:
    ds = SkeletonFolder(folder, window=16, cache_dir=tmp_path)
    batch = next(iter(make_loader(ds, batch_size=4)))
    assert batch.x.shape == (4 * 17, 16, 3) and batch.frame_mask.shape == (4, 16)
    assert batch.y.shape == (4,) and batch.clip_id.tolist() == [0, 1, 2, 3]
    x, mask = to_dense(batch)
    assert x.shape == (4, 17, 16, 3) and mask.shape == (4, 16)
    assert x.data_ptr() == batch.x.data_ptr()  # a view, no copy
    torch.testing.assert_close(x[2], ds[2].x)
    single_x, single_mask = to_dense(ds[0])
    assert single_x.shape == (1, 17, 16, 3) and single_mask.shape == (1, 16)
    with pytest.raises(ValueError, match=r"batch\.x"):
        to_dense(Data(x=torch.zeros(17, 3)))
    train = SkeletonFolder(folder, window=16, train=True, cache_dir=tmp_path)
    order = [b.clip_id.tolist() for b in make_loader(train, batch_size=12, seed=3)]
    assert order == [b.clip_id.tolist() for b in make_loader(train, batch_size=12, seed=3)]
    assert order != [list(range(12))]  # shuffled by default in training mode


# -- split ----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 100),
)
def test_stratified_split_properties(counts: list[int], fraction: float, seed: int) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(seed).shuffle(labels)
    train_idx, val_idx = stratified_split(labels, fraction, seed)
    assert np.intersect1d(train_idx, val_idx).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train_idx, val_idx])), range(len(labels)))
    for cls, n in enumerate(counts):
        n_val = int((labels[val_idx] == cls).sum())
        if n >= 2:
            assert 1 <= n_val <= n - 1 and (labels[train_idx] == cls).any()
            assert n_val == min(max(round(n * fraction), 1), n - 1)
        else:
            assert n_val == 0
    again = stratified_split(labels, fraction, seed)
    assert all(np.array_equal(a, b) for a, b in zip(again, (train_idx, val_idx), strict=True))


@settings(max_examples=30, deadline=None)
@given(windows=st.lists(st.integers(1, 5), min_size=4, max_size=20), seed=st.integers(0, 50))
def test_stratified_split_keeps_windows_of_a_clip_together(windows: list[int], seed: int) -> None:
    groups = np.repeat(np.arange(len(windows)), windows)
    labels = groups % 2
    train_idx, val_idx = stratified_split(labels, 0.3, seed, groups=groups)
    assert not set(groups[train_idx]) & set(groups[val_idx])
    assert len(train_idx) + len(val_idx) == len(groups)


def test_stratified_split_seed_and_errors() -> None:
    labels = np.repeat(["a", "b"], 50)
    assert not np.array_equal(
        stratified_split(labels, 0.2, 0)[1], stratified_split(labels, 0.2, 1)[1]
    )
    assert len(stratified_split(labels, 0.2)[1]) == 20
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, 1.0)
    with pytest.raises(ValueError, match="labels: expected a 1-D array"):
        stratified_split(labels.reshape(2, 50))
    with pytest.raises(ValueError, match="groups: expected the shape"):
        stratified_split(labels, groups=np.arange(3))
    with pytest.raises(ValueError, match="samples of clip 0 have different labels"):
        stratified_split(np.array([0, 1, 1]), groups=np.array([0, 0, 1]))


# -- sport-14 -------------------------------------------------------------------------------------


def test_sport14_names() -> None:
    assert len(SPORT14) == 14 and SPORT14[:4] == ("squat", "bench_press", "pullup", "pushup")
    assert SPORT14[-1] == "running_on_treadmill"
    assert all(to_sport14(name) == name for name in SPORT14)


@pytest.mark.parametrize(
    "name, expected",
    [
        # UCF101
        ("BenchPress", "bench_press"),
        ("PullUps", "pullup"),
        ("PushUps", "pushup"),
        ("JumpRope", "jump_rope"),
        ("JumpingJack", "jumping_jacks"),
        ("CleanAndJerk", "clean_and_jerk"),
        ("Lunges", "lunges"),
        ("WallPushups", "wall_pushups"),
        ("HandstandPushups", "handstand_pushups"),
        ("HandstandWalking", "handstand_walking"),
        ("BodyWeightSquats", "squat"),
        # Kinetics-400
        ("squat", "squat"),
        ("bench pressing", "bench_press"),
        ("pull ups", "pullup"),
        ("push up", "pushup"),
        ("lunge", "lunges"),
        ("situp", "situp"),
        ("snatch weight lifting", "snatch_weight_lifting"),
        ("running on treadmill", "running_on_treadmill"),
        # Penn Action
        ("jumping_jacks", "jumping_jacks"),
        ("clean_and_jerk", "clean_and_jerk"),
        (" Bench_Press ", "bench_press"),
        # outside the 14
        ("golf_swing", None),
        ("ApplyEyeMakeup", None),
        ("deadlifting", None),
        ("", None),
    ],
)
def test_to_sport14(name: str, expected: str | None) -> None:
    assert to_sport14(name) == expected


def test_default_cache_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / "skelgraph"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert user_cache_dir() == Path.home() / ".cache" / "skelgraph"
