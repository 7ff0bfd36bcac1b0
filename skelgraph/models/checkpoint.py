"""Checkpoints that load with ``torch.load(weights_only=True)`` and rebuild their model.

A checkpoint is a dict of plain Python values and tensors::

    {"state_dict": {...},                       # parameter/buffer tensors, no wrapper prefixes
     "meta": CheckpointMeta.to_dict(),          # classes, layout, model and its arguments, ...
     "optimizer": {...} | None, "epoch": int | None,
     ...}                                       # trainer state in last.pt (scheduler, RNG, ...)

A checkpoint is named by its file or, for the checkpoints packaged in ``skelgraph/pretrained``,
by its name (:func:`resolve_checkpoint`).
"""

from __future__ import annotations

import importlib.resources
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import skelgraph
from skelgraph.layouts import Layout, get_layout
from skelgraph.models.base import SkeletonModel
from skelgraph.models.registry import CREATE_ARGS, create
from skelgraph.utils import PathLike, atomic_write

__all__ = [
    "PRETRAINED_SUFFIX",
    "CheckpointMeta",
    "available_pretrained",
    "build_model",
    "library_versions",
    "load_checkpoint",
    "load_weights",
    "make_meta",
    "pretrained_path",
    "read_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "strip_prefixes",
    "unwrap_model",
]


#: Wrapper prefixes added to parameter names by DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: File suffix of a packaged checkpoint.
PRETRAINED_SUFFIX = ".pt"


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


@dataclass(kw_only=True)
class CheckpointMeta:
    """The ``meta`` entry of a checkpoint: everything needed to rebuild the model and to make
    its input. Stored as :meth:`to_dict`; :meth:`from_dict` reads that back, and also the metas of
    checkpoints without the optional fields.

    Attributes:
        classes (list[str]): Class names in logit order.
        layout (dict): The joint layout, :meth:`Layout.to_dict`.
        in_channels (int): Input channels ``C``.
        window (int): Frames per sample ``T``.
        model (str): Registered model name.
        model_args (dict): The model's keyword arguments besides ``num_classes``, ``layout`` and
            ``in_channels``.
        preprocess (dict, optional): :meth:`PreprocessConfig.to_dict` of the training data.
        versions (dict, optional): :func:`library_versions` when the checkpoint was made.
        inference (dict, optional): How evaluation samples are made (``sampling``, ``stride``,
            ``p_interval``, ``reduce``; ``tta`` for a fused ensemble).
        ensemble (dict, optional): For a fused ensemble, its ``checkpoints`` and their ``models``.
    """

    classes: list[str]
    layout: dict[str, Any]
    in_channels: int
    window: int
    model: str
    model_args: dict[str, Any]
    preprocess: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    inference: dict[str, Any] | None = None
    ensemble: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any]) -> CheckpointMeta:
        """The meta of a stored ``meta`` dict; keys that are no field are left out.

        Raises:
            ValueError: naming the required fields ``meta`` lacks.
        """
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in meta]
        if missing:
            raise ValueError(f"meta lacks {missing}")
        return cls(**{f.name: meta[f.name] for f in fields(cls) if f.name in meta})

    def to_dict(self) -> dict[str, Any]:
        """The plain dict stored as a checkpoint's ``meta``: the fields in order, those that are
        :obj:`None` left out.

        Raises:
            TypeError: When a value is not a plain value or tensor (``weights_only`` would reject
                it).
        """
        meta = {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }
        _check_plain(meta, "meta")
        return meta


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
    ensemble: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``meta`` entry of a checkpoint (:meth:`CheckpointMeta.to_dict`), with the versions of
    the libraries.

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
        ensemble: The member checkpoints and models of a fused ensemble; stored as
            ``meta["ensemble"]`` when given.

    Raises:
        TypeError: When a value is not a plain value or tensor.
    """
    return CheckpointMeta(
        classes=[str(c) for c in classes],
        layout=get_layout(layout).to_dict(),
        in_channels=int(in_channels),
        window=int(window),
        model=str(model),
        model_args={k: v for k, v in model_args.items() if k not in CREATE_ARGS},
        preprocess=dict(preprocess),
        versions=library_versions(),
        inference=None if inference is None else dict(inference),
        ensemble=None if ensemble is None else dict(ensemble),
    ).to_dict()


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
    """Loads a checkpoint dict with ``weights_only=True`` and checks its top-level entries and
    that its meta has the fields every checkpoint has (:class:`CheckpointMeta`)."""
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
    try:
        CheckpointMeta.from_dict(state["meta"])
    except ValueError as e:
        raise ValueError(f"checkpoint {path}: {e}") from None
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


def build_model(meta: Mapping[str, Any]) -> SkeletonModel:
    """A freshly initialised model as described by a checkpoint ``meta``."""
    described = CheckpointMeta.from_dict(meta)
    return create(
        described.model,
        num_classes=len(described.classes),
        layout=Layout.from_dict(described.layout),
        in_channels=described.in_channels,
        **described.model_args,
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
) -> tuple[SkeletonModel, dict[str, Any]]:
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


def _pretrained_dir() -> Path:
    return Path(str(importlib.resources.files("skelgraph").joinpath("pretrained")))


def available_pretrained() -> list[str]:
    """The names of the packaged checkpoints (file stems in ``skelgraph/pretrained``), sorted."""
    folder = _pretrained_dir()
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob(f"*{PRETRAINED_SUFFIX}") if p.is_file())


def pretrained_path(name: str) -> Path:
    """The file of the packaged checkpoint ``name``.

    Raises:
        FileNotFoundError: naming the expected file and the known names when there is none.
    """
    known = available_pretrained()
    path = _pretrained_dir() / f"{name}{PRETRAINED_SUFFIX}"
    if name not in known:
        listed = ", ".join(repr(n) for n in known) or "none (no checkpoint is packaged)"
        raise FileNotFoundError(
            f"pretrained model {name!r}: expected the file {path}, not found; known names: {listed}"
        )
    return path


def resolve_checkpoint(name_or_path: PathLike) -> Path:
    """The checkpoint file named by ``name_or_path``: the file itself when it is one, else the
    packaged checkpoint of that name (:func:`available_pretrained`).

    Raises:
        FileNotFoundError: naming the known pretrained models when ``name_or_path`` is neither.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = available_pretrained()
    if str(name_or_path) not in names:
        raise FileNotFoundError(
            f"{name_or_path}: no such checkpoint file, and not a pretrained model name "
            f"(available: {names})"
        )
    return pretrained_path(str(name_or_path))
