"""Robustness of trained models to noisy and missing joints: test accuracy under Gaussian jitter and
under joints dropped at random.

Protocol. Every checkpoint of ``--checkpoints NAME=PATH ...`` (any registered model, ensembles
included) is evaluated on ``--split`` of ``--data`` (a skeleton folder or a Penn Action root)
exactly as ``skelgraph test`` evaluates it: with its own window, preprocessing, evaluation crop and
sampling from its meta (:func:`~skelgraph.train.checkpoint_data.evaluation_config`,
:func:`~skelgraph.train.evaluate.split_predictor`), one prediction per clip, in float32 by
default. The perturbation is applied to the samples the model receives, **after its
preprocessing**: in the normalised coordinates, centred on the pelvis and divided by the clip's
median torso length, so that σ means the same for every model, clip and dataset.

* **Jitter σ.** Every coordinate of every joint with confidence > 0 in every real frame gets
  independent :math:`\\mathcal{N}(0, \\sigma^2)` noise, σ in torso lengths (0.1: a tenth of the
  torso, about 5 cm on an adult); the confidence is kept.
* **Drop p.** Every joint of every real frame is missing with probability p, independently:
  confidence 0 and coordinates 0, what the preprocessing leaves for a joint it never saw (the
  pelvis origin). The drop comes after the preprocessing, so nothing interpolates the dropped
  joints: the model meets the detector's failure as it is (dropped before the preprocessing, most
  of it would be repaired by the interpolation from the neighbouring frames).

σ = 0 and p = 0 are the clean accuracy, measured once. The noise is seeded (``--seed``): for every
model and level one generator draws it batch after batch in clip order, so models that receive
samples of the same shape (window, sampling) see the same noise.

Outputs: a table per perturbation on stdout, ``benchmarks/results/robustness.json`` (per model:
top-1 and mean class accuracy at every level, the checkpoint, the registered model and its
members, parameters, window; the levels, seed, machine) and ``robustness.png`` (accuracy against
σ and against p, one line per model).

Usage::

    python benchmarks/robustness.py --data /tmp/penn_npz --split test \\
        --checkpoints ST-GCN=work/stgcn/best.pt PoseC3D=work/posec3d/best.pt
    python benchmarks/robustness.py ... --sigmas 0 0.1 0.2 --drops 0 0.2 0.5 --limit 60
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import format_table, machine, parse_checkpoints, pin_threads, write_json
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from skelgraph.models.base import ModelOutput
from skelgraph.models.checkpoint import load_checkpoint
from skelgraph.train.checkpoint_data import check_compatible, evaluation_config
from skelgraph.train.data import open_dataset
from skelgraph.train.distributed import DistContext
from skelgraph.train.evaluate import prediction_metrics, split_predictor
from skelgraph.train.report import describe_model
from skelgraph.utils import atomic_write, resolve_device

RESULTS = Path(__file__).resolve().parent / "results"
SIGMAS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)
DROPS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)


def perturb(
    x: Tensor,
    mask: Tensor | None,
    *,
    sigma: float = 0.0,
    drop: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Joints ``x`` :math:`(B, V, T, C)` (confidence last) with Gaussian jitter of ``sigma`` on the
    joints with confidence > 0 and a fraction ``drop`` of the joints missing (confidence and
    coordinates 0), both in the real frames of ``mask`` :math:`(B, T)` only. The random numbers
    come from ``generator`` (on the CPU) and do not depend on the device."""
    coords, confidence = x[..., :-1], x[..., -1:]
    real = torch.ones_like(confidence, dtype=torch.bool)
    if mask is not None:
        real = real & mask[:, None, :, None]
    if sigma > 0:
        noise = torch.randn(coords.shape, generator=generator).to(coords) * sigma
        coords = coords + noise * ((confidence > 0) & real)
    if drop > 0:
        missing = torch.rand(confidence.shape, generator=generator).to(x.device) < drop
        missing = missing & real
        coords = coords.masked_fill(missing, 0.0)
        confidence = confidence.masked_fill(missing, 0.0)
    return torch.cat([coords, confidence], dim=-1)


class Perturbed(nn.Module):
    """``model`` fed with :func:`perturb`\\ ed joints; :meth:`set` chooses the perturbation and
    restarts the noise from ``seed``."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        super().__init__()
        self.model = model
        self.seed = seed
        self.set()

    def set(self, sigma: float = 0.0, drop: float = 0.0) -> None:
        self.sigma, self.drop = sigma, drop
        self.generator = torch.Generator().manual_seed(self.seed)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        x = perturb(x, mask, sigma=self.sigma, drop=self.drop, generator=self.generator)
        return self.model(x, mask)


def evaluate_checkpoint(name: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy of one checkpoint at every jitter and drop level of ``args``."""
    ctx = DistContext(device=resolve_device(args.device))
    model, meta = load_checkpoint(path, map_location=ctx.device)
    config = evaluation_config(
        meta,
        batch_size=args.batch_size,
        precision=args.precision,
        device=args.device,
        limit=args.limit,
    )
    split = None if args.split == "all" else args.split
    dataset = open_dataset(
        args.data,
        config.data,
        split=split,
        classes=meta["classes"],
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )
    try:
        check_compatible(meta, dataset)
    except ValueError as e:
        raise ValueError(f"{name} ({path}): {e}") from None
    perturbed = Perturbed(model, args.seed)
    predict_at = split_predictor(
        perturbed,
        args.data,
        config,
        meta["classes"],
        split=split,
        ctx=ctx,
        cache_dir=args.cache_dir,
        progress=not args.quiet,
    )

    def accuracy(sigma: float = 0.0, drop: float = 0.0) -> dict[str, float]:
        perturbed.set(sigma, drop)
        metrics = prediction_metrics(predict_at(1.0))
        return {key: metrics[key] for key in ("top1", "mean_class_acc", "num_samples")}

    clean = accuracy()
    record: dict[str, Any] = {
        "name": name,
        "checkpoint": str(path),
        **describe_model(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        "window": meta["window"],
        "clips": int(clean["num_samples"]),
    }
    for key, levels in (("jitter", args.sigmas), ("drop", args.drops)):
        results = []
        for level in levels:
            if level == 0:
                results.append(clean)
            else:
                results.append(accuracy(sigma=level) if key == "jitter" else accuracy(drop=level))
        record[key] = {
            "levels": list(levels),
            "top1": [r["top1"] for r in results],
            "mean_class_acc": [r["mean_class_acc"] for r in results],
        }
    return record


def tables(records: Sequence[dict[str, Any]]) -> str:
    """Top-1 % of every model at every jitter level, then at every drop level."""
    parts = []
    for key, title, label in (
        ("jitter", "Gaussian jitter (σ in torso lengths)", "σ={:g}"),
        ("drop", "joints dropped (fraction per joint and frame)", "p={:g}"),
    ):
        levels = records[0][key]["levels"]
        rows = [
            {
                "model": r["name"],
                **{label.format(v): 100 * a for v, a in zip(levels, r[key]["top1"], strict=True)},
            }
            for r in records
        ]
        parts.append(f"Top-1 % under {title}:\n\n" + format_table(rows, list(rows[0])))
    return "\n\n".join(parts)


def plot(records: Sequence[dict[str, Any]], path: Path, split: str) -> None:
    """Two panels: top-1 against σ and against the drop fraction, one line per model."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, xlabel in (
        (axes[0], "jitter", "Gaussian jitter σ (torso lengths)"),
        (axes[1], "drop", "fraction of joints dropped"),
    ):
        for record in records:
            levels, top1 = record[key]["levels"], record[key]["top1"]
            ax.plot(levels, 100 * np.asarray(top1), marker="o", label=record["name"])
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"top-1 % ({split})")
    axes[0].set_ylim(0, 100)
    axes[1].legend(fontsize=8)
    fig.suptitle("Accuracy under noisy and missing joints (after preprocessing)")
    FigureCanvasAgg(fig)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoints",
        nargs="+",
        required=True,
        metavar="NAME=PATH",
        help="checkpoints to compare, each named (a bare path is named by its file)",
    )
    parser.add_argument("--data", type=Path, required=True, help="skeleton folder or Penn Action")
    parser.add_argument("--split", default="test", help="train, val, test or all (default: test)")
    parser.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=list(SIGMAS),
        help=f"jitter levels in torso lengths (default: {' '.join(map(str, SIGMAS))})",
    )
    parser.add_argument(
        "--drops",
        type=float,
        nargs="+",
        default=list(DROPS),
        help=f"drop fractions (default: {' '.join(map(str, DROPS))})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step")
    parser.add_argument("--limit", type=int, metavar="N", help="at most N clips, every class")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision", default="fp32", choices=("auto", "fp32", "bf16", "fp16"), help="autocast"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--cache-dir", type=Path, default=None, help="dataset cache")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--name", default="robustness", help="results file name (no suffix)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if any(s < 0 for s in args.sigmas) or any(not 0 <= p < 1 for p in args.drops):
        parser.error("--sigmas: expected values >= 0; --drops: expected fractions in [0, 1)")
    try:
        args.checkpoints = parse_checkpoints(args.checkpoints)
    except ValueError as e:
        parser.error(str(e))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = pin_threads(args.threads)
    records = []
    for name, path in args.checkpoints.items():
        try:
            records.append(evaluate_checkpoint(name, path, args))
        except (ValueError, FileNotFoundError) as e:
            print(f"robustness: error: {e}", file=sys.stderr)
            return 1
    print(
        f"{args.data} ({args.split}), {records[0]['clips']} clips, noise seed {args.seed}, "
        f"perturbed after each model's preprocessing\n"
    )
    print(tables(records))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    figure = args.output_dir / f"{args.name}.png"
    plot(records, figure, args.split)
    result = {
        "data": str(args.data),
        "split": args.split,
        "perturbation": "after each model's preprocessing, in torso lengths",
        "sigmas": args.sigmas,
        "drops": args.drops,
        "seed": args.seed,
        "precision": args.precision,
        "threads": threads,
        "machine": machine(),
        "models": records,
        "seconds": time.perf_counter() - started,
    }
    out = write_json(args.output_dir / f"{args.name}.json", result)
    print(f"\nwrote {out} and {figure} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
