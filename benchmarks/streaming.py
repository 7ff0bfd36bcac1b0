"""Per-frame latency of online recognition and of the whole video pipeline on the CPU.

Workload: the default InfoGCN++ (COCO-17, 14 classes) with ``attention_window=64``, untrained
(speed does not depend on the weights), behind :class:`skelgraph.online.OnlineRecognizer`, fed a
synthetic stream of COCO-17 keypoints in pixels (a walking figure with jitter and dropped
joints). Measured per frame:

* ``online``: :meth:`OnlineRecognizer.update` with the model's caches (one new frame through the
  model's frame plan, :func:`skelgraph.streaming.build_plan`: the temporal key/value caches and
  the per-step head, plus causal preprocessing and the forecast mapped back to pixels);
* ``recompute``: the same update recomputing the whole window of 64 frames every frame
  (``streaming=False``), what an online recogniser without caches does;
* ``onnxruntime``: the same online recogniser with ``backend="onnxruntime"``: the frame plan's
  step exported to ONNX (once, cached) and run by onnxruntime with one intra-op thread
  (:class:`skelgraph.export.OnnxRuntimePlan`); skipped, and said so, without
  ``skelgraph[onnx]``;
* ``packaged``: the online recogniser of the packaged ``penn-action-fast`` (the default model of
  ``skelgraph serve``: 32 channels, 2 blocks, attention window 64, penn13 joints, joint and
  velocity features) on the same COCO-17 stream, mapped to its joints, in a pass of its own;
* ``pose``: the pose stage, :class:`skelgraph.pose.UltralyticsPoseEstimator` with an untrained
  ``yolo11n-pose`` (built from ``yolo11n-pose.yaml``; nothing is downloaded) tracking people in
  640×480 frames; skipped, and said so, when ultralytics is not installed;
* ``end-to-end``: pose stage then online recogniser, frame by frame.

The ``fps`` column is 1000 / mean ms, the throughput of that stage alone.

``online``, ``recompute`` and ``onnxruntime`` run interleaved frame by frame on the same stream
(so load from other processes spreads evenly over them); their statistics cover the frames after
the first window, when the caches are full. Percentiles are of single-frame wall-clock times, with 1
intra-op thread by default (``--threads``): a frame is a few hundred operations on tensors of a
few thousand elements, which gain nothing from a second thread, and on cores shared with other
processes every parallel region may wait a whole scheduler slice for its second thread. The
targets: ``online`` p50 ≤ 3 ms, p99 ≤ 6 ms, and at least
5× faster than ``recompute`` (the reference implementations recompute a 64-frame window in about
30 ms). The speed of a virtual machine drifts from run to run (here the same recompute took 30 to
55 ms), while the online/recompute ratio stays: ``online ms at the reference speed`` is 30 ms
over that ratio, the online time per frame on a machine recomputing in the reference time.

Usage: ``python benchmarks/streaming.py [--threads 1] [--frames 400] [--pose-frames 100]
[--note TEXT]``; prints a table and writes ``benchmarks/results/streaming.json`` (about a minute
on 2 quiet cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import format_table, machine, malloc_settings, paired_ratio, pin_threads, write_json

from skelgraph.layouts import get_layout
from skelgraph.models import create
from skelgraph.models.checkpoint import make_meta
from skelgraph.online import OnlineRecognizer
from skelgraph.preprocess import PreprocessConfig
from skelgraph.streaming import build_plan

RESULTS = Path(__file__).resolve().parent / "results" / "streaming.json"
LAYOUT, CLASSES, WINDOW = "coco17", 14, 64
POSE_MODEL, FRAME_SIZE = "yolo11n-pose.yaml", (480, 640)  # (height, width)
PACKAGED = "penn-action-fast"
#: Reference implementations recomputing a 64-frame window, in milliseconds (2-core machine).
REFERENCE_RECOMPUTE_MS = 30.0
TARGETS = {"online p50 ms": 3.0, "online p99 ms": 6.0, "speed-up": 5.0}


def recognizers(seed: int = 0) -> dict[str, OnlineRecognizer]:
    """The cached recogniser (with the model's frame plan), the recomputing one and, with
    onnxruntime installed, the cached one on onnxruntime, sharing one untrained default
    model."""
    torch.manual_seed(seed)
    model = create("infogcn2", num_classes=CLASSES, layout=LAYOUT, attention_window=WINDOW)
    meta = make_meta(
        model="infogcn2",
        model_args=model.config,
        classes=[f"class {k}" for k in range(CLASSES)],
        layout=LAYOUT,
        in_channels=3,
        window=WINDOW,
        preprocess=PreprocessConfig().to_dict(),
    )
    runs = {
        "online": OnlineRecognizer(model, meta, plan=build_plan(model)),
        "recompute": OnlineRecognizer(model, meta, streaming=False),
    }
    try:
        runs["onnxruntime"] = OnlineRecognizer(model, meta, backend="onnxruntime")
    except ImportError as e:
        print(f"onnxruntime skipped: {e}")
    return runs


def keypoint_stream(num_frames: int, seed: int = 0) -> np.ndarray:
    """``(T, 17, 3)`` COCO-17 keypoints in pixels: a figure walking across a 640×480 frame,
    with jitter, low confidences and a few dropped joints (NaN, confidence 0)."""
    rng = np.random.default_rng(seed)
    layout = get_layout(LAYOUT)
    # a standing figure, 200 px tall, feet at y = 400
    pose = {
        "nose": (0, 220), "left_eye": (-6, 226), "right_eye": (6, 226), "left_ear": (-12, 222),
        "right_ear": (12, 222), "left_shoulder": (-30, 180), "right_shoulder": (30, 180),
        "left_elbow": (-40, 130), "right_elbow": (40, 130), "left_wrist": (-42, 85),
        "right_wrist": (42, 85), "left_hip": (-20, 100), "right_hip": (20, 100),
        "left_knee": (-22, 50), "right_knee": (22, 50), "left_ankle": (-24, 0),
        "right_ankle": (24, 0),
    }  # fmt: skip
    base = np.array([pose[j] for j in layout.joints], np.float32) * [1, -1] + [0, 400]
    t = np.arange(num_frames)[:, None]
    kp = np.empty((num_frames, layout.num_joints, 3), np.float32)
    kp[..., 0] = base[:, 0] + 120 + (t * 1.5) % 400 + 8 * np.sin(t / 5.0)
    kp[..., 1] = base[:, 1] + 4 * np.sin(t / 3.0)
    kp[..., :2] += rng.normal(0.0, 2.0, kp[..., :2].shape)
    kp[..., 2] = rng.uniform(0.3, 1.0, kp.shape[:2])
    dropped = rng.random(kp.shape[:2]) < 0.05
    kp[dropped] = [np.nan, np.nan, 0.0]
    return kp


def percentiles(times_s: list[float]) -> dict[str, float]:
    """p50, p99 and mean of single-call times, in milliseconds."""
    ms = 1e3 * np.asarray(times_s)
    return {
        "p50 ms": float(np.percentile(ms, 50)),
        "p99 ms": float(np.percentile(ms, 99)),
        "mean ms": float(ms.mean()),
        "frames": int(ms.size),
    }


def measure_recognition(num_frames: int) -> tuple[dict[str, list[float]], OnlineRecognizer]:
    """Per-frame times of both recognisers, interleaved (the order alternates every frame),
    for the frames after the first window; and the cached recogniser."""
    runs = recognizers()
    stream = keypoint_stream(num_frames)
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for t, frame in enumerate(stream):
        for name in names if t % 2 else names[::-1]:
            start = time.perf_counter()
            runs[name].update(frame)
            elapsed = time.perf_counter() - start
            if t >= WINDOW:
                times[name].append(elapsed)
    return times, runs["online"]


def measure_packaged(num_frames: int) -> list[float]:
    """Per-frame times of the packaged default model's recogniser on the COCO-17 stream, for
    the frames after the first window."""
    recognizer = OnlineRecognizer.from_checkpoint(PACKAGED, input_layout=LAYOUT)
    times = []
    for t, frame in enumerate(keypoint_stream(num_frames)):
        start = time.perf_counter()
        recognizer.update(frame)
        if t >= WINDOW:
            times.append(time.perf_counter() - start)
    return times


def video_frames(num_frames: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Synthetic BGR frames ``(480, 640, 3)`` uint8: a smooth background and moving blobs."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_SIZE
    y, x = np.mgrid[0:height, 0:width]
    background = (np.stack([x % 256, y % 256, (x + y) % 256], axis=-1) // 2).astype(np.uint8)
    for t in range(num_frames):
        frame = background.copy()
        cx = 120 + (t * 5) % 400
        frame[200:420, cx : cx + 60] = rng.integers(0, 255, 3, dtype=np.uint8)
        yield frame


def measure_pose(num_frames: int, recognizer: OnlineRecognizer) -> dict[str, Any] | None:
    """Pose-stage and end-to-end per-frame times, or :obj:`None` without ultralytics."""
    try:
        from ultralytics import YOLO
    except ImportError:
        return None
    from skelgraph.pose import UltralyticsPoseEstimator

    estimator = UltralyticsPoseEstimator(YOLO(POSE_MODEL), device="cpu", imgsz=FRAME_SIZE[1])
    warmup = min(5, num_frames - 1)

    def timed(with_recognizer: bool) -> list[float]:
        recognizer.reset()
        times = []
        poses = estimator.stream(video_frames(num_frames))
        for t in range(num_frames):
            start = time.perf_counter()
            keypoints = next(poses)
            if with_recognizer:
                recognizer.update(keypoints)
            if t >= warmup:
                times.append(time.perf_counter() - start)
        return times

    pose = timed(False)
    end_to_end = timed(True)
    return {"pose": pose, "end-to-end": end_to_end}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--frames", type=int, default=400, help="keypoint frames to stream")
    parser.add_argument("--pose-frames", type=int, default=100, help="video frames to stream")
    parser.add_argument("--note", default="", help="stored with the results (e.g. the load)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    if args.frames <= WINDOW + 1 or args.pose_frames < 2:
        parser.error(f"--frames must exceed {WINDOW + 1} and --pose-frames must be at least 2")

    threads = pin_threads(args.threads)
    times, recognizer = measure_recognition(args.frames)
    times["packaged"] = measure_packaged(args.frames)
    stages = measure_pose(args.pose_frames, recognizer)

    rows: list[dict[str, Any]] = []
    descriptions = {
        "online": "online recogniser (caches)",
        "recompute": f"recompute the {WINDOW}-frame window",
        "onnxruntime": "online, frame step on onnxruntime",
        "packaged": f"online, packaged {PACKAGED}",
        "pose": "pose stage (yolo11n-pose, CPU)",
        "end-to-end": "pose + online recogniser",
    }
    results: dict[str, Any] = {}
    for name, samples in {**times, **(stages or {})}.items():
        stats = percentiles(samples)
        results[name] = stats
        rows.append({"stage": descriptions[name], **stats, "fps": 1e3 / stats["mean ms"]})
    speedup = paired_ratio(times["recompute"], times["online"])
    results["speed-up (paired median)"] = speedup
    if "onnxruntime" in times:  # > 1: onnxruntime faster than the torch frame plan
        results["onnxruntime speed-up over online (paired median)"] = paired_ratio(
            times["online"], times["onnxruntime"]
        )
    # a virtual machine's speed drifts from run to run while this ratio stays: the per-frame
    # time on a machine that recomputes the window in the reference time
    results["online ms at the reference speed"] = REFERENCE_RECOMPUTE_MS / speedup
    checks = {
        "online p50 ms": results["online"]["p50 ms"] <= TARGETS["online p50 ms"],
        "online p99 ms": results["online"]["p99 ms"] <= TARGETS["online p99 ms"],
        "speed-up": speedup >= TARGETS["speed-up"],
    }

    print(f"threads: {threads}, malloc: {malloc_settings()}, note: {args.note or '-'}")
    print(format_table(rows, ["stage", "p50 ms", "p99 ms", "mean ms", "fps", "frames"]))
    print(f"online vs recompute: {speedup:.1f}x faster (median of per-frame ratios)")
    if "onnxruntime" in times:
        ratio = results["onnxruntime speed-up over online (paired median)"]
        print(f"onnxruntime vs online (torch frame plan): {ratio:.2f}x as fast")
    print(
        f"online at the reference speed (recompute in {REFERENCE_RECOMPUTE_MS:.0f} ms, here "
        f"{results['recompute']['p50 ms']:.1f}): "
        f"{results['online ms at the reference speed']:.1f} ms per frame"
    )
    if stages is None:
        print("pose stage skipped: ultralytics is not installed (pip install 'skelgraph[pose]')")
    for target, met in checks.items():
        print(f"target {target} {TARGETS[target]}: {'met' if met else 'missed'}")
    path = write_json(
        args.output,
        {
            "config": {
                "model": "infogcn2",
                "model_config": recognizer.model.config,
                "layout": LAYOUT,
                "classes": CLASSES,
                "window": WINDOW,
                "frames": args.frames,
                "pose_frames": args.pose_frames,
                "pose_model": POSE_MODEL if stages is not None else None,
                "frame_size": list(FRAME_SIZE),
                "threads": threads,
                "onnxruntime": "measured" if "onnxruntime" in times else "skipped: not installed",
            },
            "note": args.note,
            "machine": machine(),
            "malloc": malloc_settings(),
            "pose_stage": "measured" if stages is not None else "skipped: ultralytics missing",
            "reference_recompute_ms": REFERENCE_RECOMPUTE_MS,
            "targets": TARGETS,
            "targets_met": checks,
            "results": results,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
