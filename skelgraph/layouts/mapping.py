"""Mapping keypoints between layouts by joint name.

Names are first canonicalised (``shoulder_left`` becomes ``left_shoulder``), then a destination
joint takes, in order: the source joint of the same canonical name; a synonym (:data:`SYNONYMS`);
the mean of the joints of a derivation (:data:`DERIVATIONS`, recursively). Anything else is absent.

A mapping that leaves destination joints without a source, or leaves source joints unused whose
names are outside the known vocabulary (the built-in layouts' joints, synonyms and derivations:
most likely a name the mapping does not understand), warns with a :class:`MappingWarning` that
names them (:func:`mapping_gaps`); ``strict=True`` makes it an error.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping

import numpy as np

from skelgraph.layouts.builtin import COCO17, NTU25, OPENPOSE18, PENN13
from skelgraph.layouts.layout import Layout, _side
from skelgraph.layouts.registry import get_layout

__all__ = [
    "DERIVATIONS",
    "SYNONYMS",
    "MappingWarning",
    "check_mappable",
    "keypoint_mapping",
    "map_keypoints",
    "mapping_gaps",
]

#: destination canonical name -> source names that stand for the same point (Kinect v1 names
#: such as ``hip_center`` included)
SYNONYMS: dict[str, tuple[str, ...]] = {
    "head": ("nose",),
    "nose": ("head",),
    "pelvis": ("mid_hip", "spine_base", "hip_center"),
    "mid_hip": ("pelvis", "spine_base", "hip_center"),
    "spine_base": ("pelvis", "mid_hip", "hip_center"),
    "spine_mid": ("spine",),
    "neck": ("spine_shoulder", "shoulder_center"),
    "spine_shoulder": ("neck", "shoulder_center"),
}
#: destination canonical name -> joints whose mean it is, when the source lacks it
DERIVATIONS: dict[str, tuple[str, ...]] = {
    "neck": ("left_shoulder", "right_shoulder"),
    "spine_shoulder": ("left_shoulder", "right_shoulder"),
    "pelvis": ("left_hip", "right_hip"),
    "mid_hip": ("left_hip", "right_hip"),
    "spine_base": ("left_hip", "right_hip"),
    "spine_mid": ("spine_shoulder", "spine_base"),
}


def _canonical(joint: str) -> str:
    side = _side(joint.lower())
    return joint.lower() if side is None else f"{side[0]}_{side[1]}"


def _resolve(joint: str, source: Mapping[str, int], depth: int = 0) -> dict[int, float]:
    """Source index -> weight for the canonical joint name :obj:`joint` (empty when absent)."""
    if joint in source:
        return {source[joint]: 1.0}
    for synonym in SYNONYMS.get(joint, ()):
        if synonym in source:
            return {source[synonym]: 1.0}
    parts = DERIVATIONS.get(joint, ())
    resolved = [_resolve(p, source, depth + 1) for p in parts] if depth < 4 else []
    if not resolved or not all(resolved):
        return {}
    weights: dict[int, float] = {}
    for r in resolved:
        for i, w in r.items():
            weights[i] = weights.get(i, 0.0) + w / len(resolved)
    return weights


def keypoint_mapping(src: str | Layout, dst: str | Layout) -> list[dict[int, float]]:
    """For each destination joint, the source joint indices and weights averaged to form it.

    An empty dict marks a destination joint with no source. See :func:`map_keypoints`.
    """
    src, dst = get_layout(src), get_layout(dst)
    source = {_canonical(j): i for i, j in enumerate(src.joints)}
    return [_resolve(_canonical(j), source) for j in dst.joints]


class MappingWarning(UserWarning):
    """A keypoint mapping leaves joints without a source or drops joints it does not know."""


@functools.lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    """The canonical joint names the mapping knows: the built-in layouts' joints, the synonyms
    and the derivations."""
    layouts = (COCO17, PENN13, OPENPOSE18, NTU25)
    names = {_canonical(j) for layout in layouts for j in layout.joints}
    for table in (SYNONYMS, DERIVATIONS):
        names.update(table)
        names.update(n for values in table.values() for n in values)
    return frozenset(names)


def mapping_gaps(src: str | Layout, dst: str | Layout) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What a mapping from :obj:`src` to :obj:`dst` cannot carry over.

    Args:
        src (str or Layout): The layout of the keypoints.
        dst (str or Layout): The layout they are mapped to.

    Returns:
        tuple[tuple[str, ...], tuple[str, ...]]: The joints of :obj:`dst` without a source (they
        get confidence 0), and the joints of :obj:`src` that no destination joint uses and whose
        names are outside the known vocabulary (dropped, though a name the mapping knows might
        have carried them over).
    """
    return _gaps(get_layout(src), get_layout(dst))


@functools.lru_cache(maxsize=64)
def _gaps(src: Layout, dst: Layout) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """:func:`mapping_gaps` of two layouts, worked out once per pair (a stream maps every
    frame)."""
    mapping = keypoint_mapping(src, dst)
    unfilled = tuple(j for j, sources in zip(dst.joints, mapping, strict=True) if not sources)
    used = {i for sources in mapping for i in sources}
    vocabulary = _vocabulary()
    unknown = tuple(
        j for i, j in enumerate(src.joints) if i not in used and _canonical(j) not in vocabulary
    )
    return unfilled, unknown


def _check_gaps(src: Layout, dst: Layout, strict: bool) -> None:
    """Warns (or raises with ``strict``) when :func:`mapping_gaps` finds any."""
    unfilled, unknown = _gaps(src, dst)
    if not unfilled and not unknown:
        return
    parts = []
    if unfilled:
        parts.append(
            f"{len(unfilled)} of its {dst.num_joints} joints have no source and get "
            f"confidence 0 ({', '.join(unfilled)})"
        )
    if unknown:
        parts.append(
            f"source joints {', '.join(unknown)} are not names the mapping knows and are "
            "dropped (rename them to built-in joint names, e.g. those of ntu25 or coco17)"
        )
    message = f"mapping layout {src.name!r} to {dst.name!r}: {'; '.join(parts)}"
    if strict:
        raise ValueError(message)
    warnings.warn(message, MappingWarning, stacklevel=3)


def check_mappable(src: str | Layout, dst: str | Layout, *, target: str = "layout") -> None:
    """Checks that keypoints in layout :obj:`src` carry enough of layout :obj:`dst` to stand for it.

    A mapped skeleton whose joints are mostly absent (confidence 0) says little about the pose, so
    at most half of the destination joints may lack a source in :func:`keypoint_mapping`.

    Args:
        src (str or Layout): The layout of the keypoints.
        dst (str or Layout): The layout they are mapped to.
        target (str, optional): What :obj:`dst` is, for the message, e.g. ``"the model's layout"``.
            (default: ``"layout"``)

    Raises:
        ValueError: When more than half of the joints of :obj:`dst` have no source; the message
            names them.
    """
    src, dst = get_layout(src), get_layout(dst)
    mapping = keypoint_mapping(src, dst)
    missing = [joint for joint, sources in zip(dst.joints, mapping, strict=True) if not sources]
    if 2 * len(missing) > dst.num_joints:
        raise ValueError(
            f"layout {src.name!r} cannot be mapped to {target} {dst.name!r}: {len(missing)} of "
            f"its {dst.num_joints} joints have no source ({', '.join(missing)})"
        )


@functools.lru_cache(maxsize=64)
def _mapping_arrays(src: Layout, dst: Layout) -> tuple[np.ndarray, np.ndarray]:
    """:func:`keypoint_mapping` as arrays :obj:`(V_dst, K)`: source indices and their weights (0
    for unused entries), made once per pair of layouts (read-only)."""
    mapping = keypoint_mapping(src, dst)
    K = max(1, max(len(m) for m in mapping))
    index = np.zeros((dst.num_joints, K), dtype=np.int64)
    weight = np.zeros((dst.num_joints, K), dtype=np.float64)
    for v, m in enumerate(mapping):
        index[v, : len(m)] = list(m)
        weight[v, : len(m)] = list(m.values())
    index.flags.writeable = weight.flags.writeable = False
    return index, weight


def map_keypoints(
    keypoints: np.ndarray, src: str | Layout, dst: str | Layout, *, strict: bool = False
) -> np.ndarray:
    r"""Re-orders keypoints from layout :obj:`src` to layout :obj:`dst` by joint name.

    Names match after canonicalisation (``shoulder_left`` equals ``left_shoulder``). A destination
    joint the source lacks is taken from a synonym (:data:`SYNONYMS`: ``head`` ↔ ``nose``,
    ``pelvis``/``mid_hip``/``spine_base``, ``neck`` ↔ ``spine_shoulder``) or derived as the mean
    of other joints (:data:`DERIVATIONS`: ``neck`` = mean of the shoulders, ``pelvis``/``mid_hip``
    = mean of the hips, ...); a derived joint's confidence is the minimum of its sources'. A joint
    with no source gets coordinates 0 and confidence 0. The confidence is the last channel.

    Joints the mapping cannot fill, and source joints it drops because it does not know their
    names, are named in a :class:`MappingWarning` (:func:`mapping_gaps`).

    Args:
        keypoints (np.ndarray): Keypoints of shape ``(T, V_src, C)``, ``C >= 2`` (e.g.
            ``x, y, conf`` or ``x, y, z, conf``).
        src (str or Layout): The layout of :obj:`keypoints`.
        dst (str or Layout): The target layout.
        strict (bool, optional): Raise instead of warning. (default: :obj:`False`)

    Returns:
        np.ndarray: Keypoints of shape ``(T, V_dst, C)`` in the input's floating dtype (float32
        for integer input).

    Raises:
        ValueError: For keypoints of the wrong shape, and with :obj:`strict` for the joints of a
            :class:`MappingWarning`.
    """
    src, dst = get_layout(src), get_layout(dst)
    keypoints = np.asarray(keypoints)
    if keypoints.ndim != 3 or keypoints.shape[1] != src.num_joints or keypoints.shape[2] < 2:
        raise ValueError(
            f"map_keypoints: keypoints: expected shape (T, {src.num_joints}, C>=2) for layout "
            f"{src.name!r}, got {keypoints.shape}"
        )
    _check_gaps(src, dst, strict)
    if not np.issubdtype(keypoints.dtype, np.floating):
        keypoints = keypoints.astype(np.float32)
    index, weight = _mapping_arrays(src, dst)
    weight = weight.astype(keypoints.dtype, copy=False)
    used = weight > 0  # (V_dst, K)
    gathered = keypoints[:, index]  # (T, V_dst, K, C)
    coords = np.where(used[None, :, :, None], gathered[..., :-1] * weight[None, :, :, None], 0)
    conf = np.where(used[None], gathered[..., -1], np.inf).min(axis=2)
    conf = np.where(used.any(axis=1)[None], conf, 0)
    out = np.concatenate([coords.sum(axis=2), conf[..., None]], axis=-1)
    return out.astype(keypoints.dtype, copy=False)
