"""A checkpoint and the data its model is evaluated on: the evaluation settings of its meta
(:func:`evaluation_config`), the folder sampled as the model expects (:func:`checkpoint_folder`),
and whether a dataset fits the model (:func:`check_compatible`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skelgraph.data import SkeletonFolder
from skelgraph.layouts import Layout, get_layout
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import TrainConfig, config_from_dict
from skelgraph.utils import PathLike

__all__ = ["check_compatible", "checkpoint_folder", "evaluation_config"]


def evaluation_config(
    meta: Mapping[str, Any],
    *,
    batch_size: int = 64,
    precision: str = "auto",
    device: str = "auto",
    limit: int | None = None,
) -> TrainConfig:
    """A training config carrying the sample settings of a checkpoint's meta (window,
    preprocessing, evaluation crop, sampling, ``reduce``) and the given evaluation options: what
    :func:`~skelgraph.train.evaluate.split_predictor` needs to evaluate the checkpoint's model as
    it was trained to be evaluated."""
    inference = meta.get("inference", {})
    data = {"window": meta["window"], "preprocess": meta.get("preprocess", {})}
    if "p_interval" in inference:
        data["p_interval_val"] = inference["p_interval"]
    data.update({k: inference[k] for k in ("sampling", "stride") if k in inference})
    return config_from_dict(
        {
            "data": data,
            "batch_size": batch_size,
            "precision": precision,
            "device": device,
            "limit": limit,
            "reduce": inference.get("reduce", "mean"),
        }
    )


def checkpoint_folder(
    root: PathLike, meta: Mapping[str, Any], *, cache_dir: PathLike | None = None
) -> SkeletonFolder:
    """A :class:`~skelgraph.data.SkeletonFolder` at ``root`` sampled as the checkpoint's model is
    evaluated: its classes, window, preprocessing and ``meta["inference"]`` sampling."""
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
