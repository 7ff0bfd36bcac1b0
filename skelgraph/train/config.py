"""Training configuration: nested dataclasses loaded from YAML, with dotted ``key=value`` overrides.

A configuration file mirrors :class:`TrainConfig`::

    model:
      name: infogcn2
      args: {channels: 64, depth: 4}
    data: {window: 64, p_interval_train: [0.5, 1.0], rotation: true}
    optim: {optimizer: sgd, lr: 0.01, lr_steps: [30, 45, 60]}
    epochs: 55
    batch_size: 32

Every key is checked: an unknown key raises a :class:`ValueError` that names it and lists the valid
ones, and a value of the wrong type one that names the key, the expected type and the value. The
configurations shipped with the package (``skelgraph/configs/*.yaml``) are addressable by name, e.g.
``load_config("infogcn2_blog", ["optim.lr=0.05", "epochs=10"])``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skelgraph.utils import atomic_write

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "TrainConfig",
    "apply_overrides",
    "available_configs",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


@dataclass
class ModelConfig:
    """Which registered model to build and its keyword arguments.

    Attributes:
        name: A name known to :func:`skelgraph.models.create` (``infogcn2``, ``stgcn``, ``agcn2s``).
        args: Keyword arguments for the model (``model.config``); free-form, checked by the model.
    """

    name: str = "infogcn2"
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """How clips become training samples.

    Attributes:
        window: Frames per sample ``T``.
        sampling: ``"clip"`` (one sample per clip, resampled/cropped to ``window``) or ``"window"``
            (sliding windows; evaluation averages the logits of a clip's windows).
        stride: Sliding-window stride for ``sampling="window"``; :obj:`None` = ``window // 2``.
        p_interval_train: Temporal-crop ratio range for training, e.g. ``[0.5, 1.0]``.
        p_interval_val: Crop ratio for validation/test, e.g. ``[0.95]`` (a single value = fixed).
        rotation, scale, translation, mirror, jitter: Training augmentation switches.
        preprocess: :class:`skelgraph.preprocess.PreprocessConfig` fields
            (``confidence_threshold``, ``eps``, ``center``, ``scale``, ``interpolate``).
        val_fraction: Fraction of the training clips held out (stratified, by clip) for validation
            when the data has no ``val`` split.
    """

    window: int = 64
    sampling: str = "clip"
    stride: int | None = None
    p_interval_train: list[float] = field(default_factory=lambda: [0.5, 1.0])
    p_interval_val: list[float] = field(default_factory=lambda: [0.95])
    rotation: bool = True
    scale: bool = False
    translation: bool = False
    mirror: bool = False
    jitter: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.2


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    Attributes:
        optimizer: ``"sgd"`` or ``"adamw"``.
        lr: Base learning rate (reached at the end of the warm-up).
        momentum: SGD momentum (AdamW: ``beta1``).
        nesterov: Nesterov momentum for SGD.
        weight_decay: L2 / decoupled weight decay.
        no_decay_norm_bias: Exempt norm weights, biases and embeddings from weight decay.
        warmup_epochs: Linear warm-up length in epochs (per iteration; fractional allowed).
        lr_steps: Epochs at which the learning rate is multiplied by ``lr_decay``.
        lr_decay: Multistep decay factor.
        grad_clip: Maximum gradient norm; :obj:`None` or ``0`` disables clipping.
    """

    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    no_decay_norm_bias: bool = True
    warmup_epochs: float = 5.0
    lr_steps: list[int] = field(default_factory=lambda: [30, 45, 60])
    lr_decay: float = 0.1
    grad_clip: float | None = 1.0


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data location and the work directory.

    Attributes:
        model, data, optim: See :class:`ModelConfig`, :class:`DataConfig`, :class:`OptimConfig`.
        epochs: Number of training epochs.
        batch_size: Samples per step (per process under ``torchrun``).
        eval_batch_size: Samples per evaluation step; :obj:`None` = ``batch_size``.
        num_workers: DataLoader worker processes.
        seed: Seed for Python, NumPy, torch and the DataLoader shuffling.
        precision: ``"auto"`` (bfloat16 autocast on CPUs with native bf16 and on CUDA GPUs that
            have it, float16 + gradient scaling on other GPUs, float32 otherwise), ``"fp32"``
            (off), ``"bf16"`` or ``"fp16"`` (CUDA only).
        reduce: Video-level prediction from per-step logits: ``"last"`` or ``"mean"``.
        monitor: Validation metric that selects ``best.pt`` (higher is better), e.g. ``"top1"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        early_recognition: Compute the early-recognition curve in the final test evaluation.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int = 55
    batch_size: int = 32
    eval_batch_size: int | None = None
    num_workers: int = 0
    seed: int = 0
    precision: str = "auto"
    reduce: str = "mean"
    monitor: str = "top1"
    device: str = "auto"
    early_recognition: bool = True

    def __post_init__(self) -> None:
        _check_choice("optim.optimizer", self.optim.optimizer, ("sgd", "adamw"))
        _check_choice("precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _check_choice("reduce", self.reduce, ("last", "mean"))
        _check_choice("data.sampling", self.data.sampling, ("clip", "window"))
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_positive("data.window", self.data.window)
        if not 0.0 <= self.data.val_fraction < 1.0:
            raise ValueError(
                f"data.val_fraction: expected a value in [0, 1), got {self.data.val_fraction}"
            )
        for key in ("p_interval_train", "p_interval_val"):
            value = getattr(self.data, key)
            if len(value) not in (1, 2) or not all(0.0 < p <= 1.0 for p in value):
                raise ValueError(f"data.{key}: expected 1 or 2 ratios in (0, 1], got {value}")
        if sorted(self.optim.lr_steps) != list(self.optim.lr_steps):
            raise ValueError(
                f"optim.lr_steps: expected increasing epochs, got {self.optim.lr_steps}"
            )


def _check_choice(key: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{key}: expected one of {list(choices)}, got {value!r}")


def _check_positive(key: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{key}: expected a positive integer, got {value}")


# ------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checking


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Checks ``value`` against the annotation ``tp`` and converts it (int -> float, a number ->
    a one-element list). Annotations are ``bool``, ``int``, ``float``, ``str``, ``list[...]``,
    ``dict[...]``, dataclasses and ``X | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None:
            return None
        (inner,) = (a for a in typing.get_args(tp) if a is not type(None))
        return _coerce(key, value, inner)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return _from_dict(tp, value, prefix=f"{key}.")
    if origin is list:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is str and isinstance(value, str):
        return value
    raise ValueError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _unknown_key(key: str, valid: Sequence[str]) -> ValueError:
    return ValueError(f"unknown config key {key!r}; valid keys: {', '.join(valid)}")


def _from_dict(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    types_ = _field_types(cls)
    for key in values:
        if key not in types_:
            raise _unknown_key(prefix + str(key), [prefix + k for k in types_])
    kwargs = {k: _coerce(prefix + k, v, types_[k]) for k, v in values.items()}
    return cls(**kwargs)


def config_from_dict(values: Mapping[str, Any]) -> TrainConfig:
    """Builds a :class:`TrainConfig` from a nested mapping; missing keys take their defaults."""
    return _from_dict(TrainConfig, values)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """The nested plain-dict form of ``config`` (YAML/JSON-serialisable)."""
    return dataclasses.asdict(config)


#: Mappings whose keys are not checked here (the model and the preprocessing check them).
_FREE_FORM = ("model.args", "data.preprocess")


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(_valid_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def apply_overrides(config: TrainConfig, overrides: Sequence[str]) -> TrainConfig:
    """Returns a copy of ``config`` with dotted ``key=value`` overrides applied.

    Values are parsed as YAML (``0.1``, ``true``, ``[30, 45]``, ``null``) and coerced to the field's
    type; keys under ``model.args.`` and ``data.preprocess.`` are free-form.

    Args:
        config: The base configuration.
        overrides: Strings such as ``"optim.lr=0.05"``, ``"model.args.channels=32"``.

    Raises:
        ValueError: For a key that is not a configuration field (the message lists the valid keys),
            a malformed override or a value of the wrong type.
    """
    values = config_to_dict(config)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value, e.g. optim.lr=0.05")
        free_form = any(key.startswith(f"{prefix}.") for prefix in _FREE_FORM)
        *path, last = key.split(".")
        target = values
        for part in path:
            node = target.get(part)
            if node is None and free_form:
                node = target[part] = {}
            if not isinstance(node, dict):
                raise _unknown_key(key, _valid_keys(TrainConfig))
            target = node
        if last not in target and not free_form:
            raise _unknown_key(key, _valid_keys(TrainConfig))
        try:
            target[last] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: cannot parse value {raw!r}: {e}") from e
    return config_from_dict(values)


# ------------------------------------------------------------------------------------------------
# files


def available_configs() -> list[str]:
    """Names of the configurations shipped in ``skelgraph/configs``."""
    root = importlib.resources.files("skelgraph").joinpath("configs")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def _resolve_config_path(path_or_name: str | os.PathLike[str]) -> Any:
    path = Path(path_or_name)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml") and path.parent == Path("."):
        packaged = importlib.resources.files("skelgraph").joinpath("configs", f"{path.stem}.yaml")
        if packaged.is_file():
            return packaged
    raise FileNotFoundError(
        f"config {str(path_or_name)!r}: no such file and no packaged config of that name; "
        f"packaged: {', '.join(available_configs())}"
    )


def load_config(path_or_name: str | os.PathLike[str], overrides: Sequence[str] = ()) -> TrainConfig:
    """Loads a YAML configuration file (or a packaged one by name) and applies ``overrides``.

    Args:
        path_or_name: A YAML file, or the name of a packaged config such as ``"infogcn2_blog"``.
        overrides: Dotted ``key=value`` strings, see :func:`apply_overrides`.
    """
    source = _resolve_config_path(path_or_name)
    values = yaml.safe_load(source.read_text()) or {}
    if not isinstance(values, Mapping):
        raise ValueError(f"config {source}: expected a mapping at the top level, got {values!r}")
    try:
        config = config_from_dict(values)
    except ValueError as e:
        raise ValueError(f"config {source}: {e}") from None
    return apply_overrides(config, overrides)


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Writes ``config`` as YAML (atomically); :func:`load_config` reads it back unchanged."""
    with atomic_write(path, "w") as f:
        yaml.safe_dump(config_to_dict(config), f, sort_keys=False)
