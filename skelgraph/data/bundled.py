"""Example clips shipped with the package: ``skelgraph/data/examples/<dataset>/<class>.npz``.

One clip per class of a dataset's test split, for demonstrations and smoke tests (see
``skelgraph/data/examples/CREDITS.md`` for their origin and licence)::

    from skelgraph import SkeletonClip
    from skelgraph.data import example_clips

    clip = SkeletonClip.load(example_clips("penn_action")[0])   # baseball_pitch, penn13
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["example_clips", "example_datasets"]


def _examples_dir() -> Path:
    return Path(str(importlib.resources.files("skelgraph.data").joinpath("examples")))


def example_datasets() -> list[str]:
    """The datasets with shipped example clips (folders of ``skelgraph/data/examples``), sorted."""
    root = _examples_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.npz")))


def example_clips(dataset: str = "penn_action") -> list[Path]:
    """The shipped example clips of ``dataset`` (``.npz``, one per class, named after the class),
    sorted by file name.

    Raises:
        ValueError: naming the known datasets when ``dataset`` has no example clips.
    """
    known = example_datasets()
    if dataset not in known:
        raise ValueError(
            f"example_clips: dataset: expected one of {known}, got {dataset!r} "
            f"(no .npz files in {_examples_dir() / dataset})"
        )
    return sorted((_examples_dir() / dataset).glob("*.npz"))
