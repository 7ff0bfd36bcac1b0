"""Joint layouts: named joint sets with bones, centre, torso, mirror pairs and body parts.

A :class:`Layout` describes how the ``V`` axis of a keypoint array ``(T, V, C)`` is organised. The
built-in layouts (``coco17``, ``penn13``, ``openpose18``, ``ntu25``) are registered at import;
users register their own with :func:`register_layout` and convert between layouts with
:func:`map_keypoints` (which names the joints a mapping cannot fill).
"""

from skelgraph.layouts import builtin as builtin  # registers the built-in layouts
from skelgraph.layouts.layout import Layout, mirror_pairs
from skelgraph.layouts.mapping import (
    DERIVATIONS,
    SYNONYMS,
    MappingWarning,
    check_mappable,
    keypoint_mapping,
    map_keypoints,
    mapping_gaps,
)
from skelgraph.layouts.registry import get_layout, list_layouts, register_layout

__all__ = [
    "DERIVATIONS",
    "SYNONYMS",
    "Layout",
    "MappingWarning",
    "check_mappable",
    "get_layout",
    "keypoint_mapping",
    "list_layouts",
    "map_keypoints",
    "mapping_gaps",
    "mirror_pairs",
    "register_layout",
]
