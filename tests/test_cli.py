from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_data import make_penn_root, random_clip

import skelgraph
from skelgraph.allocator import SETTINGS, _glibc
from skelgraph.cli import main
from skelgraph.data import PennAction, SkeletonFolder
from skelgraph.io import save_pyskl
from skelgraph.layouts import get_layout, list_layouts


def read_rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "info" in out and "convert" in out
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "penn-action" in capsys.readouterr().out


def test_info(capsys) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in ("skelgraph", "torch", "torch_geometric", "torchdiffeq", "numpy"):
        assert name in out
    assert skelgraph.__version__ in out
    assert "CUDA" in out and "bf16" in out
    for name in list_layouts():
        layout = get_layout(name)
        assert f"{name:<16} {layout.num_joints:>6} {layout.num_bones:>6}" in out


def test_commands_print_no_warning_of_the_libraries_beneath() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "skelgraph", "info"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "Warning" not in done.stderr, done.stderr


@pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")
def test_commands_keep_freed_memory_unless_told_otherwise() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "SKELGRAPH_MALLOC"}
    for env, expected in [
        ({}, "allocator        keeps freed memory (MALLOC_TRIM_THRESHOLD_=1073741824"),
        ({"SKELGRAPH_MALLOC": "system"}, "allocator        glibc's or the system's defaults"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "skelgraph", "info"],
            capture_output=True,
            text=True,
            timeout=300,
            env=clean | env,
        )
        assert expected in done.stdout, done.stdout


def test_convert_penn_action(tmp_path: Path, capsys) -> None:
    specs = [("squat", True, 12), ("bowl", False, 7), ("squat", False, 9)]
    root = make_penn_root(tmp_path / "penn", specs)
    dst = tmp_path / "out"
    assert main(["convert", "penn-action", str(root), str(dst)]) == 0
    assert f"wrote 3 clips (2 test, 1 train; 2 classes) to {dst}" in capsys.readouterr().out
    rows = read_rows(dst)
    assert rows == [
        {"path": "clips/0001.npz", "label": "squat", "split": "train"},
        {"path": "clips/0002.npz", "label": "bowl", "split": "test"},
        {"path": "clips/0003.npz", "label": "squat", "split": "test"},
    ]
    assert not (dst / "classes.txt").exists()
    folder = SkeletonFolder(dst, "test", window=8, cache_dir=tmp_path / "cache")
    penn = PennAction(root, "test", window=8, cache_dir=tmp_path / "cache")
    assert folder.classes == penn.classes == ["bowl", "squat"]
    for i in range(2):
        assert np.array_equal(folder[i].x, penn[i].x)
    # a re-run replaces the folder
    assert main(["convert", "penn-action", str(root), str(dst), "--quiet"]) == 0
    assert sorted(p.name for p in (dst / "clips").iterdir()) == [
        "0001.npz",
        "0002.npz",
        "0003.npz",
    ]


@pytest.fixture
def pickle_path(tmp_path: Path) -> Path:
    clips = [random_clip(i, 6 + i, label=i % 2, source=f"s{i}") for i in range(6)]
    split = {
        "xsub_train": ["s0", "s1", "s2"],
        "xsub_val": ["s3", "s4"],
        "xview_train": ["s0", "s3"],
        "xview_test": ["s1", "s2", "s4"],
    }
    save_pyskl(clips, tmp_path / "ann.pkl", split=split)
    return tmp_path / "ann.pkl"


def test_convert_pyskl_splits(pickle_path: Path, tmp_path: Path, capsys) -> None:
    dst = tmp_path / "xsub"
    argv = ["convert", "pyskl", str(pickle_path), str(dst), "--quiet"]
    assert main([*argv, "--splits", "xsub_train,xsub_val"]) == 0
    assert "wrote 6 clips (1 unsplit, 3 train, 2 val; 2 classes)" in capsys.readouterr().out
    assert [r["split"] for r in read_rows(dst)] == ["train"] * 3 + ["val"] * 2 + [""]
    assert [r["label"] for r in read_rows(dst)] == ["0", "1"] * 3
    assert (dst / "classes.txt").read_text() == "0\n1\n"
    # s1 is in xsub_train and xview_test: ambiguous without --splits
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "'s1'" in err and "['xsub_train', 'xview_test']" in err and "--splits" in err
    assert main([*argv, "--splits", "xview_train,xview_test"]) == 0
    assert [r["split"] for r in read_rows(dst)] == ["train", "test", "test", "train", "test", ""]


def test_convert_pyskl_classes_and_layout(pickle_path: Path, tmp_path: Path) -> None:
    (tmp_path / "names.txt").write_text("walk\nrun\n")
    dst = tmp_path / "named"
    argv = ["convert", "pyskl", str(pickle_path), str(dst), "--quiet", "--splits", "xsub_train"]
    assert main([*argv, "--classes", str(tmp_path / "names.txt"), "--layout", "coco17"]) == 0
    assert [r["label"] for r in read_rows(dst)] == ["walk", "run"] * 3
    ds = SkeletonFolder(dst, "train", window=4)
    assert ds.classes == ["walk", "run"] and ds.labels.tolist() == [0, 1, 0]
    (tmp_path / "short.txt").write_text("walk\n")
    assert main([*argv, "--classes", str(tmp_path / "short.txt")]) == 1


def test_convert_errors(pickle_path: Path, tmp_path: Path, capsys) -> None:
    assert main(["convert", "penn-action", str(tmp_path / "nowhere"), str(tmp_path / "o")]) == 1
    assert "labels" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    assert main(["convert", "pyskl", str(pickle_path), str(other), "--quiet"]) == 1
    assert "not part of a skeleton folder" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "x"
    assert main(["convert", "pyskl", str(tmp_path / "missing.pkl"), str(tmp_path / "o")]) == 1
    assert "missing.pkl" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", "mat", "a", "b"])
