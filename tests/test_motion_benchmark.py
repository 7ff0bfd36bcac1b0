"""benchmarks/motion_prediction.py: the observed prefix, the targets' coordinates, and a whole
run with an untrained InfoGCN++."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    CLASSES,
    PENN13_POSE,
    TINY_INFOGCN2,
    synthetic_folder,
    write_infogcn2_checkpoint,
    write_model_checkpoint,
)

from skelgraph.clip import SkeletonClip
from skelgraph.data import write_skeleton_folder
from skelgraph.layouts import get_layout
from skelgraph.preprocess import PreprocessConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def motion(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import motion_prediction

    return motion_prediction


def test_the_observed_prefix(motion):
    args = motion.parse_args(["--data", "x", "--horizon", "10"])
    assert args.observed_fraction == 0.5 and args.observed is None
    assert motion.observed_frames(60, args) == 30  # the first half
    assert motion.observed_frames(21, args) == 10  # at least --min-observed
    assert motion.observed_frames(19, args) is None  # 10 + 10 frames do not fit
    fixed = motion.parse_args(["--data", "x", "--observed", "32"])
    assert motion.observed_frames(42, fixed) == 32 and motion.observed_frames(41, fixed) is None
    with pytest.raises(SystemExit):
        motion.parse_args(["--data", "x", "--observed", "32", "--observed-fraction", "0.3"])


def linear_folder(root: Path) -> Path:
    """Test clips of a person walking at a constant velocity (pixels per frame), the head never
    annotated and the shoulders dropping from frame 25 on (after every observed prefix)."""
    items = []
    for i in range(4):
        frames = 30 + 5 * i
        t = np.arange(frames, dtype=np.float32)[:, None, None]
        xy = PENN13_POSE[None] * 2.0 + np.array([300.0, 200.0]) + t * np.array([3.0 + i, -1.0])
        xy = xy.astype(np.float32)
        xy[25:, 1:3, 1] += 10.0  # the shoulders drop: a later torso is shorter
        kp = np.concatenate([xy, np.ones((frames, 13, 1), np.float32)], axis=-1)
        kp[:, 0, -1] = 0.0  # the head is never annotated
        items.append((SkeletonClip(kp, "penn13", source=f"walk_{i}"), CLASSES[i % 3], "test"))
    write_skeleton_folder(root, items, progress=False)
    return root


def test_targets_are_the_next_frames_in_the_prefixs_coordinates(motion, tmp_path):
    data = linear_folder(tmp_path / "walk")
    args = motion.parse_args(["--data", str(data), "--horizon", "5", "--quiet"])
    samples, layout, counts = motion.load_samples(args)
    assert counts == {"clips": 4, "too_short": 0} and len(samples) == 4
    methods = motion.load_methods(args, layout, 3, "cpu")
    records = {m.name: motion.evaluate(m, samples, layout, args, "cpu") for m in methods}
    velocity, zero = records["constant-velocity"], records["zero-velocity"]
    assert velocity["joints"] == [48.0] * 5  # 4 clips x 12 annotated joints, every step
    # constant velocity is exact until the shoulders drop (frames 25, 26 of the last clip,
    # observed up to frame 21: steps 4 and 5); zero velocity never is
    np.testing.assert_allclose(velocity["mpjpe"][:3], 0.0, atol=1e-5)
    assert velocity["pck"][:3] == [1.0] * 3
    # two shoulders 10 px off over a 100 px torso, among 48 joints
    assert velocity["mpjpe"][3] == pytest.approx(2 * 0.1 / 48, rel=1e-4)
    assert all(z > v for z, v in zip(zero["mpjpe"], velocity["mpjpe"], strict=True))
    # the first target is one step of the velocity on from the last observed frame, in torso
    # lengths of the prefix
    first = samples[0]
    step = np.array([3.0, -1.0]) / first.divisor
    truth = first.target[0, 1:, :2]  # every annotated joint at t_obs
    last = (first.observed[-1, 1:, :2] - first.origin) / first.divisor
    np.testing.assert_allclose(truth - last, np.broadcast_to(step, truth.shape), atol=1e-5)
    # the same baseline run under another preprocessing is mapped back to the same errors
    other = motion.Method(
        "zero (offline)", motion.BASELINES["zero-velocity"](), PreprocessConfig(), {}, {}
    )
    again = motion.evaluate(other, samples, layout, args, "cpu")
    np.testing.assert_allclose(again["mpjpe"], zero["mpjpe"], rtol=1e-6)


def test_run_writes_the_table_the_results_and_the_plot(tmp_path):
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    checkpoint = write_infogcn2_checkpoint(tmp_path / "tiny.pt", CLASSES, **TINY_INFOGCN2)
    out = tmp_path / "results"
    command = [
        sys.executable,
        str(BENCHMARKS / "motion_prediction.py"),
        "--data",
        str(data),
        "--checkpoints",
        f"tiny={checkpoint}",
        "--rollouts",
        "ode",
        "autoregressive",
        "--horizon",
        "4",
        "--threads",
        "1",
        "--quiet",
        "--output-dir",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| tiny (autoregressive) |" in done.stdout and "MPJPE@4" in done.stdout
    record = json.loads((out / "motion_prediction.json").read_text())
    names = [m["name"] for m in record["methods"]]
    assert names == ["zero-velocity", "constant-velocity", "tiny (ode)", "tiny (autoregressive)"]
    assert record["samples"] == 6 and record["horizon"] == 4  # the folder's test clips
    for method in record["methods"]:
        assert len(method["mpjpe"]) == len(method["pck"]) == 4
        assert all(np.isfinite(method["mpjpe"])) and all(0 <= p <= 1 for p in method["pck"])
    assert record["methods"][2]["preprocess"]["causal"] is False  # its own preprocessing
    assert (out / "motion_prediction.png").stat().st_size > 10_000


def test_a_model_without_a_forecast_is_refused(motion, tmp_path):
    stgcn = write_model_checkpoint(
        tmp_path / "stgcn.pt", "stgcn", CLASSES, channels=[8], strides=[1]
    )
    args = motion.parse_args(["--data", "x", "--checkpoints", f"ST-GCN={stgcn}"])
    with pytest.raises(ValueError, match=r"ST-GCN .* model 'stgcn' has no forecast_future"):
        motion.load_methods(args, get_layout("penn13"), 3, "cpu")
    with pytest.raises(ValueError, match=r"checkpoint expects layout 'penn13' \(13 joints, 3"):
        motion.load_methods(args, get_layout("coco17"), 3, "cpu")
