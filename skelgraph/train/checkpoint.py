"""Checkpoints that load with ``torch.load(weights_only=True)`` and rebuild their model.

A checkpoint is a dict of plain Python values and tensors::

    {"state_dict": {...},                       # parameter/buffer tensors, no wrapper prefixes
     "meta": {"classes": [...], "layout": Layout.to_dict(), "in_channels": 3, "window": 64,
              "model": "infogcn2", "model_args": {...}, "preprocess": {...}, "versions": {...},
              "inference": {"sampling", "stride", "p_interval", "reduce"}},   # optional
     "optimizer": {...} | None, "epoch": int | None,
     ...}                                       # trainer state in last.pt (scheduler, RNG, ...)
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import skelgraph
from skelgraph.io import atomic_write
from skelgraph.layouts import Layout, get_layout
from skelgraph.models import create

__all__ = [
    "build_model",
    "check_compatible",
    "checkpoint_folder",
    "library_versions",
    "load_checkpoint",
    "load_weights",
    "make_meta",
    "read_checkpoint",
    "save_checkpoint",
    "strip_prefixes",
    "unwrap_model",
]

PathLike = str | os.PathLike[str]

#: Wrapper prefixes added to parameter names by DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Arguments of :func:`skelgraph.models.create` that the meta stores in their own fields.
_CREATE_ARGS = ("num_classes", "layout", "in_channels")


def library_versions() -> dict[str, str]:
    """Versions of skelgraph, Python, torch, torch_geometric and NumPy."""
    import torch_geometric

    return {
        "skelgraph": skelgraph.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torch_geometric": str(torch_geometric.__version__),
        "numpy": str(np.__version__),
    }


def _check_plain(value: Any, where: str) -> None:
    """Raises a :class:`TypeError` naming the first entry that ``weights_only`` would reject."""
    if value is None or type(value) in (bool, int, float, str) or isinstance(value, torch.Tensor):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: expected str or int keys, got {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where}: expected plain Python values and tensors only, got {type(value).__name__}"
    )


def make_meta(
    *,
    model: str,
    model_args: Mapping[str, Any],
    classes: Sequence[str],
    layout: str | Layout,
    in_channels: int,
    window: int,
    preprocess: Mapping[str, Any],
    inference: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta`` entry of a checkpoint: everything needed to rebuild the model and its input.

    Args:
        model: Registered model name.
        model_args: The model's keyword arguments (``model.config``); ``num_classes``, ``layout``
            and ``in_channels`` are dropped since the meta stores them separately.
        classes: Class names in logit order.
        layout: The joint layout (stored as :meth:`Layout.to_dict`).
        in_channels: Input channels ``C``.
        window: Frames per sample ``T``.
        preprocess: :meth:`PreprocessConfig.to_dict` of the training data.
        inference: How evaluation samples are made (``sampling``, ``stride``, ``p_interval``,
            ``reduce``); stored as ``meta["inference"]`` when given.
    """
    meta = {
        "classes": [str(c) for c in classes],
        "layout": get_layout(layout).to_dict(),
        "in_channels": int(in_channels),
        "window": int(window),
        "model": str(model),
        "model_args": {k: v for k, v in model_args.items() if k not in _CREATE_ARGS},
        "preprocess": dict(preprocess),
        "versions": library_versions(),
    }
    if inference is not None:
        meta["inference"] = dict(inference)
    _check_plain(meta, "meta")
    return meta


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def strip_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Removes leading ``module.`` / ``_orig_mod.`` prefixes (in any order) from every key."""
    out = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix) :], True
        out[key] = value
    return out


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    meta: Mapping[str, Any],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    epoch: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Writes a checkpoint atomically (temporary file + rename).

    Args:
        path: Destination ``.pt`` file.
        model: The model (wrappers are removed from the parameter names).
        meta: See :func:`make_meta`.
        optimizer: Stored as ``"optimizer"`` when given.
        epoch: Completed epochs.
        extra: Further plain entries (scheduler state, RNG states, best metric, ...).

    Raises:
        TypeError: When an entry is not a plain value or tensor (``weights_only`` would reject it).
    """
    state = {
        "state_dict": strip_prefixes(unwrap_model(model).state_dict()),
        "meta": dict(meta),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "epoch": epoch,
        **(extra or {}),
    }
    _check_plain(state, "checkpoint")
    with atomic_write(path) as f:
        torch.save(state, f)


def read_checkpoint(path: PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads a checkpoint dict with ``weights_only=True`` and checks its top-level entries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"checkpoint {path}: cannot be loaded with weights_only=True: {e}") from e
    if not isinstance(state, dict) or "state_dict" not in state or "meta" not in state:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"checkpoint {path}: expected a dict with 'state_dict' and 'meta', got {found}"
        )
    missing = [
        k
        for k in ("classes", "layout", "in_channels", "window", "model", "model_args")
        if k not in state["meta"]
    ]
    if missing:
        raise ValueError(f"checkpoint {path}: meta lacks {missing}")
    return state


def load_weights(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Loads ``state_dict`` (prefixes stripped) into ``model``, naming every mismatch.

    Raises:
        ValueError: Listing missing keys, unexpected keys and shape mismatches
            (``key: checkpoint [..] vs model [..]``).
    """
    state_dict = strip_prefixes(state_dict)
    own = unwrap_model(model).state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = [
        f"{k}: {source} {list(state_dict[k].shape)} vs model {list(own[k].shape)}"
        for k in sorted(set(own) & set(state_dict))
        if state_dict[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if shapes:
        problems.append(f"shape mismatches [{'; '.join(shapes)}]")
    if problems:
        raise ValueError(f"{source} does not fit the model: {', '.join(problems)}")
    unwrap_model(model).load_state_dict(state_dict)


def build_model(meta: Mapping[str, Any]) -> nn.Module:
    """A freshly initialised model as described by a checkpoint ``meta``."""
    return create(
        meta["model"],
        num_classes=len(meta["classes"]),
        layout=Layout.from_dict(meta["layout"]),
        in_channels=meta["in_channels"],
        **meta["model_args"],
    )


def _build_checked(
    meta: Mapping[str, Any], state_dict: Mapping[str, Any], source: str
) -> nn.Module:
    """:func:`build_model`, refusing a meta that names an unknown model or argument, holds a
    value of the wrong type, or describes a model far larger than the checkpoint's weights (its
    allocations are refused before they happen, so a corrupt meta cannot exhaust the memory)."""
    weights = sum(t.numel() * t.element_size() for t in state_dict.values() if torch.is_tensor(t))
    try:
        with _AllocationLimit(4 * weights + (64 << 20)):
            return build_model(meta)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ValueError(
            f"{source}: meta does not describe a model ({type(e).__name__}: {e})"
        ) from e


class _AllocationLimit(TorchDispatchMode):
    """Refuses, before it is made, any tensor allocation past :obj:`limit` bytes in total."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.used = limit, 0

    def __torch_dispatch__(
        self,
        func: torch._ops.OpOverload,
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        size = next((a for a in args if isinstance(a, (list, tuple, torch.Size))), None)
        if size is not None and func._schema.name.startswith(_FACTORIES):
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            self.used += math.prod(int(s) for s in size) * dtype.itemsize
            if self.used > self.limit:
                raise ValueError(
                    f"the model it describes needs more than {self.limit} bytes, far more than "
                    "its weights"
                )
        return func(*args, **kwargs)


#: the ATen operators that allocate a tensor of a size they are given
_FACTORIES = ("aten::empty", "aten::zeros", "aten::ones", "aten::full", "aten::rand", "aten::new_")


def load_checkpoint(
    path: PathLike, map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuilds the model of a checkpoint and loads its weights.

    Args:
        path: A checkpoint written by :func:`save_checkpoint`.
        map_location: Device for the tensors (the model is moved there as well).

    Returns:
        ``(model, meta)`` with the model in eval mode.
    """
    state = read_checkpoint(path, map_location)
    meta = state["meta"]
    model = _build_checked(meta, state["state_dict"], f"checkpoint {path}")
    load_weights(model, state["state_dict"], source=f"checkpoint {path}")
    return model.to(map_location).eval(), meta


def checkpoint_folder(
    root: PathLike, meta: Mapping[str, Any], *, cache_dir: PathLike | None = None
) -> Any:
    """A :class:`~skelgraph.data.SkeletonFolder` at ``root`` sampled as the checkpoint's model is
    evaluated: its classes, window, preprocessing and ``meta["inference"]`` sampling."""
    from skelgraph.data import SkeletonFolder
    from skelgraph.preprocess import PreprocessConfig

    inference = meta["inference"]
    return SkeletonFolder(
        root,
        classes=meta["classes"],
        window=meta["window"],
        sampling=inference["sampling"],
        stride=inference["stride"],
        p_interval=inference["p_interval"],
        preprocess=PreprocessConfig(**meta["preprocess"]),
        cache_dir=cache_dir,
    )


def check_compatible(meta: Mapping[str, Any], dataset: Any) -> None:
    """Checks that ``dataset`` delivers what a checkpoint's model expects.

    Compares the joint layout (name and joint names), the joint count, the input channels and the
    class names.

    Raises:
        ValueError: Naming the checkpoint's and the data's layout, joint count, channels or classes.
    """
    expected = Layout.from_dict(meta["layout"])
    layout = get_layout(dataset.layout)
    channels = int(dataset.in_channels)
    described = f"layout {layout.name!r} ({layout.num_joints} joints, {channels} channels)"
    wanted = (
        f"layout {expected.name!r} ({expected.num_joints} joints, {meta['in_channels']} channels)"
    )
    if layout.joints != expected.joints or channels != meta["in_channels"]:
        raise ValueError(f"checkpoint expects {wanted}; the data has {described}")
    classes = list(dataset.classes)
    if classes != list(meta["classes"]):
        extra = sorted(set(classes) - set(meta["classes"]))
        absent = sorted(set(meta["classes"]) - set(classes))
        raise ValueError(
            f"classes differ: checkpoint has {len(meta['classes'])} {list(meta['classes'])}, "
            f"the data has {len(classes)}; only in the data: {extra}, "
            f"only in the checkpoint: {absent}"
        )
