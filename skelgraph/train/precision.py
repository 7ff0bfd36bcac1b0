"""``precision: auto`` by measurement: the faster of float32 and reduced-precision autocast for the
model at hand on this machine.

Whether bfloat16 autocast pays depends on the model as much as on the machine: on a CPU with native
bf16 (AVX-512 BF16, AMX) it speeds up large matrix products, but every op it covers gets casts
around it, and a model made of many small products, attention and ODE steps can end up slower than
in float32 (one model twice as fast, another 1.8× slower on the same CPU). So ``auto`` times a few
steps of the actual model on inputs of the actual batch shape in every candidate precision, and
keeps the one with the shortest step; float32 wins a tie. The steps are interleaved, one of every
precision per round in alternating order, so that load from other processes and the allocator
settling in spread over all of them: two untimed rounds, then up to three timed rounds, no further
round once 20 s of timed steps are spent. A step's time is the best of its rounds: load from
elsewhere only ever adds time. Training steps (forward, loss, backward) and inference steps
(forward under :func:`torch.inference_mode`) are calibrated separately.

Candidates: on a CPU float32, plus bfloat16 where the CPU multiplies it natively (emulated bf16
runs its products at a fraction of the float32 rate, so it is not timed); on CUDA float32 plus
bfloat16, or float16 on devices without bf16.

The result is kept in ``precision.json`` in the user cache folder (``~/.cache/skelgraph``), one
entry per key: a hash of the model (class, configuration, parameter shapes), the batch shape,
training or inference, the device, the CPU model and flags, the number of threads and the torch
version. A later run with the same key reuses it without timing anything.
"""

from __future__ import annotations

import copy
import hashlib
import json
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from skelgraph.io import PathLike, atomic_write
from skelgraph.train.distributed import DistContext, autocast, autocast_dtype, cpu_supports_bf16
from skelgraph.utils import user_cache_dir

__all__ = [
    "CACHE_FILE",
    "Calibration",
    "calibration_key",
    "candidate_precisions",
    "measure_precision",
    "resolve_precision",
]

#: the cache file in the user cache folder
CACHE_FILE = "precision.json"
#: bump when the timing procedure changes what a cached choice means
CALIBRATION_VERSION = 2
#: entries kept in the cache file (the oldest are dropped beyond)
MAX_ENTRIES = 256
#: untimed rounds: the first steps of a large model pay for one-time setup and for the allocator
#: growing its pools
WARMUP = 2
REPEATS = 3
#: seconds of timed rounds after which no further round starts (one round always runs): a large
#: model on a slow or busy machine costs a few steps, not minutes
BUDGET_S = 20.0


@dataclass
class Calibration:
    """The outcome of timing a model in every candidate precision.

    Attributes:
        choice: The faster precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        step_ms: The best step time in milliseconds per timed precision.
        train: Whether training steps (forward, loss, backward) were timed, else inference steps.
        shape: The input shape ``[B, V, T, C]``.
        device: The device, with the CPU model or the CUDA device name.
        failed: Precisions whose steps raised, with the error (they cannot be chosen).
        cached: Whether this came from the cache file rather than a new timing.
    """

    choice: str
    step_ms: dict[str, float]
    train: bool
    shape: list[int]
    device: str
    failed: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def describe(self) -> str:
        """One line for the log, e.g. ``precision auto: bf16 (training step: bf16 80 ms, fp32
        150 ms on ...)``."""
        if not self.step_ms:
            return (
                f"precision auto: {self.choice} ({self.device} has no native bf16: nothing to "
                "time it against)"
            )
        times = ", ".join(f"{name} {ms:.0f} ms" for name, ms in self.step_ms.items())
        mode = "training" if self.train else "inference"
        how = "cached" if self.cached else "measured"
        return (
            f"precision auto: {self.choice} ({mode} step {list(self.shape)}: {times}; {how} on "
            f"{self.device})"
        )


def candidate_precisions(device: torch.device) -> list[str]:
    """The precisions ``auto`` chooses from on ``device``, float32 first (see the module
    docstring)."""
    if device.type == "cuda":
        return ["fp32", "bf16" if torch.cuda.is_bf16_supported() else "fp16"]
    if device.type == "cpu" and cpu_supports_bf16():
        return ["fp32", "bf16"]
    return ["fp32"]


def _cpu_description() -> dict[str, str]:
    """The CPU model name and flags from ``/proc/cpuinfo`` (the platform's processor name
    elsewhere)."""
    found = {"model name": platform.processor(), "flags": ""}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        seen: set[str] = set()
        for line in cpuinfo.read_text(errors="replace").splitlines():
            name, _, value = line.partition(":")
            name = name.strip()
            if name in found and name not in seen:  # the first processor's
                found[name] = value.strip()
                seen.add(name)
    return {"model": found["model name"], "flags": found["flags"]}


def _device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({_cpu_description()['model'] or 'unknown CPU'})"


def calibration_key(
    model: nn.Module, shape: Sequence[int], device: torch.device, *, train: bool
) -> str:
    """The cache key of a calibration: a hash of everything a step time depends on (see the
    module docstring)."""
    config = getattr(model, "config", None)
    parameters = [[name, list(p.shape)] for name, p in model.named_parameters()]
    described = {
        "version": CALIBRATION_VERSION,
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "config": json.dumps(config, sort_keys=True, default=str),
        "parameters": parameters,
        "shape": [int(s) for s in shape],
        "train": train,
        "device": _device_description(device),
        "cpu": _cpu_description(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]


def _inputs(shape: Sequence[int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random keypoints ``[B, V, T, C]`` (confidence in ``[0, 1]`` in the last channel) and an
    all-real frame mask ``[B, T]``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator)
    x[..., -1] = torch.rand(*shape[:-1], generator=generator)
    mask = torch.ones(shape[0], shape[2], dtype=torch.bool)
    return x.to(device), mask.to(device)


def _step(
    model: nn.Module, x: torch.Tensor, mask: torch.Tensor, device: torch.device, train: bool
) -> Callable[[torch.dtype | None], None]:
    """One training or inference step of ``model`` on ``x`` under autocast to a dtype."""
    labels = torch.zeros(x.size(0), dtype=torch.long, device=device)

    def run(dtype: torch.dtype | None) -> None:
        if train:
            with autocast(device, dtype):
                out = model(x, mask)
                loss = model.loss(out, x, labels, mask)["loss"]
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast(device, dtype):
                model(x, mask)

    return run


def _seconds(
    run: Callable[[torch.dtype | None], None], dtype: torch.dtype | None, device: torch.device
) -> float:
    """Wall-clock seconds of ``run(dtype)``, the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run(dtype)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure_precision(
    model: nn.Module,
    shape: Sequence[int],
    device: torch.device,
    *,
    train: bool,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    budget_s: float = BUDGET_S,
) -> Calibration:
    """Times steps of a copy of ``model`` (its weights, gradients and batch-norm statistics are
    left alone) in every candidate precision and picks the fastest; no cache.

    Args:
        model: A model with the ``SkeletonModel`` interface (``model(x, mask)``, and
            ``model.loss(out, x, y, mask)["loss"]`` for training steps), on ``device``.
        shape: The input shape ``[B, V, T, C]`` (batch size, joints, frames, channels).
        device: The device the model computes on.
        train: Time training steps (forward, loss, backward) rather than inference steps.
        warmup: Untimed rounds first (allocations, one-time initialisation).
        repeats: Timed rounds; every round times one step of every precision.
        budget_s: No timed round starts once the timed rounds so far took this long.
    """
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"shape: expected [B, V, T, C] of positive sizes, got {list(shape)}")
    names = candidate_precisions(device)
    result = Calibration("fp32", {}, train, [int(s) for s in shape], _device_description(device))
    if len(names) == 1:
        return result
    twin = copy.deepcopy(model).train(train)
    x, mask = _inputs(shape, device)
    run = _step(twin, x, mask, device, train)
    times: dict[str, list[float]] = {name: [] for name in names}
    spent = 0.0
    for round_ in range(warmup + repeats):
        if round_ > warmup and spent >= budget_s:
            break
        for name in list(times)[:: 1 if round_ % 2 == 0 else -1]:
            try:
                seconds = _seconds(run, autocast_dtype(name, device), device)
            except RuntimeError as e:  # an op without a kernel for this dtype: not a candidate
                if name == "fp32":
                    raise
                result.failed[name] = str(e).splitlines()[0]
                del times[name]
                continue
            if round_ >= warmup:
                times[name].append(seconds)
                spent += seconds
    result.step_ms = {name: 1000 * min(t) for name, t in times.items()}
    result.choice = min(result.step_ms, key=lambda name: (result.step_ms[name], name != "fp32"))
    return result


def _read_cache(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            raise ValueError(f"expected a JSON object, got {type(entries).__name__}")
        return entries
    except (ValueError, OSError) as e:
        warnings.warn(f"{path}: unreadable precision cache ({e}), measuring again", stacklevel=3)
        return {}


def _cached_or_measured(
    model: nn.Module,
    shape: Sequence[int],
    device: torch.device,
    *,
    train: bool,
    cache_dir: PathLike | None,
) -> Calibration:
    if len(candidate_precisions(device)) == 1:  # nothing to time, so nothing to remember
        return measure_precision(model, shape, device, train=train)
    path = Path(cache_dir if cache_dir is not None else user_cache_dir()) / CACHE_FILE
    key = calibration_key(model, shape, device, train=train)
    entries = _read_cache(path)
    entry = entries.get(key)
    if isinstance(entry, dict):
        try:
            fields = {k: entry[k] for k in ("choice", "step_ms", "train", "shape", "device")}
            return Calibration(**fields, failed=entry.get("failed", {}), cached=True)
        except KeyError:
            pass  # an entry of another layout: measure again and replace it
    result = measure_precision(model, shape, device, train=train)
    record = {k: v for k, v in asdict(result).items() if k != "cached"}
    record["measured"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    entries.pop(key, None)
    entries[key] = record  # newest last
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(dict(list(entries.items())[-MAX_ENTRIES:]), f, indent=1)
    return result


def resolve_precision(
    precision: str,
    model: nn.Module,
    shape: Sequence[int],
    ctx: DistContext,
    *,
    train: bool,
    cache_dir: PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> torch.dtype | None:
    """The autocast dtype of a ``precision`` setting for ``model`` (:obj:`None` = float32).

    ``"fp32"``, ``"bf16"`` and ``"fp16"`` are taken as they are (:func:`autocast_dtype`).
    ``"auto"`` is the faster precision of :func:`measure_precision`, from the cache when this
    model, batch shape and machine were timed before. Under ``torchrun`` rank 0 decides (its
    timing is not disturbed by the other ranks' steps) and every rank uses its choice.

    Args:
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        model: The model (unwrapped), on ``ctx.device``.
        shape: The input shape ``[B, V, T, C]`` of one step.
        ctx: The process context.
        train: Decide for training steps, else for inference steps.
        cache_dir: Folder of the cache file (default: the user cache folder).
        log: Called with :meth:`Calibration.describe` on rank 0 after an ``auto`` decision.
    """
    if precision != "auto":
        return autocast_dtype(precision, ctx.device)
    calibration = None
    if ctx.is_main:
        calibration = _cached_or_measured(
            model, shape, ctx.device, train=train, cache_dir=cache_dir
        )
        if log is not None:
            log(calibration.describe())
    if ctx.is_distributed:
        shared = [calibration.choice if calibration is not None else None]
        dist.broadcast_object_list(shared, src=0)
        return autocast_dtype(shared[0], ctx.device)
    return autocast_dtype(calibration.choice, ctx.device)
