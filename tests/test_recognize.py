from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PENN13_POSE, write_infogcn2_checkpoint
from test_pose import write_test_video

from skelgraph.cli import main
from skelgraph.cli.recognize import json_record
from skelgraph.clip import SkeletonClip
from skelgraph.io import save_npz
from skelgraph.layouts import Layout, MappingWarning, map_keypoints

CLASSES = ["bowl", "jump", "squat", "pitch"]
NUM_FUTURE = 3


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained small InfoGCN2 on penn13 with four classes."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    return write_infogcn2_checkpoint(path, CLASSES, channels=16, depth=1, num_future=NUM_FUTURE)


def moving_keypoints(frames: int, seed: int = 0) -> np.ndarray:
    """A penn13 person (x, y in pixels, confidence) waving its arms, with a few missing joints,
    shape (frames, 13, 3)."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float32)[:, None]
    xy = np.repeat(PENN13_POSE[None] + [200, 150], frames, axis=0)
    xy[:, 3:7, 1] -= 30 * np.sin(t / 4)  # elbows and wrists
    xy += rng.normal(0, 1.0, xy.shape)
    conf = np.ones((frames, 13, 1), np.float32)
    conf[rng.uniform(size=(frames, 13, 1)) < 0.05] = 0.0
    return np.concatenate([xy, conf], axis=2).astype(np.float32)


def write_clip(path: Path, frames: int = 40, layout: str = "penn13", **kwargs) -> Path:
    kp = moving_keypoints(frames)
    if layout != "penn13":
        with pytest.warns(MappingWarning):  # penn13 has no eyes and ears
            kp = map_keypoints(kp, "penn13", layout)
    save_npz(SkeletonClip(kp, layout, **({"fps": 30.0} | kwargs)), path)
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_records(
    records: list[dict], frames: int, joints: int = 13, smoothed: bool = False
) -> None:
    """One record per frame with a distribution over the classes and a forecast; the label is
    the most probable class unless smoothed."""
    assert [r["frame"] for r in records] == list(range(frames))
    for r in records:
        probs = np.array(r["probabilities"])
        assert probs.shape == (len(CLASSES),) and (probs >= 0).all()
        assert probs.sum() == pytest.approx(1.0, abs=1e-5)
        assert r["label"] in CLASSES and 0 <= r["score"] <= 1
        if not smoothed:
            assert r["score"] == pytest.approx(probs.max(), abs=1e-6)
            assert r["label"] == CLASSES[int(np.argmax(probs))]
        assert np.array(r["forecast"]).shape == (NUM_FUTURE, joints, 2)


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """The number of decodable frames and the frame size (height, width) of a video."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    count, size = 0, (0, 0)
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        count, size = count + 1, frame.shape[:2]
    capture.release()
    return count, size


# ------------------------------------------------------------------------------------------------
# skeleton clips


def test_recognize_clip_table_jsonl_and_overlay(checkpoint: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("cv2")
    clip = write_clip(tmp_path / "clip.npz", frames=40)
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    argv = ["recognize", str(clip), "--checkpoint", str(checkpoint), "--quiet"]
    assert main([*argv, "--jsonl", str(jsonl), "--out", str(video), "--every", "15"]) == 0
    out = capsys.readouterr().out.splitlines()
    records = read_jsonl(jsonl)
    check_records(records, 40)
    assert [r["time"] for r in records[:3]] == pytest.approx([0, 1 / 30, 2 / 30])
    assert out[0].startswith(f"{clip}: penn13 keypoints, 40 frames at 30 fps; model infogcn2")
    assert out[1].split() == ["frame", "time", "action", "prob", "runner-up", "prob"]
    rows = [line.split() for line in out[2:-1]]
    assert [row[:2] for row in rows] == [["0", "0.00s"], ["15", "0.50s"], ["30", "1.00s"]]
    for row in rows:
        record = records[int(row[0])]
        assert row[2] == record["label"] and float(row[3]) == pytest.approx(
            record["score"], abs=0.006
        )
        second = sorted(zip(record["probabilities"], CLASSES, strict=True))[-2]
        assert row[4] == second[1] and float(row[5]) == pytest.approx(second[0], abs=0.006)
    last = records[-1]
    assert out[-1].startswith(f"final: {last['label']} ({last['score']:.2f}) at frame 39 (1.30s)")
    count, (height, width) = video_frames(video)
    assert count == 40 and height > 160 and width > 70  # a canvas around the 140-pixel person
    assert not temp_files(tmp_path)


def test_recognize_clip_needs_no_opencv(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Skeleton clips are recognised without OpenCV or ultralytics (the core install)."""
    for name in ("cv2", "ultralytics", "skelgraph.render", "skelgraph.video"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it fails
    clip = write_clip(tmp_path / "clip.npz", frames=12)
    assert main(["recognize", str(clip), "--checkpoint", str(checkpoint), "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("final: ")
    assert main(["recognize", str(clip), "--checkpoint", str(checkpoint), "--out", "o.mp4"]) == 1
    assert "skelgraph.render" in capsys.readouterr().err


def test_recognize_jsonl_to_stdout(checkpoint: Path, tmp_path: Path, capsys) -> None:
    clip = write_clip(tmp_path / "clip.npz", frames=20)
    argv = ["recognize", str(clip), "--checkpoint", str(checkpoint), "--jsonl", "-", "--quiet"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    check_records([json.loads(line) for line in captured.out.splitlines()], 20)
    assert "final: " in captured.err and "frame" not in captured.out.split("{")[0]


def test_recognize_options(checkpoint: Path, tmp_path: Path, capsys) -> None:
    argv = ["recognize", "--checkpoint", str(checkpoint), "--quiet", "--jsonl"]
    clip = write_clip(tmp_path / "clip.npz", frames=40)
    # --max-frames stops early; --fps resamples the clip (30 -> 15 fps: half the frames)
    assert main([*argv, str(tmp_path / "a.jsonl"), str(clip), "--max-frames", "7"]) == 0
    check_records(read_jsonl(tmp_path / "a.jsonl"), 7)
    assert main([*argv, str(tmp_path / "b.jsonl"), str(clip), "--fps", "15"]) == 0
    records = read_jsonl(tmp_path / "b.jsonl")
    check_records(records, 20)
    assert records[1]["time"] == pytest.approx(1 / 15)
    # a coco17 clip is mapped to the model's penn13; the forecast comes back in coco17
    coco = write_clip(tmp_path / "coco.npz", frames=10, layout="coco17")
    assert main([*argv, str(tmp_path / "c.jsonl"), str(coco), "--smoothing", "0.5"]) == 0
    check_records(read_jsonl(tmp_path / "c.jsonl"), 10, joints=17, smoothed=True)
    # --input-layout names the joints of a clip saved with an anonymous layout
    joints = [f"j{i}" for i in range(17)]
    bones = [(j, "j0") for j in joints[1:]]
    anonymous = Layout.from_names("anon17", joints, bones, ["j0"], (["j0"], ["j0"]))
    anon = tmp_path / "anon.npz"
    save_npz(SkeletonClip(SkeletonClip.load(coco).keypoints, anonymous), anon)
    capsys.readouterr()
    assert main([*argv, str(tmp_path / "d.jsonl"), str(anon)]) == 1
    assert "layout 'anon17' cannot be mapped" in capsys.readouterr().err
    assert main([*argv, str(tmp_path / "d.jsonl"), str(anon), "--input-layout", "coco17"]) == 0
    assert capsys.readouterr().out.startswith(f"{anon}: coco17 keypoints, 10 frames;")
    check_records(read_jsonl(tmp_path / "d.jsonl"), 10, joints=17)


def test_recognize_shipped_example_clip(checkpoint: Path, tmp_path: Path, capsys) -> None:
    """A real Penn Action clip shipped with the package."""
    from skelgraph.data import example_clips, example_datasets

    if "penn_action" not in example_datasets():
        pytest.skip("no shipped Penn Action example clips")
    clip = example_clips("penn_action")[0]
    frames = SkeletonClip.load(clip).num_frames
    jsonl = tmp_path / "out.jsonl"
    argv = ["recognize", str(clip), "--checkpoint", str(checkpoint), "--quiet"]
    assert main([*argv, "--jsonl", str(jsonl), "--every", "1000"]) == 0
    check_records(read_jsonl(jsonl), frames)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1].startswith("final: ")


def test_recognize_with_the_default_pretrained_model(capsys) -> None:
    """The main job on a fresh install: the shipped model on a shipped clip, no arguments."""
    from skelgraph.data import example_clips

    clip = next(p for p in example_clips("penn_action") if p.stem == "tennis_serve")
    assert main(["recognize", str(clip), "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "model ensemble (penn13, 15 classes) from penn-action" in out[0]
    assert out[-1].startswith("final: tennis_serve (")


def test_recognize_errors(checkpoint: Path, tmp_path: Path, capsys) -> None:
    def error(*args: str) -> str:
        assert main(["recognize", *args, "--checkpoint", str(checkpoint), "--quiet"]) == 1
        return capsys.readouterr().err

    clip = write_clip(tmp_path / "clip.npz", frames=10)
    err = error(str(tmp_path / "missing.npz"))
    assert "missing.npz: no such file (expected a video file, a webcam index" in err
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    assert "garbage.npz: expected an .npz archive of a skeleton clip" in error(str(garbage))
    # 3D keypoints for a 2D model
    ntu = tmp_path / "ntu.npz"
    kp = np.random.default_rng(0).uniform(0, 1, (5, 25, 4)).astype(np.float32)
    save_npz(SkeletonClip(kp, "ntu25"), ntu)
    assert "ntu.npz: keypoints: expected 3 channels (coordinates + confidence)" in error(str(ntu))
    # a layout whose joints the model's layout cannot be mapped from
    robot = Layout.from_names(
        "robot",
        ("base", "arm", "tool"),
        (("arm", "base"), ("tool", "arm")),
        ["base"],
        (["arm"], ["base"]),
    )
    save_npz(SkeletonClip(kp[:, :3, :3], robot), tmp_path / "robot.npz")
    err = error(str(tmp_path / "robot.npz"))
    assert "robot.npz: layout 'robot' cannot be mapped to the model's layout 'penn13'" in err
    assert "13 of its 13 joints have no source (head, left_shoulder" in err
    err = error(str(clip), "--input-layout", "coco17")
    assert "clip.npz: --input-layout 'coco17' expects 17 joints, the clip has 13" in err
    err = error(str(clip), "--input-layout", "nolayout")
    assert "nolayout" in err and "penn13" in err  # the known names are listed
    no_fps = write_clip(tmp_path / "nofps.npz", frames=5, fps=None)
    assert "nofps.npz: cannot resample to 10.0 fps: the clip has no fps" in error(
        str(no_fps), "--fps", "10"
    )
    assert "--every: expected an integer >= 1, got 0" in error(str(clip), "--every", "0")
    err = error(str(clip), "--out", str(tmp_path / "nowhere" / "o.mp4"))
    assert f"folder {tmp_path / 'nowhere'} does not exist" in err
    assert main(["recognize", str(clip), "--checkpoint", str(tmp_path / "none.pt")]) == 1
    assert "none.pt" in capsys.readouterr().err
    # videos
    assert "movie.mp4: no such file (expected a video file" in error(str(tmp_path / "movie.mp4"))
    pytest.importorskip("cv2")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(os.urandom(512))
    assert "broken.mp4: OpenCV cannot open it as a video" in error(str(broken))
    err = error(str(broken), "--input-layout", "penn13")
    assert "the pose model gives coco17 keypoints for videos, got 'penn13'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["clip.npz", "garbage.npz", "ntu.npz", "robot.npz", "nofps.npz", "broken.mp4"]
    )


def test_recognize_interrupted_finishes_outputs(checkpoint: Path, tmp_path: Path) -> None:
    """Ctrl-C stops after the current frame; the JSON lines and the video hold the same
    frames, and nothing temporary is left."""
    pytest.importorskip("cv2")
    clip = write_clip(tmp_path / "long.npz", frames=3000)
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "skelgraph", "recognize", str(clip), "--checkpoint",
         str(checkpoint), "--jsonl", str(jsonl), "--out", str(video), "--every", "1", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.split()[:1] == ["5"]:  # the row of frame 5
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    stopped = int(err.split("stopped after ")[1].split()[0])
    assert 6 <= stopped < 3000
    check_records(read_jsonl(jsonl), stopped)
    assert video_frames(video)[0] == stopped
    assert out.splitlines()[-1].startswith("final: ") and f"at frame {stopped - 1} " in out
    assert not temp_files(tmp_path)


# ------------------------------------------------------------------------------------------------
# videos


def test_json_record_is_strict_json() -> None:
    from skelgraph.online import Prediction

    forecast = np.zeros((2, 3, 2), np.float32)
    forecast[1, 2, 0] = np.nan
    prediction = Prediction(4, np.array([0.3, 0.7], np.float32), "b", 0.7, forecast, ["a", "b"])
    record = json_record(prediction, 20.0)
    assert json.loads(json.dumps(record, allow_nan=False)) == {
        "frame": 4,
        "label": "b",
        "score": pytest.approx(0.7),
        "probabilities": pytest.approx([0.3, 0.7]),
        "forecast": [[[0, 0], [0, 0], [0, 0]], [[0, 0], [0, 0], [None, 0]]],
        "time": 0.2,
    }
    assert json_record(replace(prediction, forecast=None), None)["time"] is None


def test_recognize_video_without_ultralytics(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    pytest.importorskip("cv2")
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # importing it fails
    video = write_test_video(tmp_path / "video.mp4", num=3, size=32)
    assert main(["recognize", str(video), "--checkpoint", str(checkpoint), "--quiet"]) == 1
    assert 'needs the ultralytics package: pip install "skelgraph[pose]"' in capsys.readouterr().err


@pytest.fixture(scope="module")
def yolo_env(tmp_path_factory: pytest.TempPathFactory):
    """ultralytics offline with its settings in a temporary folder; skips without it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics")))
        mp.setenv("YOLO_OFFLINE", "1")
        pytest.importorskip("cv2")
        pytest.importorskip("ultralytics")
        yield


def test_recognize_video(yolo_env, checkpoint: Path, tmp_path: Path, capsys) -> None:
    """A video through the (untrained) YOLO pose model: coco17 keypoints mapped to penn13."""
    video = write_test_video(tmp_path / "video.mp4", num=10, size=96, fps=25.0)
    jsonl, overlay = tmp_path / "out.jsonl", tmp_path / "overlay.mp4"
    argv = ["recognize", str(video), "--checkpoint", str(checkpoint), "--quiet"]
    pose = ["--pose-model", "yolo11n-pose.yaml", "--device", "cpu", "--imgsz", "64"]
    assert main([*argv, *pose, "--jsonl", str(jsonl), "--out", str(overlay), "--every", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{video}: coco17 keypoints, 10 frames at 25 fps")
    assert [line.split()[0] for line in out[2:-1]] == ["0", "5"]
    check_records(read_jsonl(jsonl), 10, joints=17)
    assert video_frames(overlay) == (10, (96, 96))
    # resampled to 10 fps: frames 0, 3, 5, 8 of the video
    assert main([*argv, *pose, "--jsonl", str(jsonl), "--out", str(overlay), "--fps", "10"]) == 0
    assert len(read_jsonl(jsonl)) == 4 and video_frames(overlay)[0] == 4
    assert "10 fps" in capsys.readouterr().out
    assert not temp_files(tmp_path)
    assert main([*argv, "--pose-model", str(tmp_path / "missing.pt")]) == 1
    assert f"--pose-model {tmp_path / 'missing.pt'}: " in capsys.readouterr().err
