"""Process-group setup and collectives for training under ``torchrun``.

Outside ``torchrun`` (no ``WORLD_SIZE`` > 1 in the environment) everything degrades to a single
process: :func:`wrap_model` returns the model, the samplers are :obj:`None` and the collectives
return their input. Under ``torchrun`` each process trains on its shard
(:class:`DistributedSampler`) with :class:`DistributedDataParallel` (``gloo`` on CPU, ``nccl`` on
CUDA); evaluation gathers the predictions of every rank and drops the sampler's padding duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

from skelgraph.utils import resolve_device

__all__ = [
    "DistContext",
    "all_reduce_sum",
    "autocast",
    "autocast_dtype",
    "barrier",
    "cleanup",
    "cpu_supports_bf16",
    "gather_by_index",
    "init_distributed",
    "main_first",
    "make_sampler",
    "wrap_model",
]


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank (0 = the process that writes files and shows progress).
        world_size: Number of processes.
        local_rank: Rank on this machine (selects the CUDA device).
        device: The device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX-512-BF16 or AMX tiles)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an explicit ``precision`` setting on ``device`` (:obj:`None` =
    float32). ``"auto"`` depends on the model and is decided by measurement:
    :func:`skelgraph.train.precision.resolve_precision`.

    Raises:
        ValueError: For ``"fp16"`` on a CPU, ``"auto"`` or an unknown setting.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision: 'fp16' needs a CUDA device, got {device}")
        return torch.float16
    if precision == "auto":
        raise ValueError(
            "precision: 'auto' is decided by timing the model, see "
            "skelgraph.train.precision.resolve_precision"
        )
    raise ValueError(f"precision: expected 'auto', 'fp32', 'bf16' or 'fp16', got {precision!r}")


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[Any]:
    """:func:`torch.autocast` to ``dtype`` on ``device``'s type; a no-op for :obj:`None`
    (float32)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def init_distributed(device: str = "auto") -> DistContext:
    """Joins the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (idempotent).

    Without ``torchrun`` (and no initialised group) the context describes a single process.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (``cuda`` picks ``LOCAL_RANK``;
            see :func:`~skelgraph.utils.resolve_device`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1 and not dist.is_initialized():
        return DistContext(device=resolve_device(device))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, resolved)


def cleanup(ctx: DistContext) -> None:
    """Leaves the process group (no-op for a single process)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` on ``ctx.device``, inside :class:`DistributedDataParallel` when distributed.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts equal.
    """
    model = model.to(ctx.device)
    if not ctx.is_distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def make_sampler(
    dataset: Dataset, ctx: DistContext, *, shuffle: bool, seed: int = 0
) -> DistributedSampler | None:
    """A :class:`DistributedSampler` over ``dataset`` when distributed, else :obj:`None`.

    Without shuffling (evaluation) the sampler pads the last shard with indices from the start;
    :func:`gather_by_index` removes those duplicates again.
    """
    if not ctx.is_distributed:
        return None
    return DistributedSampler(
        dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle, seed=seed
    )


def barrier(ctx: DistContext) -> None:
    """Waits for every rank (no-op for a single process)."""
    if ctx.is_distributed:
        dist.barrier()


@contextmanager
def main_first(ctx: DistContext) -> Iterator[None]:
    """Runs the ``with`` block on rank 0 before the other ranks (e.g. to build a shared cache once
    and let the others load it)."""
    if not ctx.is_main:
        barrier(ctx)
    yield
    if ctx.is_main:
        barrier(ctx)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The element-wise sum of ``tensor`` over all ranks (``tensor`` itself for one process)."""
    if not ctx.is_distributed:
        return tensor
    tensor = tensor.to(ctx.device)
    dist.all_reduce(tensor)
    return tensor


def gather_by_index(
    indices: np.ndarray, arrays: Mapping[str, np.ndarray], ctx: DistContext
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Concatenates per-sample arrays of all ranks, sorted by sample index, without duplicates.

    Args:
        indices: ``(n,)`` dataset indices of this rank's samples (e.g. ``list(sampler)``).
        arrays: Arrays whose first axis is aligned with ``indices``.
        ctx: The process context.

    Returns:
        ``(unique_indices, arrays)`` with every dataset index once (the first occurrence is kept,
        which drops the padding of :class:`DistributedSampler`).
    """
    indices = np.asarray(indices, dtype=np.int64)
    for name, value in arrays.items():
        if len(value) != len(indices):
            raise ValueError(f"arrays[{name!r}]: expected {len(indices)} rows, got {len(value)}")
    parts = [(indices, dict(arrays))]
    if ctx.is_distributed:
        parts = [None] * ctx.world_size
        dist.all_gather_object(parts, (indices, dict(arrays)))
    all_indices = np.concatenate([p[0] for p in parts])
    unique, first = np.unique(all_indices, return_index=True)
    merged = {name: np.concatenate([p[1][name] for p in parts])[first] for name in arrays}
    return unique, merged
