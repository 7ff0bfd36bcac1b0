"""Throughput of the pseudo-heatmap volumes of PoseC3D (:class:`skelgraph.heatmaps.PoseHeatmaps`).

Workload: clips of 48 frames of a ``penn13`` person (13 joints, 14 bones; one fixed random pose,
joints spread about ±40 pixels, moving across the image with small random offsets per frame, every
joint visible: the cost does not depend on the pose), drawn whole (``frames=48`` of 48, evaluation
mode: no random crop) at the ``posec3d_lite`` resolution (48 × 48, σ = 0.6):
keypoint volumes (13 channels), limb volumes (14) and both (27), one clip per call and a batch of
``--batch`` clips per call (default 32). The drawing is all of the work: the person box, the frame
indices, the Gaussians and, for limbs, the distance of every pixel to every bone.

Times are medians of repeated calls measured round-robin over all cases (so load from other
processes spreads evenly), under :func:`torch.inference_mode`, with 2 intra-op threads
(``--threads``); ``clips/s`` is the batch size over the median time. Peak memory is measured
separately as described by :data:`_common.MEMORY_METHOD` (CPU only). ``--device cuda`` times the
drawing on a GPU (synchronised after every call). The glibc malloc variables are recorded, not
set: large temporaries are faulted in again after every free unless e.g.
``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296
MALLOC_TOP_PAD_=1073741824`` are set, which costs the limb volumes most.

Usage: ``python benchmarks/heatmaps.py [--threads 2] [--batch 32] [--repeat 15]``; prints a
table and writes ``benchmarks/results/heatmaps.json`` (about a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import (
    MEMORY_METHOD,
    format_table,
    interleaved_times,
    machine,
    malloc_settings,
    peak_memory,
    pin_threads,
    write_json,
)

from skelgraph.heatmaps import HEATMAP_INPUTS, PoseHeatmaps
from skelgraph.layouts import get_layout
from skelgraph.train.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "heatmaps.json"
LAYOUT, FRAMES = "penn13", 48
#: the drawing settings of the benchmark: those of ``posec3d_lite``
LITE = load_config("posec3d_lite").model.args


def clips(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    """``batch`` clips :math:`(B, 1, T, 13, 3)` of one person moving across the image."""
    layout = get_layout(LAYOUT)
    generator = torch.Generator().manual_seed(seed)
    pose = torch.randn(layout.num_joints, 2, generator=generator) * 40
    walk = torch.linspace(0, 200, frames)[:, None, None] * torch.tensor([1.0, 0.1])
    noise = torch.randn(batch, frames, layout.num_joints, 2, generator=generator) * 3
    xy = 300 + pose + walk + noise
    confidence = torch.ones(batch, frames, layout.num_joints, 1)
    return torch.cat([xy, confidence], dim=-1).unsqueeze(1)


def cases(
    batch: int, frames: int, device: torch.device
) -> dict[tuple[str, int], Callable[[], Any]]:
    """One drawing call per (input, batch size), on fixed clips on ``device``."""
    synchronise = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    calls: dict[tuple[str, int], Callable[[], Any]] = {}
    for input in HEATMAP_INPUTS:
        transform = PoseHeatmaps(
            LAYOUT,
            input,
            sigma=LITE["sigma"],
            resolution=LITE["resolution"],
            frames=frames,
            padding=LITE["padding"],
        ).to(device)
        for size in sorted({1, batch}):
            x = clips(size, frames).to(device)

            def call(transform: PoseHeatmaps = transform, x: torch.Tensor = x) -> None:
                with torch.inference_mode():
                    transform(x)
                synchronise()

            calls[input, size] = call
    return calls


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="clips per batched call")
    parser.add_argument("--frames", type=int, default=FRAMES, help="frames per clip")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeat", type=int, default=15, help="timed rounds per case")
    parser.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="timed seconds after which a slow case is not run again (it keeps 3 runs)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.batch < 1 or args.frames < 1 or args.repeat < 1:
        parser.error("--batch, --frames and --repeat: expected positive integers")

    started = time.perf_counter()
    threads = pin_threads(args.threads)
    device = torch.device(args.device)
    calls = cases(args.batch, args.frames, device)
    samples = interleaved_times(calls, repeat=args.repeat, budget_s=args.budget)
    rows = []
    for (input, size), taken in samples.items():
        median = sorted(taken)[len(taken) // 2]
        transform = PoseHeatmaps(LAYOUT, input)
        row = {
            "input": input,
            "channels": transform.out_channels,
            "batch": size,
            "ms per call": 1e3 * median,
            "ms per clip": 1e3 * median / size,
            "clips/s": size / median,
        }
        if device.type == "cpu":
            row["peak MiB"] = peak_memory(calls[input, size]) / 2**20
        rows.append(row)

    H = W = LITE["resolution"]
    print(
        f"{LAYOUT} clips of {args.frames} frames drawn at {H} × {W} (σ = {LITE['sigma']}) on "
        f"{device}, {threads} threads; malloc: {malloc_settings()}"
    )
    print(format_table(rows, list(rows[0])))
    result = {
        "config": {
            "layout": LAYOUT,
            "frames": args.frames,
            "resolution": [H, W],
            "sigma": LITE["sigma"],
            "padding": LITE["padding"],
            "batch": args.batch,
            "threads": threads,
            "repeat": args.repeat,
            "budget_s": args.budget,
            "device": str(device),
        },
        "machine": machine(),
        "malloc": malloc_settings(),
        "memory_method": MEMORY_METHOD,
        "rows": rows,
        "samples_ms": {
            f"{input} b{size}": [round(1e3 * t, 3) for t in taken]
            for (input, size), taken in samples.items()
        },
        "seconds": time.perf_counter() - started,
    }
    print(f"wrote {write_json(args.out, result)} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
