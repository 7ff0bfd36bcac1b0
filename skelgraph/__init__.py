"""skelgraph: skeleton-based action recognition and motion forecasting with PyTorch Geometric."""

from skelgraph.clip import SkeletonClip
from skelgraph.explain import to_networkx
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
