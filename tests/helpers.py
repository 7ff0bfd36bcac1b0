"""What several test modules build alike: a penn13 pose and small untrained checkpoints."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

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


def write_infogcn2_checkpoint(
    path: Path, classes: Sequence[str], *, window: int = 16, **model_args: Any
) -> Path:
    """Saves an untrained InfoGCN++ for ``penn13`` (keypoints x, y, confidence) with ``model_args``
    and default preprocessing to ``path``."""
    model = create("infogcn2", num_classes=len(classes), layout="penn13", **model_args)
    meta = make_meta(
        model="infogcn2",
        model_args=model.config,
        classes=list(classes),
        layout="penn13",
        in_channels=3,
        window=window,
        preprocess=PreprocessConfig().to_dict(),
    )
    save_checkpoint(path, model, meta)
    return path
