"""Speed of the InfoGCN++ and ST-GCN models against the reference implementations.

Workload (the reference configuration): COCO-17 skeletons (V = 17, C = 3), windows of T = 64
frames, 14 classes, each model at its default configuration. For every model and precision
(float32, and bfloat16 autocast on the CPU) three measurements:

* ``train b32``: one training step on a batch of 32: forward, the model's loss, backward and an
  SGD step (training mode);
* ``infer b32``: the clip-level prediction (class scores at the model's default reduction,
  :meth:`~skelgraph.models.base.SkeletonModel.clip_logits`) of a batch of 32 under
  :func:`torch.inference_mode` (eval mode);
* ``infer b1``: the same for one window.

bfloat16 autocast is only faster where the CPU multiplies bfloat16 natively (AVX-512 BF16 or AMX);
the flags found are printed and stored with the results.

To tell how far a time is from what the machine can do, every case's floating-point operations are
counted once (:class:`torch.utils.flop_counter.FlopCounterMode`: matrix products, convolutions and
attention) and divided by its median time, and the machine's matrix-product throughput is measured
on a large square product (``4096 × 4096``, float32 and bfloat16) with the same threads: a case
cannot run faster than its operations at that rate. ``% of peak`` is a case's GFLOP/s as a share of
that rate in its precision.

Times are medians of repeated calls measured round-robin over all cases (so load from other
processes spreads evenly over them), with 2 intra-op threads (``--threads``). The reference
implementations of InfoGCN++ take about 2.6 s, 0.93 s and 30 ms for these on a 2-core machine of
this kind; the table gives the speed-up over them and whether it reaches 3×.

glibc's allocator returns large blocks to the system after every free and faults them in again
on the next allocation, which costs up to 2× on batch-32 steps. Unless ``--keep-malloc`` is given,
the script keeps freed memory as every ``skelgraph`` command does
(:func:`skelgraph.allocator.keep_freed_memory`; variables the environment sets win); the settings
in effect are printed and stored with the results.

``--against REV`` also imports the package as it was at the git revision ``REV`` and times its
models in the same round-robin, call for call beside the current ones: each row then gives the
previous median and the median of the paired ratios current / previous (< 1: faster now).

Usage: ``python benchmarks/model_speed.py [--threads 2] [--repeat 5] [--against REV]
[--keep-malloc] [--models infogcn2 ...] [--precisions fp32 ...] [--cases "infer b1" ...]``;
prints a table and writes ``benchmarks/results/model_speed.json`` (about 2–3 minutes on 2 cores
for everything, twice that with ``--against``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from _common import (
    format_table,
    import_previous,
    interleaved_times,
    machine,
    malloc_settings,
    median_ms,
    paired_ratio,
    pin_threads,
    write_json,
)
from torch.utils.flop_counter import FlopCounterMode

from skelgraph.allocator import keep_freed_memory
from skelgraph.models import create

RESULTS = Path(__file__).resolve().parent / "results" / "model_speed.json"
LAYOUT, JOINTS, CHANNELS, FRAMES, CLASSES, BATCH = "coco17", 17, 3, 64, 14, 32
MODELS = ("infogcn2", "stgcn")
#: Reference implementation of InfoGCN++ on a 2-core machine of this kind, in milliseconds.
REFERENCE_MS = {"train b32": 2600.0, "infer b32": 930.0, "infer b1": 30.0}
TARGET_SPEEDUP = 3.0
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
CASES = ("train b32", "infer b32", "infer b1")
#: CPU features that decide whether bfloat16 matrix products run natively (faster than float32).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def bf16_support() -> dict[str, bool]:
    """Which of :data:`BF16_FLAGS` the CPU reports in ``/proc/cpuinfo`` (all :obj:`False` when
    the file is missing). Without them bfloat16 autocast emulates the products and is slower."""
    cpuinfo = Path("/proc/cpuinfo")
    flags: set[str] = set()
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    return {flag: flag in flags for flag in BF16_FLAGS}


@contextlib.contextmanager
def precision(dtype: torch.dtype | None) -> Iterator[None]:
    """bfloat16 autocast on the CPU for ``dtype``, nothing for :obj:`None` (float32)."""
    if dtype is None:
        yield
    else:
        with torch.autocast("cpu", dtype=dtype):
            yield


def cases(
    name: str, dtype: torch.dtype | None, seed: int = 0, build: Callable[..., Any] = create
) -> dict[str, Callable[[], Any]]:
    """The three timed calls of one model and precision, on fixed random inputs; ``build`` is the
    registry's ``create`` of the package version to time."""
    torch.manual_seed(seed)
    model = build(name, num_classes=CLASSES, layout=LAYOUT, in_channels=CHANNELS)
    x = torch.randn(BATCH, JOINTS, FRAMES, CHANNELS)
    x[..., -1] = torch.rand(BATCH, JOINTS, FRAMES)  # confidence in [0, 1]
    y = torch.randint(0, CLASSES, (BATCH,))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train() -> None:
        model.train()
        with precision(dtype):
            loss = model.loss(model(x), x, y)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # a clip-level prediction; versions without ``clip_logits`` reduce the full forward
    predict = getattr(model, "clip_logits", None) or (lambda batch: model(batch).video_logits())

    def infer(batch: torch.Tensor) -> Callable[[], Any]:
        def run() -> Any:
            model.eval()
            with torch.inference_mode(), precision(dtype):
                return predict(batch)

        return run

    return {"train b32": train, "infer b32": infer(x), "infer b1": infer(x[:1].clone())}


def gemm_peak(dtype: torch.dtype, size: int = 4096, repeat: int = 3) -> float:
    """GFLOP/s of the best of ``repeat`` ``size × size`` matrix products in ``dtype``."""
    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    times = interleaved_times({"product": lambda: a @ b}, repeat=repeat, min_repeat=repeat)
    return 2 * size**3 / min(times["product"]) / 1e9


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of ``fn`` (matrix products, convolutions,
    attention; elementwise work is not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops()


def measure(
    repeat: int,
    budget_s: float,
    previous: Callable[..., Any] | None = None,
    models: Sequence[str] = MODELS,
    precisions: Sequence[str] = tuple(PRECISIONS),
    only: Sequence[str] = CASES,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of the result table and the parameter count of every model, for the ``models``,
    ``precisions`` and cases (``only``) asked for.

    With ``previous`` (the ``create`` of an earlier version of the package), every case of that
    version is timed in the same round-robin, call for call beside the current one, and each row
    gets the previous median and the median of the paired ratios current / previous.
    """
    fns: dict[str, Callable[[], Any]] = {}
    params: dict[str, int] = {}
    versions = {"current": create} | ({"previous": previous} if previous else {})
    for name in models:
        params[name] = sum(p.numel() for p in create(name, num_classes=CLASSES).parameters())
        for label in precisions:
            for version, build in versions.items():
                for case, fn in cases(name, PRECISIONS[label], build=build).items():
                    if case in only:
                        fns[f"{version}|{name}|{label}|{case}"] = fn
    flops = {key: count_flops(fn) for key, fn in fns.items() if key.startswith("current|")}
    samples = interleaved_times(fns, repeat=repeat, warmup=1, min_repeat=3, budget_s=budget_s)
    rows = []
    for key, times in samples.items():
        version, name, label, case = key.split("|")
        if version == "previous":
            continue
        ms = median_ms(times)
        row: dict[str, Any] = {
            "model": name,
            "precision": label,
            "case": case,
            "median ms": ms,
            "GFLOP": flops[key] / 1e9,
            "GFLOP/s": flops[key] / ms / 1e6,
            "runs": len(times),
        }
        if previous is not None:
            before = samples[key.replace("current|", "previous|", 1)]
            row["previous ms"] = median_ms(before)
            rounds = min(len(times), len(before))  # a case stops for good once over budget
            paired = paired_ratio(times[:rounds], before[:rounds])
            row["current / previous"] = f"{paired:.3f}"
        if name == "infogcn2":
            reference = REFERENCE_MS[case]
            row["reference ms"] = reference
            row["speed-up"] = f"{reference / ms:.2f}x"
            row["3x target"] = "met" if reference / ms >= TARGET_SPEEDUP else "missed"
        rows.append(row)
    return rows, params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per case")
    parser.add_argument(
        "--budget", type=float, default=10.0, help="seconds per case after 3 samples"
    )
    parser.add_argument(
        "--keep-malloc", action="store_true", help="leave glibc's allocator settings as they are"
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also time the package at this git revision, call by call beside the current one",
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS), default=None)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON results file")
    args = parser.parse_args(argv)
    precisions = args.precisions or list(PRECISIONS)

    applied = {} if args.keep_malloc else keep_freed_memory()
    threads = pin_threads(args.threads)
    previous = import_previous(args.against, "skelgraph.models").create if args.against else None
    rows, params = measure(args.repeat, args.budget, previous, args.models, precisions, args.cases)
    settings = malloc_settings() | {name: str(value) for name, value in applied.items()}
    bf16 = bf16_support()
    peak = {label: gemm_peak(PRECISIONS[label] or torch.float32) for label in precisions}
    for row in rows:
        row["% of peak"] = f"{100 * row['GFLOP/s'] / peak[row['precision']]:.0f}"
    print(f"malloc: {settings}")
    print(f"threads: {threads}, parameters: {params}, native bf16 (CPU flags): {bf16}")
    print(
        "matrix-product throughput (4096 x 4096): "
        + ", ".join(f"{label} {gflops:.1f} GFLOP/s" for label, gflops in peak.items())
    )
    columns = [
        "model",
        "precision",
        "case",
        "median ms",
        "GFLOP",
        "GFLOP/s",
        "% of peak",
        "reference ms",
        "speed-up",
        "3x target",
        *(["previous ms", "current / previous"] if args.against else []),
        "runs",
    ]
    print(format_table(rows, columns))
    path = write_json(
        args.output,
        {
            "config": {
                "layout": LAYOUT,
                "batch": BATCH,
                "frames": FRAMES,
                "joints": JOINTS,
                "channels": CHANNELS,
                "classes": CLASSES,
                "threads": threads,
                "repeat": args.repeat,
                "budget_s": args.budget,
                "target_speedup": TARGET_SPEEDUP,
            },
            "machine": machine(),
            "malloc": settings,
            "bf16_cpu_flags": bf16,
            "gemm_peak_gflops": peak,
            "parameters": params,
            "model_config": {
                name: create(name, num_classes=CLASSES).config for name in args.models
            },
            "reference_ms": REFERENCE_MS,
            "previous": args.against,
            "results": rows,
        },
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
