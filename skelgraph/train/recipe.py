r"""A training recipe derived from the data: ``skelgraph train --config auto`` or ``recipe: auto``.

:func:`derive_recipe` measures the training clips (:func:`dataset_stats`) and sets every value below
from the measurements, each with its reason; :func:`load_training_config` merges the recipe under a
configuration file, so that a key the file or an override sets explicitly always wins. The rules,
with :math:`N` the training clips, :math:`K` the classes and :math:`L_p` the :math:`p`-th
percentile of the clip lengths:

**Window.** :math:`T = L_{20}` rounded up to a multiple of 8, within :math:`[16, 64]`: the clip
sampler resamples a 50–100 % crop of every clip to :math:`T` frames, so at least 80 % of the clips
are shown at their own frame rate or slower, never skipping frames of a short clip, while long
clips cost no more than :math:`T` frames.

**Augmentation**, from the spread of the body's orientation and proportions over the clips
(preprocessed: centred on the pelvis, in torso lengths, :math:`x` right, :math:`y` vertical,
:math:`z` depth); a spread :math:`s` is the 90th percentile of the absolute deviation from the
median.

- 3D clips rotate about every axis: about the vertical :math:`y` by the spread of the facing
  direction (the yaw of the left-to-right vector of the mirror pairs) plus a 15° margin, within
  [15°, 90°]; about :math:`x` and :math:`z` by the spread of the spine's tilt plus 10°, within
  [10°, 30°]. Every axis is scaled on its own.
- 2D clips rotate in the image plane by the spread of the spine's tilt plus 10°, within [10°, 30°]
  (:math:`y` is vertical); a turn of the body out of the image plane shows as a change of the
  shoulder width relative to the torso, so the shear magnitude is the spread of that ratio
  divided by its median, within [0.1, 0.3], with per-axis scaling.
- Scale: :math:`1 \pm r` with :math:`r` the relative spread of the bone lengths (in torso units)
  between clips, within [0.1, 0.25] (people of other proportions).
- Mirror (left/right, :math:`p = 0.5`) when the layout has mirror pairs.

**Model and regularisation**, by the training clips (InfoGCN++ sizes; a model with a per-block
channel plan, such as InfoGCN or ST-GCN, keeps its plan's depth with every width scaled by the
tier's channels over 64; keys a model does not take are left out): :math:`N < 500`: 24 channels,
2 blocks, dropout 0.2, weight decay 0.05, label smoothing 0.2; :math:`N < 5000`: 32 channels, 2
blocks, no dropout, weight decay 0.01, label smoothing 0.1; :math:`N < 20000`: 48 channels, 3
blocks, dropout 0.1; above: 64 channels, 4 blocks, dropout 0.1 (the blog's size).

**Schedule**: AdamW at 0.005 with batches of 16 for about 2500 optimisation steps
(:math:`\lceil 2500 / \lceil N' / 16 \rceil \rceil` epochs within [20, 300], :math:`N'` the clips
that train), decayed tenfold at 75 % and 92.5 % of the epochs, warmed up over about 60 steps.

**Validation**: with :math:`N \ge 1000`, 20 % of the training clips (whole groups when the clips
have them) validate and choose the kept epoch. Below, every clip trains and the last epoch is kept:
a held-out part of a few people or a few dozen clips chooses epochs by noise and costs a fifth of
the data; ``--cv K`` estimates the accuracy instead, and ``skelgraph tune`` scores its trials on
``tune.holdout`` (20 %) of the clips, while the ``best.yaml`` it writes trains on every clip.

**Streams** (:attr:`Recipe.streams`, ``skelgraph train --config auto --streams auto``): joint
positions with their velocity, bones with theirs, and the positions relative to the parent's
parent with the velocity, one model each, averaged.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from skelgraph.models.registry import model_class
from skelgraph.train.config import (
    DataConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    read_config_file,
)
from skelgraph.train.streams import Stream
from skelgraph.utils import PathLike, atomic_write

__all__ = [
    "DataStats",
    "Recipe",
    "dataset_stats",
    "derive_recipe",
    "load_training_config",
    "save_recipe",
]

#: The value of ``--config`` (and of the ``recipe`` key) that derives the recipe from the data.
AUTO = "auto"
#: The clip-length percentile the window covers.
WINDOW_PERCENTILE = 20.0
#: Optimisation steps of the schedule.
TARGET_STEPS = 2500
#: Below this many training clips every clip trains (no held-out part).
SMALL_DATA = 1000
#: The held-out fraction of the training clips otherwise.
HOLDOUT = 0.2
#: The width of the largest tier; a model with a per-block channel plan is scaled by the tier's
#: width relative to it.
REFERENCE_WIDTH = 64
#: (largest number of training clips, channels, blocks, dropout, weight decay, label smoothing)
SIZE_TIERS: tuple[tuple[float, int, int, float, float, float], ...] = (
    (500, 24, 2, 0.2, 0.05, 0.2),
    (5000, 32, 2, 0.0, 0.01, 0.1),
    (20000, 48, 3, 0.1, 0.01, 0.1),
    (math.inf, 64, 4, 0.1, 0.01, 0.1),
)
#: The recipe's ensemble (``--streams auto``).
STREAMS: tuple[Stream, ...] = (
    Stream(("joint", "velocity")),
    Stream(("bone", "bone_velocity")),
    Stream(("relative2", "velocity")),
)


@dataclass(frozen=True)
class DataStats:
    """What the recipe measures of the training clips (:func:`dataset_stats`).

    Attributes:
        num_clips: Training clips :math:`N` (the validation part included).
        num_classes: Classes :math:`K`.
        dims: 2 or 3 coordinates.
        num_joints: Joints :math:`V` of the layout.
        has_pairs: Whether the layout has left/right mirror pairs.
        length_percentiles: Clip length (frames) at the percentiles 10, 20, 50, 90.
        yaw_spread: Spread of the facing direction about the vertical axis, degrees (3D only, else
            0).
        tilt_spread: Spread of the spine's tilt from the vertical, degrees.
        width_spread: Relative spread of the shoulder width over the torso length (2D only, else 0).
        bone_spread: Relative spread of the bone lengths between clips.
        has_groups: Whether the clips carry groups (subjects, cameras, ...).
    """

    num_clips: int
    num_classes: int
    dims: int
    num_joints: int
    has_pairs: bool
    length_percentiles: dict[int, float]
    yaw_spread: float
    tilt_spread: float
    width_spread: float
    bone_spread: float
    has_groups: bool = False


@dataclass
class Recipe:
    """A configuration derived from :class:`DataStats` (:func:`derive_recipe`).

    Attributes:
        values: Nested configuration values, as in a YAML file.
        reasons: The reason of every value, by dotted key.
        streams: The ensemble's streams (``--streams auto``).
        stats: The measurements the values come from.
    """

    values: dict[str, Any]
    reasons: dict[str, str]
    streams: tuple[Stream, ...]
    stats: DataStats
    overridden: list[str] = field(default_factory=list)

    def describe(self, config: TrainConfig | None = None) -> str:
        """The recipe as YAML lines ``key: value  # reason``; with ``config``, the values it
        resolved to (a key the configuration set explicitly is marked ``set explicitly``)."""
        flat = _flatten(config_to_dict(config)) if config is not None else {}
        lines = [f"# recipe derived from the data: {_describe_stats(self.stats)}"]
        for key, reason in self.reasons.items():
            value = flat.get(key, _get(self.values, key))
            note = "set explicitly" if key in self.overridden else reason
            shown = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...")
            lines.append(f"{key}: {shown.strip()}  # {note}")
        streams = ", ".join(s.name for s in self.streams)
        lines.append(f"# streams (--streams auto): {streams}")
        return "\n".join(lines)


def _describe_stats(stats: DataStats) -> str:
    lengths = ", ".join(f"p{p} {v:g}" for p, v in stats.length_percentiles.items())
    return (
        f"{stats.num_clips} training clips, {stats.num_classes} classes, {stats.dims}D, "
        f"{stats.num_joints} joints; clip lengths {lengths}; spreads: yaw "
        f"{stats.yaw_spread:.1f}°, tilt {stats.tilt_spread:.1f}°, shoulder width "
        f"{stats.width_spread:.2f}, bone lengths {stats.bone_spread:.2f}"
    )


# ------------------------------------------------------------------------------------------------
# measurements


def _spread(values: np.ndarray) -> float:
    """The 90th percentile of the absolute deviation from the median (0 for no values)."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    return float(np.percentile(np.abs(values - np.median(values)), 90))


def _angle_spread(degrees: np.ndarray) -> float:
    """:func:`_spread` of angles, with deviations wrapped to [-180°, 180°)."""
    degrees = degrees[np.isfinite(degrees)]
    if degrees.size == 0:
        return 0.0
    centre = math.degrees(
        math.atan2(np.sin(np.radians(degrees)).mean(), np.cos(np.radians(degrees)).mean())
    )
    deviation = (degrees - centre + 180.0) % 360.0 - 180.0
    return float(np.percentile(np.abs(deviation), 90))


def _shoulder_pair(layout: Any) -> tuple[int, int] | None:
    """The first mirror pair at the upper end of the torso: both joints in it or linked to it by
    a bone (the shoulders); :obj:`None` when there is none."""
    upper = set(layout.torso[0])
    near = (
        upper
        | {a for a, b in layout.bones if b in upper}
        | {b for a, b in layout.bones if a in upper}
    )
    return next((tuple(p) for p in layout.pairs if p[0] in near and p[1] in near), None)


def dataset_stats(dataset: Any, has_groups: bool = False) -> DataStats:
    """Measures the clips of a :class:`~skelgraph.data.SkeletonDataset` (preprocessed: centred on
    the pelvis, in torso lengths).

    Per clip, over its frames with every needed joint valid (confidence > 0): the median yaw of
    the mean right-minus-left vector of the mirror pairs about the vertical axis (3D), the median
    tilt of the spine (pelvis to mid-shoulders) from the vertical, the median shoulder-width
    (first mirror pair of the upper torso joints) to torso ratio, and the median length of every
    bone; the spreads (:class:`DataStats`) are taken over the clips.
    """
    layout = dataset.layout
    dims = dataset.in_channels - 1
    lengths = dataset.clip_lengths.astype(np.float64)
    upper, lower = (list(t) for t in layout.torso)
    pairs = np.asarray(layout.pairs, dtype=np.int64).reshape(-1, 2)
    shoulder = _shoulder_pair(layout)
    bones = np.asarray(layout.bones, dtype=np.int64).reshape(-1, 2)
    yaw, tilt, width, bone_lengths = [], [], [], []
    for clip in range(dataset.num_clips):
        frames = dataset.clip_frames(clip).numpy().astype(np.float64)  # [T, V, C]
        coords, valid = frames[..., :dims], frames[..., dims] > 0
        spine = coords[:, upper].mean(1) - coords[:, lower].mean(1)  # [T, D]
        ok = valid[:, upper + lower].all(1)
        torso = np.linalg.norm(spine, axis=-1)
        ok &= torso > 1e-6
        tilt.append(
            np.median(np.degrees(np.arccos(np.clip(spine[ok, 1] / torso[ok], -1, 1))))
            if ok.any()
            else np.nan
        )
        if dims == 3 and len(pairs):
            across = (coords[:, pairs[:, 1]] - coords[:, pairs[:, 0]]).mean(1)
            good = valid[:, pairs.ravel()].all(1)
            yaw.append(
                np.median(np.degrees(np.arctan2(across[good, 2], across[good, 0])))
                if good.any()
                else np.nan
            )
        if dims == 2 and shoulder is not None:
            left, right = shoulder
            good = ok & valid[:, [left, right]].all(1)
            ratio = np.linalg.norm(coords[:, right] - coords[:, left], axis=-1)[good] / torso[good]
            width.append(np.median(ratio) if good.any() else np.nan)
        if len(bones):
            good = valid[:, bones.ravel()].reshape(len(frames), -1, 2).all(-1)  # [T, B]
            span = np.linalg.norm(coords[:, bones[:, 0]] - coords[:, bones[:, 1]], axis=-1)
            bone_lengths.append(
                np.nanmedian(np.where(good, span, np.nan), axis=0)
                if good.any()
                else np.full(len(bones), np.nan)
            )
    width_arr = np.asarray(width, dtype=np.float64)
    width_median = np.nanmedian(width_arr) if np.isfinite(width_arr).any() else 0.0
    bone_spread = 0.0
    if bone_lengths:
        per_bone = np.asarray(bone_lengths)  # [N, B]
        medians = np.nanmedian(per_bone, axis=0)
        usable = medians > 1e-3
        if usable.any():
            relative = per_bone[:, usable] / medians[usable]
            bone_spread = float(np.nanmedian([_spread(col) for col in relative.T]))
    return DataStats(
        num_clips=dataset.num_clips,
        num_classes=dataset.num_classes,
        dims=dims,
        num_joints=layout.num_joints,
        has_pairs=bool(layout.pairs),
        length_percentiles={p: float(np.percentile(lengths, p)) for p in (10, 20, 50, 90)},
        yaw_spread=_angle_spread(np.asarray(yaw, dtype=np.float64)),
        tilt_spread=_spread(np.asarray(tilt, dtype=np.float64)),
        width_spread=_spread(width_arr) / width_median if width_median > 0 else 0.0,
        bone_spread=bone_spread,
        has_groups=has_groups,
    )


# ------------------------------------------------------------------------------------------------
# rules


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def derive_recipe(stats: DataStats, model: str = "infogcn2") -> Recipe:
    """The configuration values of the rules in the module description, for ``stats``.

    Args:
        stats: The measurements of the training clips.
        model: The registered model the configuration trains; model arguments it does not take
            are left out.
    """
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}

    def put(key: str, value: Any, reason: str) -> None:
        _set(values, key, value)
        reasons[key] = reason

    length = stats.length_percentiles[int(WINDOW_PERCENTILE)]
    window = int(_clamp(8 * math.ceil(length / 8), 16, 64))
    put("data.window", window, f"p{WINDOW_PERCENTILE:g} of the clip lengths is {length:g} frames")
    put("data.sampling", "clip", "every clip is one sample, resampled to the window")
    put("data.p_interval_train", [0.5, 1.0], "random 50-100 % temporal crops")
    put("data.p_interval_val", [0.95], "a fixed centred crop in evaluation")

    put("data.rotation", True, "the body's orientation varies between clips")
    if stats.dims == 3:
        yaw = _clamp(5 * math.ceil((stats.yaw_spread + 15) / 5), 15, 90)
        tilt = _clamp(5 * math.ceil((stats.tilt_spread + 10) / 5), 10, 30)
        put(
            "data.rotation_degrees",
            [tilt, yaw, tilt],
            f"3D: about y the facing spread {stats.yaw_spread:.0f}° + 15°, about x and z the "
            f"spine-tilt spread {stats.tilt_spread:.0f}° + 10°",
        )
        put("data.shear", False, "3D: views differ by rotation, which is augmented exactly")
        put("data.scale_per_axis", True, "3D: proportions differ per axis between people")
    else:
        tilt = _clamp(5 * math.ceil((stats.tilt_spread + 10) / 5), 10, 30)
        put(
            "data.rotation_degrees",
            [tilt],
            f"2D: in-plane, the spine-tilt spread {stats.tilt_spread:.0f}° + 10°",
        )
        shear = round(_clamp(stats.width_spread, 0.1, 0.3), 2)
        put(
            "data.shear",
            True,
            "2D: a turn out of the image plane changes the body's apparent proportions",
        )
        put(
            "data.shear_max",
            shear,
            f"2D: relative spread of the shoulder width {stats.width_spread:.2f}, in [0.1, 0.3]",
        )
        put("data.scale_per_axis", True, "2D: out-of-plane turns narrow one axis only")
    r = round(_clamp(stats.bone_spread, 0.1, 0.25), 2)
    put("data.scale", True, "people differ in size and proportions")
    put(
        "data.scale_range",
        [round(1 - r, 2), round(1 + r, 2)],
        f"relative spread of the bone lengths {stats.bone_spread:.2f}, in [0.1, 0.25]",
    )
    put(
        "data.mirror",
        stats.has_pairs,
        "the layout has left/right pairs" if stats.has_pairs else "the layout has no mirror pairs",
    )
    put("data.translation", False, "clips are centred on the pelvis")
    put("data.jitter", False, "not needed on top of the crops and the geometric augmentation")
    put("data.preprocess.causal", True, "a causal model can run online on the same inputs")
    n = stats.num_clips
    if n < SMALL_DATA:
        put(
            "data.val_fraction",
            0.0,
            f"fewer than {SMALL_DATA} training clips: every clip trains and the last epoch is "
            "kept (a held-out part this small picks epochs by noise; --cv K measures instead)",
        )
    else:
        put(
            "data.val_fraction",
            HOLDOUT,
            "20 % of the training clips (whole groups)"
            if stats.has_groups
            else "20 % of the training clips, stratified",
        )
    limit, channels, depth, dropout, decay, smoothing = next(t for t in SIZE_TIERS if n < t[0])
    tier = f"{n} training clips (< {limit:g})"
    parameters = inspect.signature(model_class(model)).parameters
    accepted = set(parameters)
    put("model.name", model, "the library's default model" if model == "infogcn2" else "given")
    plan = parameters["channels"].default if "channels" in parameters else None
    has_plan = isinstance(plan, Sequence)
    if has_plan:  # a per-block plan: its widths scaled, its depth kept
        put(
            "model.args.channels",
            [max(8, 8 * round(c * channels / REFERENCE_WIDTH / 8)) for c in plan],
            f"{tier}: the model's plan at {channels}/{REFERENCE_WIDTH} of its width",
        )
    for key, value in (
        ("channels", channels),
        ("depth", depth),
        ("head_channels", channels),
        ("decoder_channels", channels),
        ("dropout", dropout),
        ("label_smoothing", smoothing),
    ):
        if key in accepted and not (key == "channels" and has_plan):
            put(f"model.args.{key}", value, tier)
    if "features" in accepted:
        put("model.args.features", ["joint", "velocity"], "positions and their motion")
    put("optim.optimizer", "adamw", "robust to the learning rate across model sizes")
    put("optim.lr", 0.005, "AdamW with batches of 16")
    put("optim.weight_decay", decay, tier)
    put("batch_size", 16, "small batches: more steps on small data")
    steps_per_epoch = max(math.ceil((1 - _get(values, "data.val_fraction")) * n / 16), 1)
    epochs = int(_clamp(math.ceil(TARGET_STEPS / steps_per_epoch), 20, 300))
    put("epochs", epochs, f"about {TARGET_STEPS} steps of {steps_per_epoch} per epoch")
    put("optim.lr_steps", _decay_epochs(epochs), "tenfold decay at 75 % and 92.5 % of the epochs")
    put("optim.lr_decay", 0.1, "tenfold decay")
    put(
        "optim.warmup_epochs",
        float(max(1, math.ceil(60 / steps_per_epoch))),
        "about 60 warm-up steps",
    )
    put("reduce", "mean", "clip scores average every step's")
    put("monitor", "top1", "with a validation part, the kept epoch has the best top-1")
    return Recipe(values, reasons, STREAMS, stats)


# ------------------------------------------------------------------------------------------------
# configuration files


def _decay_epochs(epochs: int) -> list[int]:
    """The epochs of the tenfold decays of a schedule of ``epochs`` epochs."""
    return [round(0.75 * epochs), round(0.925 * epochs)]


def _get(values: Mapping[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node


def _set(values: dict[str, Any], key: str, value: Any) -> None:
    *path, last = key.split(".")
    node = values
    for part in path:
        node = node.setdefault(part, {})
    node[last] = value


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s values over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_training_config(
    path_or_name: str | PathLike,
    overrides: Sequence[str],
    data_root: PathLike,
    *,
    cache_dir: PathLike | None = None,
) -> tuple[TrainConfig, Recipe | None]:
    """A configuration file (or packaged name) with ``overrides``, the recipe merged under it
    when it is ``"auto"`` or says ``recipe: auto``.

    The recipe is derived from the training clips of ``data_root`` (:func:`dataset_stats`,
    :func:`derive_recipe`); every key the file or an override sets takes its value from there.

    Returns:
        The configuration and the :class:`Recipe` (:obj:`None` without one).
    """
    values = {"recipe": AUTO} if str(path_or_name) == AUTO else read_config_file(path_or_name)
    if values.get("recipe") not in (None, AUTO):
        raise ValueError(f"recipe: expected {AUTO!r} or null, got {values.get('recipe')!r}")
    if values.get("recipe") != AUTO:
        return apply_overrides(config_from_dict(values), overrides), None
    base = config_from_dict(values)  # checks the file's keys before the data is read
    override_keys = [item.partition("=")[0].strip() for item in overrides]
    recipe = derive_recipe(
        _training_stats(data_root, base.data, cache_dir),
        model=apply_overrides(
            base, [o for o in overrides if o.startswith("model.name=")]
        ).model.name,
    )
    config = apply_overrides(config_from_dict(_merge(recipe.values, values)), overrides)
    explicit_keys = set(_flatten(values)) | set(override_keys)
    if "epochs" in explicit_keys and "optim.lr_steps" not in explicit_keys:
        # the decays follow the epochs that actually run
        config = apply_overrides(config, [f"optim.lr_steps={_decay_epochs(config.epochs)}"])
    recipe.overridden = [k for k in recipe.reasons if k in explicit_keys]
    return config, recipe


def _training_stats(root: PathLike, data: DataConfig, cache_dir: PathLike | None) -> DataStats:
    from skelgraph.train.data import open_dataset, training_pool

    pool_split = training_pool(root, data, cache_dir=cache_dir)
    causal = {**data.preprocess, "causal": data.preprocess.get("causal", True)}
    dataset = open_dataset(
        root, dataclasses.replace(data, preprocess=causal), split=pool_split, cache_dir=cache_dir
    )
    return dataset_stats(dataset, has_groups=dataset.clip_groups is not None)


def save_recipe(recipe: Recipe, config: TrainConfig, path: PathLike) -> None:
    """Writes :meth:`Recipe.describe` of ``config`` to ``path`` (atomically)."""
    with atomic_write(Path(path), "w") as f:
        f.write(recipe.describe(config) + "\n")
