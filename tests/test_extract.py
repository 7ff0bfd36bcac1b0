from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_pose import frames, write_test_video

from skelgraph.cli import main
from skelgraph.cli.extract import publish
from skelgraph.clip import SkeletonClip
from skelgraph.data import SkeletonFolder

cv2 = pytest.importorskip("cv2")

# the untrained architecture (no weights can be downloaded here) at a small input size
MODEL = ["--model", "yolo11n-pose.yaml", "--device", "cpu", "--imgsz", "64", "--quiet"]


@pytest.fixture(scope="module")
def yolo_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """ultralytics offline, settings in a temporary folder; the environment for subprocesses."""
    env = {"YOLO_CONFIG_DIR": str(tmp_path_factory.mktemp("ultralytics")), "YOLO_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        pytest.importorskip("ultralytics")
        yield {**os.environ, **env}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def clip_files(dst: Path) -> list[str]:
    return sorted(p.relative_to(dst).as_posix() for p in (dst / "clips").rglob("*.npz"))


def temp_files(dst: Path) -> list[Path]:
    return [p for p in dst.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


# ------------------------------------------------------------------------------------------------
# video reading, writing and augmentation


def test_write_and_read_video(tmp_path: Path) -> None:
    from skelgraph.video import VideoReader

    for suffix in (".mp4", ".avi"):
        video = write_test_video(tmp_path / f"v{suffix}", num=7, size=64, fps=12.5)
        reader = VideoReader(video)
        assert (reader.fps, reader.frame_count, reader.width, reader.height) == (12.5, 7, 64, 64)
        decoded = list(reader)
        assert len(decoded) == 7 and decoded[0].shape == (64, 64, 3)
        assert len(list(reader)) == 7  # iterable again
    assert not temp_files(tmp_path)


def test_video_reader_errors(tmp_path: Path) -> None:
    from skelgraph.video import VideoReader

    with pytest.raises(FileNotFoundError, match=r"missing\.mp4"):
        VideoReader(tmp_path / "missing.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="cannot open"):
        VideoReader(bad)


def test_video_reader_sources(tmp_path: Path) -> None:
    from skelgraph.video import VideoReader

    with pytest.raises(ValueError, match="webcam 99: OpenCV cannot open it as a video"):
        VideoReader(99)
    video = write_test_video(tmp_path / "v.mp4", num=5, size=32)
    reader = VideoReader(str(video))
    assert (reader.name, reader.path) == (str(video), video)
    pairs = list(zip(reader, reader, strict=True))  # each iteration reads its own capture
    assert len(pairs) == 5 and all(np.array_equal(a, b) for a, b in pairs)
    running = iter(reader)
    next(running)
    reader.close()  # ends the running iteration
    assert list(running) == []


def test_write_video_errors(tmp_path: Path) -> None:
    from skelgraph.video import write_video

    with pytest.raises(ValueError, match="at least one frame"):
        write_video(tmp_path / "empty.mp4", [], 25)
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        write_video(
            tmp_path / "mixed.avi", [np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4, 3))], 25
        )
    assert not list(tmp_path.iterdir())


def test_video_augmentations() -> None:
    from skelgraph.video import (
        adjust_color,
        augment_frames,
        change_tempo,
        mirror,
        sample_augmentation,
    )

    frame = next(frames(1, size=32))
    assert np.array_equal(next(mirror([frame])), frame[:, ::-1])
    brighter = next(adjust_color([frame], brightness=1.3, saturation=1.0))
    hsv, hsv_b = (cv2.cvtColor(f, cv2.COLOR_BGR2HSV).astype(int) for f in (frame, brighter))
    assert hsv_b[..., 2].mean() > hsv[..., 2].mean() * 1.2
    grey = next(adjust_color([frame], saturation=0.0))
    assert cv2.cvtColor(grey, cv2.COLOR_BGR2HSV)[..., 1].max() <= 2
    ten = [np.full((2, 2, 3), i, np.uint8) for i in range(10)]
    assert [f[0, 0, 0] for f in change_tempo(ten, 2.0)] == [0, 2, 4, 6, 8]
    assert [f[0, 0, 0] for f in change_tempo(ten, 1.25)] == [0, 1, 2, 3, 5, 6, 7, 8]
    assert len(list(change_tempo(ten, 0.5))) == 20
    with pytest.raises(ValueError, match="speed"):
        list(change_tempo(ten, 0))
    for name in ("mirror", "color", "tempo"):
        params = sample_augmentation(name, np.random.default_rng(3))
        assert params == sample_augmentation(name, np.random.default_rng(3))
        assert len(list(augment_frames(ten, name, params))) > 0
    speed = sample_augmentation("tempo", np.random.default_rng(0))["speed"]
    assert 1.1 <= speed <= 1.25 or 1 / 1.25 <= speed <= 1 / 1.1
    with pytest.raises(ValueError, match="expected one of mirror, color, tempo"):
        sample_augmentation("blur", np.random.default_rng(0))


def test_publish_rewrites_until_stable(tmp_path: Path) -> None:
    """Another shard adds a clip while this one writes labels.csv: the file ends complete."""
    snapshots = iter([[("a", "x", "")], [("a", "x", ""), ("b", "y", "")]])
    last: list = []

    def rows() -> list:
        last[:] = next(snapshots, last)
        return list(last)

    path = tmp_path / "labels.csv"
    assert publish(path, ("path", "label", "split"), rows, "0-of-1") == last
    assert read_csv(path) == [
        {"path": "a", "label": "x", "split": ""},
        {"path": "b", "label": "y", "split": ""},
    ]
    assert not temp_files(tmp_path)


# ------------------------------------------------------------------------------------------------
# extraction


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 small videos in class folders (squat/jump) under train/ and test/, plus a corrupt one."""
    root = tmp_path_factory.mktemp("videos")
    for i in range(6):
        split, label = ("train", "test")[i % 2], ("squat", "jump")[i // 3]
        write_test_video(root / split / label / f"v{i}.avi", num=16, size=64, fps=30.0)
    (root / "train" / "jump" / "broken.mp4").write_bytes(np.random.bytes(2048))
    return root


def test_extract_folder_with_augmentation(yolo_env, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src" / "squat"
    write_test_video(src / "a.mp4", num=10, size=96, fps=25.0)
    dst = tmp_path / "out"
    argv = ["extract", str(tmp_path / "src"), "--out", str(dst), *MODEL]
    assert main([*argv, "--augment", "mirror,color,tempo", "--fps", "20"]) == 0
    assert "4 clips written" in capsys.readouterr().out
    stems = ["a", "a__color", "a__mirror", "a__tempo"]
    assert clip_files(dst) == [f"clips/squat/{s}.npz" for s in stems]
    assert read_csv(dst / "labels.csv") == [
        {"path": f"clips/squat/{s}.npz", "label": "squat", "split": ""} for s in stems
    ]
    assert read_csv(dst / "failures.csv") == []
    for stem in stems:
        clip = SkeletonClip.load(dst / "clips" / "squat" / f"{stem}.npz")
        assert clip.layout.name == "coco17" and clip.label == "squat" and clip.fps == 20.0
        assert clip.source == "squat/a.mp4" and clip.meta["source_fps"] == 25.0
        assert clip.meta["frame_size"] == [96, 96]
        if stem == "a__tempo":
            speed = clip.meta["augment"]["speed"]
            assert clip.num_frames == round(math.ceil(10 / speed) * 20 / 25)
        else:
            assert clip.num_frames == 8  # 10 frames at 25 fps -> 20 fps
            assert ("augment" in clip.meta) == (stem != "a")
    assert len(SkeletonFolder(dst, window=8, cache_dir=tmp_path / "cache")) == 4
    # a re-run finds everything done and loads no model
    assert main([*argv, "--augment", "mirror,color,tempo", "--model", "missing.pt"]) == 0
    assert "0 clips written, 1 videos already done" in capsys.readouterr().out


def test_extract_list_with_labels_csv(yolo_env, tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write_test_video(tmp_path / "videos" / "x" / f"{name}.avi", num=5, size=64)
    listing = tmp_path / "videos" / "list.txt"
    listing.write_text("# three videos\nx/a.avi\n\nx/b.avi\nx/c.avi\n")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label,split\nx/a.avi,run,train\nx/b.avi,walk,test\n")
    dst = tmp_path / "out"
    assert main(["extract", str(listing), "--out", str(dst), "--labels", str(labels), *MODEL]) == 0
    assert read_csv(dst / "labels.csv") == [
        {"path": "clips/x/a.npz", "label": "run", "split": "train"},
        {"path": "clips/x/b.npz", "label": "walk", "split": "test"},
    ]
    assert [r["path"] for r in read_csv(dst / "failures.csv")] == ["x/c.avi"]
    assert "no label" in read_csv(dst / "failures.csv")[0]["reason"]
    clip = SkeletonClip.load(dst / "clips" / "x" / "a.npz")
    assert clip.num_frames == 5 and clip.fps == 25.0 and clip.meta["split"] == "train"


def test_extract_input_errors(yolo_env, tmp_path: Path, capsys) -> None:
    assert main(["extract", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "input not found" in capsys.readouterr().err
    for name in ("a.mp4", "a.avi"):
        write_test_video(tmp_path / "v" / "k" / name, num=2, size=32)
    assert main(["extract", str(tmp_path / "v"), "--out", str(tmp_path / "o")]) == 1
    assert "would be written there" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["extract", str(tmp_path / "v"), "--out", "o", "--shard", "2/2"])
    assert "expected 0 <= i < n" in capsys.readouterr().err


def test_extract_killed_and_resumed(yolo_env, dataset: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    argv = ["extract", str(dataset), "--out", str(dst), *MODEL]
    log = tmp_path / "killed.log"
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "skelgraph", *argv],
            env=yolo_env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 120
            while not (dst / "clips").is_dir() or not clip_files(dst):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no clip written in 120 s"
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    before = {p: (dst / p).stat().st_mtime_ns for p in clip_files(dst)}
    assert 1 <= len(before) < 6, "the run was not killed midway"
    assert not (dst / "labels.csv").exists()
    # what a kill during a write leaves behind (atomic_write's temporary name)
    (dst / "clips" / "test" / "squat").mkdir(parents=True, exist_ok=True)
    (dst / "clips" / "test" / "squat" / ".v1.npz.0123456789ab.tmp").write_bytes(b"partial")

    assert main(argv) == 0
    expected = [
        f"clips/{split}/{label}/v{i}.npz"
        for i in range(6)
        for split, label in [(("train", "test")[i % 2], ("squat", "jump")[i // 3])]
    ]
    assert clip_files(dst) == sorted(expected)
    assert all((dst / p).stat().st_mtime_ns == t for p, t in before.items())  # not redone
    rows = read_csv(dst / "labels.csv")
    assert [r["path"] for r in rows] == sorted(expected)
    assert {(r["label"], r["split"]) for r in rows} == {
        ("squat", "train"),
        ("squat", "test"),
        ("jump", "train"),
        ("jump", "test"),
    }
    failures = read_csv(dst / "failures.csv")
    assert [f["path"] for f in failures] == ["train/jump/broken.mp4"]
    assert "cannot open" in failures[0]["reason"]
    assert not temp_files(dst)
    for path in expected:
        clip = SkeletonClip.load(dst / path)
        assert clip.num_frames == 16 and clip.fps == 30.0
        assert clip.source == path.removeprefix("clips/").replace(".npz", ".avi")


def test_extract_shards_cover_the_set_once(yolo_env, dataset: Path, tmp_path: Path, capsys) -> None:
    dst = tmp_path / "out"
    argv = ["extract", str(dataset), "--out", str(dst), *MODEL]
    # sorted: test/jump/v3, test/jump/v5, test/squat/v1, train/jump/broken.mp4, train/jump/v4,
    # train/squat/v0, train/squat/v2; shard i takes every second one from index i
    assert main([*argv, "--shard", "1/2"]) == 0
    first = clip_files(dst)
    assert first == ["clips/test/jump/v5.npz", "clips/train/squat/v0.npz"]
    assert [r["path"] for r in read_csv(dst / "labels.csv")] == first
    assert main([*argv, "--shard", "0/2"]) == 0
    second = sorted(set(clip_files(dst)) - set(first))
    assert second == [
        "clips/test/jump/v3.npz",
        "clips/test/squat/v1.npz",
        "clips/train/jump/v4.npz",
        "clips/train/squat/v2.npz",
    ]
    assert [r["path"] for r in read_csv(dst / "labels.csv")] == sorted(first + second)
    assert [f["path"] for f in read_csv(dst / "failures.csv")] == ["train/jump/broken.mp4"]
    assert sorted(p.name for p in (dst / ".extract").iterdir()) == [
        "failures-0-of-2.csv",
        "failures-1-of-2.csv",
    ]
    capsys.readouterr()
    for shard in ("0/2", "1/2"):
        assert main([*argv, "--shard", shard]) == 0
    assert capsys.readouterr().out.count("0 clips written") == 2
    assert not temp_files(dst)
