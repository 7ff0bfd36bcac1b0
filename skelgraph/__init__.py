"""skelgraph: skeleton-based action recognition and motion forecasting with PyTorch Geometric."""

from typing import Any

from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout, get_layout, list_layouts, map_keypoints, register_layout

__version__ = "0.1.0"

__all__ = [
    "Layout",
    "SkeletonClip",
    "__version__",
    "get_layout",
    "list_layouts",
    "map_keypoints",
    "register_layout",
    "to_networkx",
]


def __getattr__(name: str) -> Any:
    # ``to_networkx`` needs torch and PyG, imported on first use so that importing the package
    # (and so every command, e.g. ``skelgraph serve``, which must answer at once) stays fast
    if name == "to_networkx":
        from skelgraph.explain import to_networkx

        return to_networkx
    raise AttributeError(f"module 'skelgraph' has no attribute {name!r}")
