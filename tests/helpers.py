"""What several test modules build alike: a penn13 pose, small untrained checkpoints and a small
skeleton folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skelgraph.clip import SkeletonClip
from skelgraph.data import write_skeleton_folder
from skelgraph.models import create
from skelgraph.models.checkpoint import make_meta, save_checkpoint
from skelgraph.preprocess import PreprocessConfig

#: A penn13 person standing, :obj:`(13, 2)` joint offsets in pixels from the middle of the body
#: (y down): head, shoulders, elbows, wrists, hips, knees, ankles (left before right); 140 tall.
PENN13_POSE = np.array(
    [
        [0, -60],
        [-20, -40],
        [20, -40],
        [-30, -15],
        [30, -15],
        [-35, 10],
        [35, 10],
        [-12, 10],
        [12, 10],
        [-14, 45],
        [14, 45],
        [-16, 80],
        [16, 80],
    ],
    dtype=np.float32,
)


#: the smallest InfoGCN++ the service and file tests serve: fast to load and to step
TINY_INFOGCN2: dict[str, Any] = {
    "channels": 16,
    "depth": 1,
    "head_channels": 16,
    "decoder_channels": 8,
}


def write_infogcn2_checkpoint(
    path: Path, classes: Sequence[str], *, window: int = 16, **model_args: Any
) -> Path:
    """Saves an untrained InfoGCN++ for ``penn13`` (keypoints x, y, confidence) with ``model_args``
    and default preprocessing to ``path``."""
    return write_model_checkpoint(path, "infogcn2", classes, window=window, **model_args)


def write_model_checkpoint(
    path: Path, name: str, classes: Sequence[str], *, window: int = 16, **model_args: Any
) -> Path:
    """Saves an untrained registered model ``name`` for ``penn13`` (keypoints x, y, confidence)
    with ``model_args`` and default preprocessing to ``path``."""
    model = create(name, num_classes=len(classes), layout="penn13", **model_args)
    meta = make_meta(
        model=name,
        model_args=model.config,
        classes=list(classes),
        layout="penn13",
        in_channels=3,
        window=window,
        preprocess=PreprocessConfig().to_dict(),
    )
    save_checkpoint(path, model, meta)
    return path


#: the classes of :func:`synthetic_folder`
CLASSES = ("wave", "jump", "spin")


def synthetic_folder(
    root: Path,
    layout: str,
    joints: int,
    seed: int = 0,
    per_class: int = 6,
    groups: int | None = None,
) -> Path:
    """Three classes of ``per_class`` clips (the last third test, the others train), each a
    class-specific joint motion plus noise; with ``groups``, clip ``i`` of every class belongs to
    group ``f"subject{i % groups}"`` (the ``group`` column of ``labels.csv``)."""
    rng = np.random.default_rng(seed)
    items = []
    for k, name in enumerate(CLASSES):
        for i in range(per_class):
            frames = int(rng.integers(16, 30))
            t = np.linspace(0, 2 * np.pi, frames)[:, None]
            base = rng.normal(size=(1, joints, 2)) * 0.3
            motion = np.stack([np.sin((k + 1) * t), np.cos((k + 1) * t)], -1) * (k + 1) * 0.2
            xy = base + motion + rng.normal(size=(frames, joints, 2)) * 0.02
            kp = np.concatenate([xy, np.ones((frames, joints, 1))], -1).astype(np.float32)
            clip = SkeletonClip(kp, layout, source=f"{name}_{i}")
            split = "train" if i < per_class - per_class // 3 else "test"
            group = () if groups is None else (f"subject{i % groups}",)
            items.append((clip, name, split, *group))
    write_skeleton_folder(root, items, progress=False)
    return root
