"""A checkpoint and the data its model is evaluated on: the folder sampled as the model expects
(:func:`checkpoint_folder`), and whether a dataset fits the model (:func:`check_compatible`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skelgraph.data import SkeletonFolder
from skelgraph.layouts import Layout, get_layout
from skelgraph.preprocess import PreprocessConfig
from skelgraph.utils import PathLike

__all__ = ["check_compatible", "checkpoint_folder"]


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
