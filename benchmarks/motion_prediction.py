"""Motion prediction: the next frames of a clip from its first part, by trained forecasters and
by the zero- and constant-velocity baselines, as MPJPE and PCK per future step.

Protocol.

* **Samples.** Every clip of ``--split`` of ``--data`` (a Penn Action root or a skeleton folder),
  at its native frame rate, gives at most one sample: the observed prefix is its first
  ``t_obs`` frames and the targets the ``--horizon`` frames after it. By default ``t_obs =
  floor(--observed-fraction · T)`` (0.5: the first half, where most actions are under way), at
  least ``--min-observed`` frames; ``--observed N`` fixes ``t_obs = N`` instead. A clip with
  fewer than ``t_obs + horizon`` frames is left out (the count is reported). Deterministic: no
  randomness anywhere.
* **Inputs.** Each method sees the observed prefix only, preprocessed on its own with the
  method's preprocessing (a checkpoint's ``meta["preprocess"]``, the baselines the reference
  below), exactly as a stream that has reached that frame would be: no future frame enters the
  gap filling, the origin or the scale of the observed frames. The prefix is passed at the
  native rate as it is, whatever window or temporal sampling a model was trained with (the
  packaged Penn Action models were trained on clips resampled to 32 frames, so one of their
  forecast steps spans about 1.5 to 3.5 native frames).
* **Targets and unit.** The future frames are expressed in the coordinates of the observed
  prefix's last frame under the reference normalisation (the causal preprocessing of the
  packaged models, :class:`~skelgraph.preprocess.PreprocessConfig` ``(causal=True)``):
  :math:`(\\mathbf{x} - \\mathbf{o}) / d` with the prefix's first valid pelvis
  :math:`\\mathbf{o}` and its median torso length :math:`d`
  (:func:`~skelgraph.preprocess.frame_normalization`). A method whose preprocessing differs
  has its forecast mapped back through its own origin and divisor first, so every error is in
  torso lengths of the observed prefix.
* **Metrics.** :func:`~skelgraph.train.metrics.motion_error_sums`: per future step, the mean
  Euclidean error over every joint whose true confidence is above 0 (MPJPE, pooled over clips
  and joints) and the fraction of them within ``--threshold`` torso lengths (PCK, 0.2 by
  default, about 10 cm on an adult).

Every checkpoint of ``--checkpoints NAME=PATH ...`` (a file or a packaged name such as
``penn-action``) must be a :class:`~skelgraph.models.base.Forecaster`; InfoGCN++ and its
ensembles take each rollout of ``--rollouts`` (``ode``: the latent ODE integrated the whole
horizon; ``autoregressive``: :math:`N` frames at a time, fed back as observed).

Outputs: the table on stdout, ``benchmarks/results/motion_prediction.json`` (per method: MPJPE
and PCK at every step, the checkpoint, model, preprocessing and seconds; the protocol, clips,
machine) and ``motion_prediction.png`` (MPJPE and PCK against the future step, one line per
method).

Usage::

    python benchmarks/motion_prediction.py --data data/penn_npz --checkpoints penn-action
    python benchmarks/motion_prediction.py ... --horizon 10 --observed 32 --limit 60
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import format_table, machine, parse_checkpoints, pin_threads, write_json
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from skelgraph.data import balanced_subset
from skelgraph.layouts import Layout
from skelgraph.models import Ensemble, Forecaster
from skelgraph.models.checkpoint import load_checkpoint
from skelgraph.models.forecasting import BASELINES
from skelgraph.models.infogcn2 import FORECAST_ROLLOUTS
from skelgraph.preprocess import PreprocessConfig, frame_normalization, pad, preprocess
from skelgraph.train.data import read_clips
from skelgraph.train.metrics import MOTION_PCK_THRESHOLD, motion_error_sums, motion_means
from skelgraph.utils import atomic_write, progress_bar, resolve_device

RESULTS = Path(__file__).resolve().parent / "results"
#: The normalisation the targets and errors are expressed in (the packaged models' own).
REFERENCE = PreprocessConfig(causal=True)


@dataclass
class Sample:
    """One clip's observed prefix (raw keypoints) and its targets in reference coordinates."""

    name: str
    label: str
    observed: np.ndarray  # (t_obs, V, C) as read
    target: np.ndarray  # (H, V, C) reference coordinates, confidence last
    origin: np.ndarray  # (C - 1,) reference origin of the prefix
    divisor: float  # reference divisor (torso length) of the prefix


@dataclass
class Method:
    """A forecaster under a name, with the preprocessing of its input."""

    name: str
    forecaster: Forecaster
    preprocess: PreprocessConfig
    options: dict[str, Any]
    record: dict[str, Any]


def observed_frames(num_frames: int, args: argparse.Namespace) -> int | None:
    """``t_obs`` of a clip of ``num_frames`` frames, or :obj:`None` when it is too short."""
    if args.observed is not None:
        t_obs = args.observed
    else:
        t_obs = max(args.min_observed, int(np.floor(args.observed_fraction * num_frames)))
    return t_obs if t_obs + args.horizon <= num_frames else None


def load_samples(args: argparse.Namespace) -> tuple[list[Sample], Layout, dict[str, int]]:
    """The samples of ``args.split`` (see the protocol), their layout and the clip counts."""
    samples: list[Sample] = []
    layout: Layout | None = None
    channels = 0
    counts = {"clips": 0, "too_short": 0}
    items = read_clips(args.data)
    for clip, label, split in progress_bar(items, desc="clips", disable=args.quiet):
        if args.split != "all" and split != args.split:
            continue
        name = clip.source or f"clip {counts['clips']} of the split"
        if layout is None:
            layout, channels = clip.layout, clip.num_channels
        elif clip.layout != layout or clip.num_channels != channels:
            raise ValueError(
                f"{args.data}: {name}: expected layout {layout.name!r} with {channels} "
                f"channels like the first clip, got {clip.layout.name!r} with "
                f"{clip.num_channels}"
            )
        counts["clips"] += 1
        kp = clip.keypoints
        t_obs = observed_frames(len(kp), args)
        if t_obs is None:
            counts["too_short"] += 1
            continue
        observed, future = kp[:t_obs], kp[t_obs : t_obs + args.horizon]
        origin, divisor = frame_normalization(observed, layout, REFERENCE)
        target = future.astype(np.float64)
        target[..., :-1] = (target[..., :-1] - origin) / divisor
        samples.append(Sample(name, label, observed, target.astype(np.float32), origin, divisor))
    if layout is None or not samples:
        raise ValueError(
            f"{args.data}: split {args.split!r}: expected clips of at least "
            f"{args.observed or args.min_observed} + {args.horizon} frames, found none "
            f"({counts['clips']} clips in the split)"
        )
    if args.limit is not None and args.limit < len(samples):
        keep = balanced_subset([s.label for s in samples], args.limit)
        samples = [samples[i] for i in sorted(keep)]
    return samples, layout, counts


def takes_rollout(model: Any) -> bool:
    """Whether ``model.forecast_future`` takes ``rollout=`` (InfoGCN++ and its ensembles)."""
    if isinstance(model, Ensemble):
        return all(takes_rollout(member) for member in model.members)
    return "rollout" in inspect.signature(model.forecast_future).parameters


def load_methods(
    args: argparse.Namespace, layout: Layout, in_channels: int, device: torch.device
) -> list[Method]:
    """The baselines of ``args.baselines`` and every checkpoint (once per rollout when it
    takes one), checked against the data's layout and channels."""
    methods = [
        Method(name, BASELINES[name](), REFERENCE, {}, {"name": name, "kind": "baseline"})
        for name in args.baselines
    ]
    for name, path in args.checkpoints.items():
        model, meta = load_checkpoint(path, map_location=device)
        expected = Layout.from_dict(meta["layout"])
        if expected.joints != layout.joints or meta["in_channels"] != in_channels:
            raise ValueError(
                f"{name} ({path}): checkpoint expects layout {expected.name!r} "
                f"({expected.num_joints} joints, {meta['in_channels']} channels); the data has "
                f"{layout.name!r} ({layout.num_joints} joints, {in_channels} channels)"
            )
        if not isinstance(model, Forecaster):
            raise ValueError(
                f"{name} ({path}): model {meta['model']!r} has no forecast_future "
                f"(expected a Forecaster, e.g. infogcn2 or an ensemble of them)"
            )
        config = PreprocessConfig(**meta.get("preprocess", {}))
        record = {
            "kind": "checkpoint",
            "checkpoint": str(path),
            "model": meta["model"],
            "parameters": sum(p.numel() for p in model.parameters()),
            "window": meta["window"],
            "preprocess": config.to_dict(),
        }
        rollouts = args.rollouts if takes_rollout(model) else [None]
        for rollout in rollouts:
            label = name if len(rollouts) == 1 else f"{name} ({rollout})"
            options = {} if rollout is None else {"rollout": rollout}
            methods.append(
                Method(label, model, config, options, {"name": label, **record, **options})
            )
    return methods


def batch_inputs(
    samples: Sequence[Sample], layout: Layout, config: PreprocessConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The observed prefixes preprocessed with ``config``, padded to the longest:
    ``x`` (B, V, T, C), ``mask`` (B, T), and each prefix's origin (B, C - 1) and divisor (B,)
    under ``config``."""
    length = max(len(s.observed) for s in samples)
    xs, masks, origins, divisors = [], [], [], []
    for s in samples:
        x, mask = pad(preprocess(s.observed, layout, config), length)
        origin, divisor = frame_normalization(s.observed, layout, config)
        xs.append(x.transpose(1, 0, 2))
        masks.append(mask)
        origins.append(origin)
        divisors.append(divisor)
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(masks)),
        torch.tensor(np.stack(origins)),
        torch.tensor(divisors, dtype=torch.float64),
    )


def evaluate(
    method: Method,
    samples: Sequence[Sample],
    layout: Layout,
    args: argparse.Namespace,
    device: torch.device,
) -> dict[str, Any]:
    """MPJPE and PCK per future step of one method over the samples, in batches of similar
    prefix length (less padding; the order does not change the sums)."""
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].observed))
    totals: dict[str, torch.Tensor] | None = None
    seconds = 0.0
    starts = range(0, len(order), args.batch_size)
    for start in progress_bar(starts, desc=method.name, unit="batch", disable=args.quiet):
        batch = [samples[i] for i in order[start : start + args.batch_size]]
        x, mask, origin, divisor = batch_inputs(batch, layout, method.preprocess)
        began = time.perf_counter()
        with torch.inference_mode():
            pred = method.forecaster.forecast_future(
                x.to(device), mask.to(device), args.horizon, **method.options
            )
        seconds += time.perf_counter() - began
        pred = pred.double().cpu()
        if method.preprocess != REFERENCE:  # through the raw coordinates to the reference ones
            ref_origin = torch.tensor(np.stack([s.origin for s in batch]))
            ref_divisor = torch.tensor([s.divisor for s in batch], dtype=torch.float64)
            raw = pred * divisor.view(-1, 1, 1, 1) + origin[:, None, None]
            pred = (raw - ref_origin[:, None, None]) / ref_divisor.view(-1, 1, 1, 1)
        target = torch.from_numpy(np.stack([s.target for s in batch]))
        sums = motion_error_sums(pred, target, threshold=args.threshold)
        totals = sums if totals is None else {k: totals[k] + v for k, v in sums.items()}
    means = motion_means(totals)
    return {
        **method.record,
        "mpjpe": means["mpjpe"].tolist(),
        "pck": means["pck"].tolist(),
        "joints": totals["count"].tolist(),
        "seconds": seconds,
    }


def table(records: Sequence[dict[str, Any]], steps: Sequence[int]) -> str:
    """MPJPE (torso lengths) and PCK % at the given future steps, one row per method."""
    rows = []
    for r in records:
        row: dict[str, Any] = {"method": r["name"]}
        row.update({f"MPJPE@{s}": f"{r['mpjpe'][s - 1]:.3f}" for s in steps})
        row.update({f"PCK@{s} %": 100 * r["pck"][s - 1] for s in steps})
        rows.append(row)
    return format_table(rows, list(rows[0]))


def plot(records: Sequence[dict[str, Any]], path: Path, title: str, threshold: float) -> None:
    """Two panels: MPJPE and PCK against the future step, one line per method."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    for record in records:
        steps = np.arange(1, len(record["mpjpe"]) + 1)
        axes[0].plot(steps, record["mpjpe"], marker="o", label=record["name"])
        axes[1].plot(steps, 100 * np.asarray(record["pck"]), marker="o", label=record["name"])
    axes[0].set_ylabel("MPJPE (torso lengths)")
    axes[1].set_ylabel(f"PCK@{threshold:g} torso %")
    axes[1].set_ylim(0, 100)
    for ax in axes:
        ax.set_xlabel("future frame")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    FigureCanvasAgg(fig)
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="skeleton folder or Penn Action")
    parser.add_argument("--split", default="test", help="train, val, test or all (default: test)")
    parser.add_argument(
        "--checkpoints",
        nargs="*",
        default=[],
        metavar="NAME=PATH",
        help="forecasting checkpoints (files or packaged names, e.g. penn-action), each named",
    )
    parser.add_argument(
        "--baselines",
        nargs="*",
        default=list(BASELINES),
        choices=list(BASELINES),
        help=f"baselines to run (default: {' '.join(BASELINES)})",
    )
    parser.add_argument(
        "--rollouts",
        nargs="+",
        default=["ode"],
        choices=FORECAST_ROLLOUTS,
        help="InfoGCN++ rollouts beyond its trained steps, one row each (default: ode)",
    )
    parser.add_argument("--horizon", type=int, default=10, help="future frames (default: 10)")
    observed = parser.add_mutually_exclusive_group()
    observed.add_argument(
        "--observed-fraction",
        type=float,
        default=0.5,
        help="observe the first floor(F·T) frames of every clip (default: 0.5)",
    )
    observed.add_argument("--observed", type=int, help="observe the first N frames instead")
    parser.add_argument(
        "--min-observed",
        type=int,
        default=10,
        help="at least this many observed frames with --observed-fraction (default: 10)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=MOTION_PCK_THRESHOLD,
        help=f"PCK threshold in torso lengths (default: {MOTION_PCK_THRESHOLD})",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="at most N clips, every class")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--output-dir", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--name", default="motion_prediction", help="results file name")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.horizon < 1:
        parser.error(f"--horizon: expected an integer >= 1, got {args.horizon}")
    if not 0 < args.observed_fraction < 1:
        parser.error(
            f"--observed-fraction: expected a value in (0, 1), got {args.observed_fraction}"
        )
    for flag, value in (("--observed", args.observed), ("--min-observed", args.min_observed)):
        if value is not None and value < 2:  # a velocity needs two frames
            parser.error(f"{flag}: expected an integer >= 2, got {value}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit: expected a positive integer, got {args.limit}")
    if not args.threshold > 0:
        parser.error(f"--threshold: expected a positive number, got {args.threshold}")
    if not args.baselines and not args.checkpoints:
        parser.error("expected at least one method: --baselines or --checkpoints")
    try:
        args.checkpoints = parse_checkpoints(args.checkpoints)
    except ValueError as e:
        parser.error(str(e))
    clash = set(args.checkpoints) & set(args.baselines)
    if clash:
        parser.error(f"--checkpoints: the name {sorted(clash)[0]!r} is a baseline's")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    threads = pin_threads(args.threads)
    device = resolve_device(args.device)
    try:
        samples, layout, counts = load_samples(args)
        methods = load_methods(args, layout, samples[0].observed.shape[-1], device)
        records = [evaluate(method, samples, layout, args, device) for method in methods]
    except (ValueError, FileNotFoundError) as e:
        print(f"motion_prediction: error: {e}", file=sys.stderr)
        return 1
    rule = (
        f"first {args.observed} frames"
        if args.observed is not None
        else f"first floor({args.observed_fraction:g}·T) frames (at least {args.min_observed})"
    )
    steps = sorted({1, (args.horizon + 1) // 2, args.horizon})
    print(
        f"{args.data} ({args.split}): {len(samples)} of {counts['clips']} clips "
        f"({counts['too_short']} too short), observed: {rule}, predicted: the next "
        f"{args.horizon} frames; MPJPE in torso lengths, PCK within {args.threshold:g}\n"
    )
    print(table(records, steps))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    figure = args.output_dir / f"{args.name}.png"
    title = f"Motion prediction, {len(samples)} clips ({args.split}), observed: {rule}"
    plot(records, figure, title, args.threshold)
    result = {
        "data": str(args.data),
        "split": args.split,
        "horizon": args.horizon,
        "observed": rule,
        "reference_preprocess": REFERENCE.to_dict(),
        "threshold": args.threshold,
        "clips": counts["clips"],
        "too_short": counts["too_short"],
        "samples": len(samples),
        "threads": threads,
        "machine": machine(),
        "methods": records,
        "seconds": time.perf_counter() - started,
    }
    out = write_json(args.output_dir / f"{args.name}.json", result)
    print(f"\nwrote {out} and {figure} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
