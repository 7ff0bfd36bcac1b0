"""Training configuration: nested dataclasses loaded from YAML, with dotted ``key=value`` overrides.

A configuration file mirrors :class:`TrainConfig`::

    model:
      name: infogcn2
      args: {channels: 64, depth: 4}
    data: {window: 64, p_interval_train: [0.5, 1.0], rotation: true, rotation_degrees: [15]}
    optim: {optimizer: sgd, lr: 0.01, lr_steps: [30, 45, 60]}
    epochs: 55
    batch_size: 32
    tune:                 # the search of ``skelgraph tune`` (ignored by ``skelgraph train``)
      space:
        optim.lr: {low: 1.0e-4, high: 1.0e-2, log: true}
        data.window: [32, 64]

Every key is checked: an unknown key raises a :class:`ValueError` that names it and lists the valid
ones, and a value of the wrong type one that names the key, the expected type and the value. A key
that is left out takes its default. :func:`config_help` lists every key with its default and
meaning (``skelgraph train --help`` prints it); the classes' docstrings carry the same text. The
configurations shipped with the package (``skelgraph/configs/*.yaml``) are addressable by name,
e.g. ``load_config("infogcn2_blog", ["optim.lr=0.05", "epochs=10"])``; ``multiview_3d`` spells out
every augmentation key for 3D data seen from several viewpoints.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import textwrap
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from skelgraph.utils import atomic_write

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ParamChoices",
    "ParamRange",
    "TrainConfig",
    "TuneConfig",
    "apply_overrides",
    "available_configs",
    "config_from_dict",
    "config_help",
    "config_to_dict",
    "load_config",
    "parse_space",
    "read_config_file",
    "save_config",
    "set_values",
]


def _doc(meaning: str) -> dict[str, str]:
    """A field's metadata: its one line of meaning, for the docstring and ``--help``."""
    return {"help": meaning}


def _documented(cls: type) -> type:
    """Appends an ``Attributes:`` section, built from every field's ``metadata["help"]`` (its one
    line of meaning, which :func:`config_help` lists too), to ``cls.__doc__``."""
    entries = [
        textwrap.fill(
            f"{f.name}: {f.metadata['help']}",
            100,
            initial_indent=" " * 8,
            subsequent_indent=" " * 12,
        )
        for f in dataclasses.fields(cls)
    ]
    cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n    Attributes:\n" + "\n".join(entries)
    return cls


@_documented
@dataclass
class ModelConfig:
    """Which registered model to build and its keyword arguments."""

    name: str = field(
        default="infogcn2",
        metadata=_doc(
            "A name known to skelgraph.models.create (infogcn2, infogcn, stgcn, agcn2s, posec3d, "
            "symgnn)."
        ),
    )
    args: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "Keyword arguments of the model (model.config); free-form, checked by the model."
        ),
    )


@_documented
@dataclass
class DataConfig:
    """How clips become training samples, and the training augmentation.

    Coordinates are those of the preprocessed clips (centred and scaled to torso lengths): x to
    the right, y vertical, z the depth of 3D clips. Each augmentation has a switch and its
    magnitudes; they are applied in the order listed (rotation, scale, shear, translation, mirror,
    jitter), see :mod:`skelgraph.augment`.
    """

    window: int = field(default=64, metadata=_doc("Frames per sample T."))
    sampling: str = field(
        default="clip",
        metadata=_doc(
            "'clip' (one sample per clip, cropped and resampled to window) or 'window' (sliding "
            "windows; evaluation averages the logits of a clip's windows)."
        ),
    )
    stride: int | None = field(
        default=None,
        metadata=_doc("Sliding-window stride for sampling=window; null = window/2."),
    )
    p_interval_train: list[float] = field(
        default_factory=lambda: [0.5, 1.0],
        metadata=_doc("Temporal-crop ratio range [low, high] in training."),
    )
    p_interval_val: list[float] = field(
        default_factory=lambda: [0.95],
        metadata=_doc("Crop ratio for validation/test (one value: a fixed centred crop)."),
    )
    rotation: bool = field(default=True, metadata=_doc("Random rotation in training."))
    rotation_degrees: list[float] = field(
        default_factory=lambda: [15.0],
        metadata=_doc(
            "Rotation range in degrees: one angle a (±a in the image plane for 2D clips, about the "
            "vertical y axis for 3D clips) or three [x, y, z] (±each about that axis; 2D clips "
            "rotate about z only)."
        ),
    )
    scale: bool = field(default=False, metadata=_doc("Random scaling in training."))
    scale_range: list[float] = field(
        default_factory=lambda: [0.9, 1.1], metadata=_doc("Scale factor range [low, high].")
    )
    scale_per_axis: bool = field(
        default=False,
        metadata=_doc(
            "Draw one factor per coordinate axis (anisotropic scaling) instead of one for all."
        ),
    )
    shear: bool = field(default=False, metadata=_doc("Random shear in training."))
    shear_max: float = field(
        default=0.2,
        metadata=_doc("Shear magnitude s: every off-diagonal entry of the shear matrix in ±s."),
    )
    translation: bool = field(default=False, metadata=_doc("Random translation in training."))
    translation_max: float = field(
        default=0.1, metadata=_doc("Offset range ±t per coordinate, in torso lengths.")
    )
    mirror: bool = field(default=False, metadata=_doc("Random left/right mirroring in training."))
    mirror_p: float = field(default=0.5, metadata=_doc("Probability of mirroring a sample."))
    jitter: bool = field(default=False, metadata=_doc("Gaussian joint jitter in training."))
    jitter_std: float = field(
        default=0.01, metadata=_doc("Jitter standard deviation, in torso lengths.")
    )
    preprocess: dict[str, Any] = field(
        default_factory=dict,
        metadata=_doc(
            "skelgraph.preprocess.PreprocessConfig fields (confidence_threshold, eps, center, "
            "scale, interpolate, causal)."
        ),
    )
    val_fraction: float = field(
        default=0.2,
        metadata=_doc(
            "Fraction of the training clips held out (stratified, by clip) for validation when the "
            "data has no val split; 0 trains on all of them. When the clips have groups (the group "
            "column of labels.csv), whole groups are held out instead "
            "(skelgraph.data.grouped_split)."
        ),
    )
    folds: int | None = field(
        default=None,
        metadata=_doc(
            "Cross-validation: split the training clips into this many folds (whole groups when "
            "the clips have groups, else stratified by class; skelgraph.data.kfold_splits) and "
            "validate on fold data.fold instead of the val split or val_fraction; the final "
            "evaluation is then on that fold, never on the test split (skelgraph train --cv K "
            "runs every fold); null = no folds."
        ),
    )
    fold: int = field(
        default=0, metadata=_doc("The fold validated on when data.folds is set, 0 .. folds-1.")
    )


@_documented
@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    optimizer: str = field(default="sgd", metadata=_doc("'sgd' or 'adamw'."))
    lr: float = field(
        default=0.01, metadata=_doc("Base learning rate (reached at the end of the warm-up).")
    )
    momentum: float = field(default=0.9, metadata=_doc("SGD momentum (AdamW: beta1)."))
    nesterov: bool = field(default=True, metadata=_doc("Nesterov momentum for SGD."))
    weight_decay: float = field(default=1e-4, metadata=_doc("L2 / decoupled weight decay."))
    no_decay_norm_bias: bool = field(
        default=True,
        metadata=_doc("Exempt norm weights, biases and embeddings from weight decay."),
    )
    warmup_epochs: float = field(
        default=5.0,
        metadata=_doc("Linear warm-up length in epochs (per iteration; fractional allowed)."),
    )
    lr_steps: list[int] = field(
        default_factory=lambda: [30, 45, 60],
        metadata=_doc("Epochs at which the learning rate is multiplied by lr_decay."),
    )
    lr_decay: float = field(default=0.1, metadata=_doc("Multistep decay factor."))
    grad_clip: float | None = field(
        default=1.0, metadata=_doc("Maximum gradient norm; null or 0 disables clipping.")
    )


@_documented
@dataclass
class TuneConfig:
    """The hyperparameter search of ``skelgraph tune`` (:func:`skelgraph.train.search.tune`).

    Every trial trains the configuration with the trial's values on the training part and is
    scored on the validation part; the test split is never looked at. ``skelgraph train``
    ignores this section.
    """

    space: dict[str, Any] | None = field(
        default=None,
        metadata=_doc(
            "Dotted config key -> {low, high[, log, step]} (a range: int when the key is an "
            "integer or both bounds are, else float; log: log-uniform) or a list of choices. Keys: "
            "any config key, model.args.* (checked against the model's arguments) or "
            "data.preprocess.*; not seed, limit, data.val_fraction (they change the validation "
            "clips) nor tune.*. Override it whole: tune.space='{optim.lr: {low: 1.0e-4, high: "
            "0.01, log: true}}'. null = the configured model's default space: optim.lr from a "
            "tenth to 3x its value, optim.weight_decay a tenth to 10x (unless 0; both "
            "log-uniform), model.args.dropout 0-0.5, model.args.label_smoothing 0-0.2, "
            "data.window and the model's integer width (model.args.channels or base_channels) "
            "halved, kept or doubled."
        ),
    )
    metric: str | None = field(
        default=None,
        metadata=_doc(
            "Validation metric that scores a trial (its value at the epoch best.pt keeps) and "
            "is reported every epoch for pruning; null = monitor."
        ),
    )
    direction: str = field(
        default="maximize",
        metadata=_doc("'maximize' or 'minimize' the metric (e.g. minimize for 'loss')."),
    )
    trials: int | None = field(
        default=None,
        metadata=_doc(
            "Trials to run in this call (a resumed study adds as many); 0 only writes the "
            "reports; null = until the budget is spent."
        ),
    )
    budget_minutes: float | None = field(
        default=60.0,
        metadata=_doc(
            "Wall-clock budget of this call in minutes: no trial starts after it, and a trial "
            "whose next epoch would end past it stops (counted as pruned); null = no limit."
        ),
    )
    sampler_startup_trials: int = field(
        default=5,
        metadata=_doc("Trials drawn at random before the TPE sampler models the results."),
    )
    pruner: str = field(
        default="median",
        metadata=_doc(
            "'median' (stop a trial whose metric after an epoch is worse than the median of "
            "earlier trials after that epoch) or 'none'."
        ),
    )
    pruner_warmup_epochs: int = field(
        default=2, metadata=_doc("Epochs every trial runs before it can be pruned.")
    )
    pruner_startup_trials: int = field(
        default=3, metadata=_doc("Trials that run to the end before any trial is pruned.")
    )
    holdout: float = field(
        default=0.2,
        metadata=_doc(
            "Fraction of the training clips the trials are scored on when the configuration "
            "validates on nothing (no val split, data.val_fraction 0): whole groups when the "
            "clips have them, the same clips in every trial. best.yaml keeps data.val_fraction, "
            "so that train fits the best values on every training clip as configured."
        ),
    )


@_documented
@dataclass
class TrainConfig:
    """Everything a training run needs besides the data location and the work directory."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata=_doc("See ModelConfig."))
    data: DataConfig = field(default_factory=DataConfig, metadata=_doc("See DataConfig."))
    optim: OptimConfig = field(default_factory=OptimConfig, metadata=_doc("See OptimConfig."))
    epochs: int = field(default=55, metadata=_doc("Number of training epochs."))
    batch_size: int = field(
        default=32, metadata=_doc("Samples per step (per process under torchrun).")
    )
    eval_batch_size: int | None = field(
        default=None, metadata=_doc("Samples per evaluation step; null = batch_size.")
    )
    num_workers: int = field(default=0, metadata=_doc("DataLoader worker processes."))
    seed: int = field(
        default=0, metadata=_doc("Seed for Python, NumPy, torch and the DataLoader shuffling.")
    )
    precision: str = field(
        default="auto",
        metadata=_doc(
            "'auto' (float32 or bfloat16 autocast, float16 on CUDA devices without bf16: whichever "
            "a short timing of this model and batch shape finds faster on this machine, measured "
            "once and cached), 'fp32', 'bf16' or 'fp16' (CUDA only)."
        ),
    )
    compile: bool = field(
        default=False,
        metadata=_doc(
            "Compile the model's forward with torch.compile (training, validation and the final "
            "evaluation): faster steps after a one-off compilation of a minute or more."
        ),
    )
    reduce: str = field(
        default="mean",
        metadata=_doc("Video-level prediction from per-step logits: 'last' or 'mean'."),
    )
    recipe: str | None = field(
        default=None,
        metadata=_doc(
            "'auto': derive the values this configuration leaves out from the training data "
            "(skelgraph.train.recipe; --config auto is a configuration of only this key)."
        ),
    )
    monitor: str = field(
        default="top1",
        metadata=_doc("Validation metric that selects best.pt (higher is better), e.g. 'top1'."),
    )
    device: str = field(default="auto", metadata=_doc("'auto', 'cpu', 'cuda' or 'cuda:N'."))
    early_recognition: bool = field(
        default=True,
        metadata=_doc(
            "Compute the early-recognition curve (accuracy after the first 10 %, 20 %, ... of "
            "every clip) in the final evaluation, from the clips already loaded."
        ),
    )
    max_steps: int | None = field(
        default=None,
        metadata=_doc(
            "Stop training after this many optimisation steps in all (a quick run; the epoch it "
            "stops in is validated and saved); null = every step of every epoch."
        ),
    )
    limit: int | None = field(
        default=None,
        metadata=_doc(
            "Use at most this many clips of every split (training, validation, final evaluation), "
            "taken in turn from every class; null = all."
        ),
    )
    tune: TuneConfig = field(default_factory=TuneConfig, metadata=_doc("See TuneConfig."))

    def __post_init__(self) -> None:
        data = self.data
        _check_choice("optim.optimizer", self.optim.optimizer, ("sgd", "adamw"))
        _check_choice("precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _check_choice("reduce", self.reduce, ("last", "mean"))
        _check_choice("data.sampling", data.sampling, ("clip", "window"))
        if self.recipe is not None:
            _check_choice("recipe", self.recipe, ("auto",))
        _check_positive("epochs", self.epochs)
        _check_positive("batch_size", self.batch_size)
        _check_positive("data.window", data.window)
        for key in ("max_steps", "limit"):
            if getattr(self, key) is not None:
                _check_positive(key, getattr(self, key))
        if not 0.0 <= data.val_fraction < 1.0:
            raise ValueError(
                f"data.val_fraction: expected a value in [0, 1), got {data.val_fraction}"
            )
        if data.folds is not None and data.folds < 2:
            raise ValueError(f"data.folds: expected at least 2 folds or null, got {data.folds}")
        if data.folds is None and data.fold != 0:
            raise ValueError(f"data.fold: expected 0 without data.folds, got {data.fold}")
        if data.folds is not None and not 0 <= data.fold < data.folds:
            raise ValueError(
                f"data.fold: expected a fold in [0, {data.folds - 1}] (data.folds={data.folds}), "
                f"got {data.fold}"
            )
        for key in ("p_interval_train", "p_interval_val"):
            value = getattr(data, key)
            if len(value) not in (1, 2) or not all(0.0 < p <= 1.0 for p in value):
                raise ValueError(f"data.{key}: expected 1 or 2 ratios in (0, 1], got {value}")
        if len(data.rotation_degrees) not in (1, 3) or not all(
            0.0 <= a <= 180.0 for a in data.rotation_degrees
        ):
            raise ValueError(
                "data.rotation_degrees: expected one angle or three [x, y, z], each in "
                f"[0, 180], got {data.rotation_degrees}"
            )
        low_high = data.scale_range
        if len(low_high) != 2 or not 0.0 < low_high[0] <= low_high[1]:
            raise ValueError(
                f"data.scale_range: expected [low, high] with 0 < low <= high, got {low_high}"
            )
        for key in ("shear_max", "translation_max", "jitter_std"):
            if getattr(data, key) < 0:
                raise ValueError(f"data.{key}: expected a value >= 0, got {getattr(data, key)}")
        if not 0.0 <= data.mirror_p <= 1.0:
            raise ValueError(
                f"data.mirror_p: expected a probability in [0, 1], got {data.mirror_p}"
            )
        if sorted(self.optim.lr_steps) != list(self.optim.lr_steps):
            raise ValueError(
                f"optim.lr_steps: expected increasing epochs, got {self.optim.lr_steps}"
            )
        _check_tune(self.tune)


def _check_tune(tune: TuneConfig) -> None:
    _check_choice("tune.direction", tune.direction, ("maximize", "minimize"))
    _check_choice("tune.pruner", tune.pruner, ("median", "none"))
    if tune.trials is not None and tune.trials < 0:
        raise ValueError(f"tune.trials: expected an integer >= 0 or null, got {tune.trials}")
    if tune.budget_minutes is not None and not tune.budget_minutes > 0:
        raise ValueError(
            f"tune.budget_minutes: expected a positive number or null, got {tune.budget_minutes}"
        )
    if tune.trials is None and tune.budget_minutes is None:
        raise ValueError("tune: trials and budget_minutes are both null; set at least one")
    for key in ("sampler_startup_trials", "pruner_warmup_epochs", "pruner_startup_trials"):
        if getattr(tune, key) < 0:
            raise ValueError(f"tune.{key}: expected an integer >= 0, got {getattr(tune, key)}")
    if not 0.0 < tune.holdout < 1.0:
        raise ValueError(f"tune.holdout: expected a value in (0, 1), got {tune.holdout}")
    if tune.space is not None:
        parse_space(tune.space)


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


def config_help(width: int = 100, section: str | None = None) -> str:
    """Every configuration key with its default and meaning (``key = default: meaning``, wrapped
    to ``width`` columns), as ``skelgraph train --help`` lists them; with ``section`` (e.g.
    ``"tune"``) only the keys under it."""
    lines = []

    def walk(cls: type, default: Any, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            value = getattr(default, f.name)
            if dataclasses.is_dataclass(value):
                walk(type(value), value, f"{prefix}{f.name}.")
            elif section is None or prefix.startswith(f"{section}."):
                shown = yaml.safe_dump(value, default_flow_style=True).strip()
                shown = shown.removesuffix("...").strip()
                entry = f"{prefix}{f.name} = {shown}: {f.metadata['help']}"
                lines.append(textwrap.fill(entry, width, subsequent_indent="    "))

    walk(TrainConfig, TrainConfig(), "")
    return "\n".join(lines)


#: Mappings whose keys are not checked here (the model and the preprocessing check them).
_FREE_FORM = ("model.args", "data.preprocess")


def _is_free_form(key: str) -> bool:
    return any(key.startswith(f"{prefix}.") for prefix in _FREE_FORM)


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            keys.extend(_valid_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(prefix + name)
    return keys


def _set_pairs(config: TrainConfig, pairs: Iterable[tuple[str, Any]]) -> TrainConfig:
    """``config`` with every dotted ``(key, value)`` set in turn (a later pair wins)."""
    values = config_to_dict(config)
    for key, value in pairs:
        free_form = _is_free_form(key)
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
        target[last] = value
    return config_from_dict(values)


def set_values(config: TrainConfig, values: Mapping[str, Any]) -> TrainConfig:
    """Returns a copy of ``config`` with dotted keys set to (already parsed) values, checked and
    coerced as a file's are; keys under ``model.args.`` and ``data.preprocess.`` are free-form.

    Example: ``set_values(config, {"optim.lr": 0.05, "model.args.channels": 32})``.

    Raises:
        ValueError: For a key that is not a configuration field (the message lists the valid keys)
            or a value of the wrong type.
    """
    return _set_pairs(config, values.items())


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
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"override {item!r}: expected key=value, e.g. optim.lr=0.05")
        try:
            pairs.append((key, yaml.safe_load(raw) if raw.strip() else ""))
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: cannot parse value {raw!r}: {e}") from e
    return _set_pairs(config, pairs)


# ------------------------------------------------------------------------------------------------
# search spaces


@dataclass(frozen=True)
class ParamRange:
    """A numeric range of a search space: ``low`` to ``high`` (both included), drawn uniformly or,
    with ``log``, log-uniformly (:math:`\\log v \\sim U(\\log low, \\log high)`), on the grid
    ``low + k·step`` when ``step`` is given; ``integer`` draws integers."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def edge_values(self) -> tuple[Any, ...]:
        """The values that bound the range (what a check of the config tries)."""
        return (self.low, self.high)


@dataclass(frozen=True)
class ParamChoices:
    """A list of values of a search space, one drawn per trial (any YAML value: a number, a
    string, a list such as ``[joint, velocity]``)."""

    values: tuple[Any, ...]

    def edge_values(self) -> tuple[Any, ...]:
        """Every choice."""
        return self.values


#: Keys a search may not vary, and why.
_NOT_SEARCHABLE = {
    "seed": "it selects the validation clips, so trials would be scored on different clips",
    "limit": "it selects the validation clips, so trials would be scored on different clips",
    "data.val_fraction": "it sizes the validation part, so trials would be scored on different "
    "clips",
}
_RANGE_KEYS = ("low", "high", "log", "step")


def _key_type(key: str) -> Any:
    """The annotation of a dotted field key, ``X | None`` unwrapped."""
    cls: Any = TrainConfig
    *path, last = key.split(".")
    for part in path:
        cls = _field_types(cls)[part]
    tp = _field_types(cls)[last]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = (a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _number(key: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
        raise ValueError(f"{key}: expected a number, got {value!r}{hint}")
    return value


def _parse_range(key: str, spec: Mapping[str, Any], tp: Any) -> ParamRange:
    where = f"tune.space.{key}"
    if set(spec) - set(_RANGE_KEYS) or "low" not in spec or "high" not in spec:
        raise ValueError(
            f"{where}: expected {{low, high[, log, step]}} or a list of choices, got {dict(spec)}"
        )
    low, high = _number(f"{where}.low", spec["low"]), _number(f"{where}.high", spec["high"])
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log: expected true or false, got {log!r}")
    if step is not None and not _number(f"{where}.step", step) > 0:
        raise ValueError(f"{where}.step: expected a positive number, got {step!r}")
    bounds = (low, high) if step is None else (low, high, step)
    if tp not in (int, float, None):
        raise ValueError(
            f"{where}: a range needs a numeric key and {key} is "
            f"{getattr(tp, '__name__', tp)}; give a list of choices"
        )
    integer = tp is int or (tp is None and all(isinstance(v, int) for v in bounds))
    if integer and not all(isinstance(v, int) for v in bounds):
        raise ValueError(f"{where}: {key} is an integer; expected integer bounds, got {dict(spec)}")
    if not low < high:
        raise ValueError(f"{where}: expected low < high, got low={low}, high={high}")
    if log and low <= 0:
        raise ValueError(f"{where}: a log range needs low > 0, got low={low}")
    if log and step is not None:
        raise ValueError(f"{where}: step and log cannot be combined")
    if integer:
        return ParamRange(low, high, log, step, integer=True)
    return ParamRange(float(low), float(high), log, None if step is None else float(step))


def parse_space(space: Mapping[str, Any]) -> dict[str, ParamRange | ParamChoices]:
    """Checks a search space (``tune.space``, see :class:`TuneConfig`) and returns it typed.

    Every key must be a configuration key (or a ``model.args.`` / ``data.preprocess.`` one, whose
    names the model and the preprocessing check, see :func:`skelgraph.train.search.search_space`)
    that a search may vary; a range must suit the key's type and a choice of a typed key must be
    a valid value of it.

    Raises:
        ValueError: Naming the key (``tune.space.<key>``), what was expected and what was given.
    """
    valid = _valid_keys(TrainConfig)
    parsed: dict[str, ParamRange | ParamChoices] = {}
    for key, spec in space.items():
        if not isinstance(key, str) or not (key in valid or _is_free_form(key)):
            raise ValueError(
                f"tune.space: unknown config key {key!r}; valid keys: {', '.join(valid)} and "
                "model.args.* / data.preprocess.*"
            )
        if key.startswith("tune."):
            raise ValueError(f"tune.space: {key!r}: the search cannot tune its own settings")
        if key in _NOT_SEARCHABLE:
            raise ValueError(f"tune.space: {key!r} cannot be searched: {_NOT_SEARCHABLE[key]}")
        tp = None if _is_free_form(key) else _key_type(key)
        if isinstance(spec, Mapping):
            parsed[key] = _parse_range(key, spec, tp)
        elif isinstance(spec, (list, tuple)) and spec:
            if tp is not None:  # each choice as a file's value of this key would be read
                spec = [_coerce(f"tune.space.{key}[{i}]", v, tp) for i, v in enumerate(spec)]
            parsed[key] = ParamChoices(tuple(spec))
        else:
            raise ValueError(
                f"tune.space.{key}: expected {{low, high[, log, step]}} or a non-empty list of "
                f"choices, got {spec!r}"
            )
    return parsed


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


def read_config_file(path_or_name: str | os.PathLike[str]) -> dict[str, Any]:
    """The nested values of a YAML configuration file (or a packaged one by name), their keys and
    types checked (:func:`config_from_dict`) but missing keys left out.

    Raises:
        FileNotFoundError: When there is no such file and no packaged config of that name.
        ValueError: Naming the file and the key that is unknown or of the wrong type.
    """
    source = _resolve_config_path(path_or_name)
    values = yaml.safe_load(source.read_text()) or {}
    if not isinstance(values, Mapping):
        raise ValueError(f"config {source}: expected a mapping at the top level, got {values!r}")
    try:
        config_from_dict(values)
    except ValueError as e:
        raise ValueError(f"config {source}: {e}") from None
    return dict(values)


def load_config(path_or_name: str | os.PathLike[str], overrides: Sequence[str] = ()) -> TrainConfig:
    """Loads a YAML configuration file (or a packaged one by name) and applies ``overrides``.

    A file with ``recipe: auto`` loads as it is written here;
    :func:`skelgraph.train.recipe.load_training_config` merges the recipe derived from the data
    under it.

    Args:
        path_or_name: A YAML file, or the name of a packaged config such as ``"infogcn2_blog"``.
        overrides: Dotted ``key=value`` strings, see :func:`apply_overrides`.
    """
    return apply_overrides(config_from_dict(read_config_file(path_or_name)), overrides)


def save_config(config: TrainConfig, path: str | os.PathLike[str]) -> None:
    """Writes ``config`` as YAML (atomically); :func:`load_config` reads it back unchanged."""
    with atomic_write(path, "w") as f:
        yaml.safe_dump(config_to_dict(config), f, sort_keys=False)
