"""Training and inference steps with glibc's default allocator settings and with
:func:`skelgraph.allocator.keep_freed_memory` (what every ``skelgraph`` command applies).

Cases (median of ``--calls`` calls after one warm-up call, per round):

* ``default b32``: the default InfoGCN++ (COCO-17, T = 64, 14 classes, 64 channels, depth 4) as
  in ``model_speed.py``: a training step on a batch of 32 (forward, loss, backward, SGD step) and
  the clip-level prediction of 32 windows;
* ``penn b16``: the shipped Penn Action configuration (``penn_action_infogcn2``: 13 joints,
  joint + velocity, 32 channels, depth 2, windows of 32 frames) at its training batch of 16,
  training step and prediction.

The allocator's settings hold for a whole process, so each round runs both settings in a fresh
subprocess each, in alternating order; the ratio of a case is the median over rounds of
kept / default (< 1: faster with the settings). Usage:
``python benchmarks/allocator.py [--rounds 5] [--calls 5] [--threads 2]``; prints a table and
writes ``benchmarks/results/allocator.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import (
    format_table,
    interleaved_times,
    machine,
    median_ms,
    paired_ratio,
    pin_threads,
    write_json,
)

from skelgraph.allocator import SETTINGS, keep_freed_memory
from skelgraph.models import create
from skelgraph.train.config import load_config

RESULTS = Path(__file__).resolve().parent / "results" / "allocator.json"
MODES = ("default", "kept")


def cases() -> dict[str, Callable[[], Any]]:
    """The timed calls: a training step and a prediction of each workload."""
    default = create("infogcn2", num_classes=14, layout="coco17", in_channels=3)
    penn_args = dict(load_config("penn_action_infogcn2").model.args)
    penn = create("infogcn2", num_classes=15, layout="penn13", in_channels=3, **penn_args)
    workloads = {"default b32": (default, 17, 64, 14, 32), "penn b16": (penn, 13, 32, 15, 16)}
    fns: dict[str, Callable[[], Any]] = {}
    for name, (model, joints, frames, classes, batch) in workloads.items():
        torch.manual_seed(0)
        x = torch.randn(batch, joints, frames, 3)
        x[..., -1] = torch.rand(batch, joints, frames)
        y = torch.randint(0, classes, (batch,))
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def train(model=model, x=x, y=y, optimizer=optimizer) -> None:
            model.train()
            loss = model.loss(model(x), x, y)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def infer(model=model, x=x) -> Any:
            model.eval()
            with torch.inference_mode():
                return model.clip_logits(x)

        fns[f"{name} train"] = train
        fns[f"{name} infer"] = infer
    return fns


def worker(mode: str, calls: int, threads: int) -> None:
    """One process's medians in ms, as one JSON line on stdout."""
    applied = keep_freed_memory() if mode == "kept" else {}
    if mode == "kept" and not applied:
        raise SystemExit("allocator: keep_freed_memory() applied nothing (not glibc?)")
    pin_threads(threads)
    samples = interleaved_times(cases(), repeat=calls, warmup=1, min_repeat=calls)
    print(json.dumps({name: median_ms(times) for name, times in samples.items()}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="subprocess pairs")
    parser.add_argument("--calls", type=int, default=5, help="timed calls per case and process")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.calls, args.threads)
        return 0

    # both settings start from glibc's defaults: no variable of the user's may set either
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env["SKELGRAPH_MALLOC"] = ""
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    for round_ in range(args.rounds):
        order = MODES if round_ % 2 == 0 else MODES[::-1]
        for mode in order:
            command = [sys.executable, __file__, "--worker", mode]
            command += ["--calls", str(args.calls), "--threads", str(args.threads)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
            runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(
            f"round {round_ + 1}/{args.rounds}: "
            + ", ".join(f"{mode} {runs[mode][-1]['default b32 train']:.0f} ms" for mode in MODES)
            + " (default b32 train)",
            flush=True,
        )

    rows = []
    for case in runs["default"][0]:
        before = [run[case] for run in runs["default"]]
        after = [run[case] for run in runs["kept"]]
        rows.append(
            {
                "case": case,
                "default ms": statistics.median(before),
                "kept ms": statistics.median(after),
                "kept / default": f"{paired_ratio(after, before):.2f}",
            }
        )
    print(format_table(rows, ["case", "default ms", "kept ms", "kept / default"]))
    write_json(
        args.output,
        {
            "config": vars(args) | {"output": str(args.output)},
            "machine": machine() | {"torch_threads": args.threads},
            "settings": {name: value for name, (_, value) in SETTINGS.items()},
            "runs": runs,
            "results": rows,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
