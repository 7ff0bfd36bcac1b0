r"""Skeleton preprocessing: confidence-aware interpolation, normalisation, resampling and windows.

Every function takes keypoints of shape :obj:`(T, V, C)` with the confidence in the last channel
(:obj:`C = 3` for 2D, :obj:`C = 4` for 3D), returns new :obj:`float32` arrays (the input is never
modified) and is vectorised over frames and joints. A joint is *valid* in a frame when its
confidence is at least the threshold :math:`\tau` and its coordinates are finite.

The default pipeline looks at the whole clip (interpolation between valid frames, one median
torso length). The causal pipeline (:obj:`PreprocessConfig(causal=True)`) makes frame :math:`t`
from frames :math:`\le t` only, so a live stream can be preprocessed frame by frame with
:class:`CausalPreprocessor` into exactly what :func:`preprocess` gives for the recorded clip:
training on causally preprocessed clips and running online then see the same inputs.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout, get_layout

__all__ = [
    "CausalPreprocessor",
    "PreprocessConfig",
    "frame_normalization",
    "interpolate_missing",
    "normalize",
    "pad",
    "preprocess",
    "resample",
    "sliding_windows",
]


@dataclass(frozen=True)
class PreprocessConfig:
    r"""Settings of :func:`preprocess`.

    Args:
        confidence_threshold (float, optional): The validity threshold :math:`\tau \in [0, 1]`.
            (default: :obj:`0.2`)
        eps (float, optional): Lower bound of the scale divisor, positive. (default: :obj:`1e-6`)
        center (bool, optional): Subtract the first valid pelvis. (default: :obj:`True`)
        scale (bool, optional): Divide by the median torso length. (default: :obj:`True`)
        interpolate (bool, optional): Fill invalid frames by :func:`interpolate_missing`
            (forward-filled instead when :obj:`causal`). (default: :obj:`True`)
        causal (bool, optional): Make every frame from the frames up to it only: invalid frames
            take the joint's last valid value (coordinates 0 before its first valid frame, the
            confidence kept), the origin is the first valid pelvis so far and the divisor the
            median torso length over the valid frames so far (with the fallbacks of
            :func:`normalize`, applied to the frames so far). Equal, frame by frame, to
            :class:`CausalPreprocessor`. (default: :obj:`False`)
    """

    confidence_threshold: float = 0.2
    eps: float = 1e-6
    center: bool = True
    scale: bool = True
    interpolate: bool = True
    causal: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ValueError(
                "PreprocessConfig.confidence_threshold: expected a value in [0, 1], "
                f"got {self.confidence_threshold!r}"
            )
        if not self.eps > 0.0:
            raise ValueError(f"PreprocessConfig.eps: expected a positive value, got {self.eps!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict (``PreprocessConfig(**d)`` rebuilds it)."""
        return asdict(self)


def interpolate_missing(kp: np.ndarray, threshold: float = 0.2) -> np.ndarray:
    r"""Fills invalid frames of every joint by linear interpolation in time.

    For joint :math:`v` and an invalid frame :math:`t` between the valid frames :math:`p < t < n`
    closest to it,

    .. math::
        \mathbf{x}_{t,v} = \mathbf{x}_{p,v}
        + \frac{t - p}{n - p} (\mathbf{x}_{n,v} - \mathbf{x}_{p,v})

    for every coordinate. Frames before the first valid frame take its value, frames after the last
    valid frame take the last valid value. A joint without any valid frame gets coordinates 0 and
    confidence 0. Valid frames are returned unchanged, and the confidence of filled frames is kept
    as it was (below :math:`\tau`), so later steps still see them as invalid. Non-finite
    coordinates (``NaN`` for a missing joint) always count as invalid and are replaced.

    Args:
        kp (numpy.ndarray): Keypoints of shape :obj:`(T, V, C)`.
        threshold (float, optional): The validity threshold :math:`\tau`. (default: :obj:`0.2`)

    Returns:
        numpy.ndarray: Keypoints of shape :obj:`(T, V, C)`, :obj:`float32`.
    """
    kp = _as_keypoints(kp)
    num_frames, num_joints = kp.shape[:2]
    valid = _valid(kp, threshold)
    frames = np.arange(num_frames)[:, None]
    # index of the closest valid frame at or before / at or after every frame (-1 / T when none)
    prev = np.maximum.accumulate(np.where(valid, frames, -1), axis=0)
    nxt = np.minimum.accumulate(np.where(valid, frames, num_frames)[::-1], axis=0)[::-1]
    lo = np.where(prev < 0, nxt, prev).clip(0, num_frames - 1)
    hi = np.where(nxt >= num_frames, prev, nxt).clip(0, num_frames - 1)
    span = hi - lo
    weight = np.where(span > 0, (frames - lo) / np.maximum(span, 1), 0.0)[..., None]
    joints = np.arange(num_joints)[None, :]
    coords = kp[..., :-1].astype(np.float64)
    start, end = coords[lo, joints], coords[hi, joints]
    filled = (start + weight * (end - start)).astype(np.float32)

    out = kp.copy()
    out[..., :-1] = np.where(valid[..., None], kp[..., :-1], filled)
    never = ~valid.any(axis=0)
    out[:, never] = 0.0
    return out


def normalize(
    kp: np.ndarray,
    layout: Layout | str,
    threshold: float = 0.2,
    eps: float = 1e-6,
    *,
    center: bool = True,
    scale: bool = True,
) -> tuple[np.ndarray, np.ndarray, float]:
    r"""Centres coordinates on the first valid pelvis and divides them by the median torso length.

    With the pelvis :math:`\mathbf{p}_t` the mean of the layout's ``center`` joints, the torso
    length :math:`\ell_t = \lVert \mathbf{u}_t - \mathbf{l}_t \rVert_2` between the means of the
    joints in ``layout.torso[0]`` (:math:`\mathbf{u}_t`, mid-shoulders) and ``layout.torso[1]``
    (:math:`\mathbf{l}_t`, pelvis),

    .. math::
        \mathbf{x}'_{t,v} = \frac{\mathbf{x}_{t,v} - \mathbf{p}_{t_0}}
        {\max(\operatorname{median}_{t \in \mathcal{T}} \ell_t, \epsilon)}

    where :math:`t_0` is the first frame whose centre joints are all valid and :math:`\mathcal{T}`
    the frames whose torso joints are all valid. The confidence channel is unchanged.

    When no frame has all the joints of a group valid (e.g. side views that never show both hips),
    the frames with at least one valid joint in each group are used instead, each point being the
    mean of its valid joints. Without even such a frame the origin falls back to 0, and the divisor
    to the median over frames of the longest valid bone (close-up views that never show the torso;
    on Penn Action clips that do show it, the torso is 0.93 of that length at the median), or to 1
    when no bone is valid either. A disabled step (:obj:`center=False`, :obj:`scale=False`) is
    skipped.

    Args:
        kp (numpy.ndarray): Keypoints of shape :obj:`(T, V, C)`.
        layout (Layout or str): The joint layout, with :obj:`V` joints.
        threshold (float, optional): The validity threshold :math:`\tau`. (default: :obj:`0.2`)
        eps (float, optional): Lower bound :math:`\epsilon` of the divisor. (default: :obj:`1e-6`)
        center (bool, optional): Subtract the origin. (default: :obj:`True`)
        scale (bool, optional): Divide by the torso length. (default: :obj:`True`)

    Returns:
        (numpy.ndarray, numpy.ndarray, float): The keypoints :obj:`(T, V, C)` (:obj:`float32`), the
        origin :math:`\mathbf{p}_{t_0}` of shape :obj:`(C - 1,)` and the divisor, such that
        ``kp[..., :-1] == out[..., :-1] * divisor + origin``.
    """
    kp = _as_keypoints(kp)
    layout = get_layout(layout)
    _check_joints(kp, layout)
    valid = _valid(kp, threshold)
    coords = kp[..., :-1].astype(np.float64)
    origin = np.zeros(coords.shape[-1])
    if center:
        pelvis, found = _anchor(coords, valid, [layout.center])
        if found.any():
            origin = pelvis[0][found.argmax()]
    divisor = 1.0
    if scale:
        (upper, lower), found = _anchor(coords, valid, layout.torso)
        if found.any():
            length = np.linalg.norm(upper[found] - lower[found], axis=-1)
            divisor = max(float(np.median(length)), eps)
        else:
            divisor = max(_longest_bone(coords, valid, layout), eps)
    out = kp.copy()
    out[..., :-1] = (coords - origin) / divisor
    return out, origin.astype(np.float32), divisor


def _longest_bone(coords: np.ndarray, valid: np.ndarray, layout: Layout) -> float:
    """Median over frames of the longest bone whose two joints are valid; 1 when there is none."""
    if not layout.bones:
        return 1.0
    child, parent = np.asarray(layout.bones).T
    length = np.linalg.norm(coords[:, child] - coords[:, parent], axis=-1)
    length = np.where(valid[:, child] & valid[:, parent], length, 0.0).max(axis=1)
    return float(np.median(length[length > 0])) if (length > 0).any() else 1.0


def preprocess(
    kp_or_clip: np.ndarray | SkeletonClip,
    layout: Layout | str | None = None,
    config: PreprocessConfig | None = None,
) -> np.ndarray:
    r"""Runs the preprocessing pipeline: :func:`interpolate_missing`, then :func:`normalize`.

    Coordinates that carry no information are then set to 0 (the origin): those of joints without
    any valid frame when interpolating, and non-finite ones otherwise. The output is therefore
    invariant to translating and uniformly scaling the input coordinates (when the clip has a valid
    pelvis and torso).

    Args:
        kp_or_clip (numpy.ndarray or SkeletonClip): Keypoints of shape :obj:`(T, V, C)`, or a clip.
        layout (Layout or str, optional): The joint layout; required for an array, and must match
            the clip's layout for a clip. (default: :obj:`None`)
        config (PreprocessConfig, optional): The settings. (default: :obj:`PreprocessConfig()`)

    Returns:
        numpy.ndarray: Keypoints of shape :obj:`(T, V, C)`, :obj:`float32`.
    """
    config = config if config is not None else PreprocessConfig()
    kp, layout = _keypoints_and_layout(kp_or_clip, layout)
    if config.causal:
        return _causal_preprocess(kp, layout, config)
    threshold = config.confidence_threshold
    if config.interpolate:
        uninformative = ~_valid(kp, threshold).any(axis=0, keepdims=True)
        kp = interpolate_missing(kp, threshold)
    else:
        uninformative = ~np.isfinite(kp[..., :-1]).all(axis=-1)
    out, _, _ = normalize(
        kp, layout, threshold, config.eps, center=config.center, scale=config.scale
    )
    coords = out[..., :-1]
    coords[np.broadcast_to(uninformative, out.shape[:2])] = 0.0
    return out


def _keypoints_and_layout(
    kp_or_clip: np.ndarray | SkeletonClip, layout: Layout | str | None
) -> tuple[np.ndarray, Layout]:
    if isinstance(kp_or_clip, SkeletonClip):
        if layout is not None and get_layout(layout).name != kp_or_clip.layout.name:
            raise ValueError(
                f"layout: expected the clip's layout {kp_or_clip.layout.name!r} or None, "
                f"got {get_layout(layout).name!r}"
            )
        return _as_keypoints(kp_or_clip.keypoints), kp_or_clip.layout
    if layout is None:
        raise ValueError("layout: expected a Layout or layout name for a keypoint array, got None")
    kp, layout = _as_keypoints(kp_or_clip), get_layout(layout)
    _check_joints(kp, layout)
    return kp, layout


def _check_joints(kp: np.ndarray, layout: Layout) -> None:
    if kp.shape[1] != layout.num_joints:
        raise ValueError(
            f"kp: expected {layout.num_joints} joints for layout {layout.name!r}, got {kp.shape[1]}"
        )


def frame_normalization(
    kp_or_clip: np.ndarray | SkeletonClip,
    layout: Layout | str | None = None,
    config: PreprocessConfig | None = None,
) -> tuple[np.ndarray, float]:
    r"""The origin and divisor with which :func:`preprocess` normalises the **last** frame of a
    clip: its valid coordinates come out as
    :math:`\mathbf{x}' = (\mathbf{x} - \mathbf{o}) / d`.

    With ``config.causal`` they are the running statistics of the frames so far (what
    :class:`CausalPreprocessor` holds after the last frame), otherwise those of the whole clip
    (:func:`normalize`); :math:`\mathbf{o} = 0` without ``center``, :math:`d = 1` without
    ``scale``. Frames that follow a clip can so be expressed in its coordinates, e.g. the
    future poses a forecast from the clip is compared with, without their entering the
    statistics.

    Args:
        kp_or_clip, layout, config: As for :func:`preprocess`.

    Returns:
        (numpy.ndarray, float): :math:`\mathbf{o}` :obj:`(C - 1,)` (:obj:`float64`) and
        :math:`d`.
    """
    config = config if config is not None else PreprocessConfig()
    kp, layout = _keypoints_and_layout(kp_or_clip, layout)
    if config.causal:
        _, _, origin, divisor = _causal_statistics(kp, layout, config)
        return origin[-1], float(divisor[-1])
    _, origin, divisor = normalize(
        kp,
        layout,
        config.confidence_threshold,
        config.eps,
        center=config.center,
        scale=config.scale,
    )
    return origin.astype(np.float64), divisor


def _causal_preprocess(kp: np.ndarray, layout: Layout, config: PreprocessConfig) -> np.ndarray:
    """:func:`preprocess` with ``config.causal``: every frame from the frames up to it."""
    coords, uninformative, origin, divisor = _causal_statistics(kp, layout, config)
    return _normalised(kp, coords, origin[:, None], divisor[:, None, None], uninformative)


def _causal_statistics(
    kp: np.ndarray, layout: Layout, config: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The causal pipeline's filled coordinates :obj:`(T, V, C - 1)`, uninformative joints
    :obj:`(T, V)`, and every frame's origin :obj:`(T, C - 1)` and divisor :obj:`(T,)`."""
    valid = _valid(kp, config.confidence_threshold)
    coords = kp[..., :-1].astype(np.float64)
    if config.interpolate:
        frames = np.arange(kp.shape[0])[:, None]
        last = np.maximum.accumulate(np.where(valid, frames, -1), axis=0)  # last valid frame
        coords = coords[last.clip(0), np.arange(kp.shape[1])[None, :]]
        uninformative = last < 0
    else:
        uninformative = ~np.isfinite(coords).all(axis=-1)
    statistics = _RunningStatistics(config)
    origin = np.zeros((kp.shape[0], coords.shape[-1]))
    divisor = np.ones(kp.shape[0])
    for t, frame in enumerate(_FrameMeasures(layout)(coords, valid)):
        origin[t], divisor[t] = statistics.update(*frame)
    return coords, uninformative, origin, divisor


def _normalised(
    kp: np.ndarray,
    coords: np.ndarray,
    origin: np.ndarray,
    divisor: np.ndarray | float,
    uninformative: np.ndarray,
) -> np.ndarray:
    """``kp`` with the coordinates ``(coords - origin) / divisor``, 0 where uninformative."""
    out = kp.copy()
    out[..., :-1] = np.where(uninformative[..., None], 0.0, (coords - origin) / divisor)
    return out


class _FrameMeasures:
    """What the causal normalisation needs from every frame of a layout, vectorised over frames.

    Called on coordinates :obj:`(T, V, D)` (float64) and validity :obj:`(T, V)`, it yields per
    frame: the pelvis, whether its joints are all / some valid, the torso length, whether its
    joints are all / some valid (each end has a valid joint), and the longest valid bone (0 for
    none). The means are over the valid joints of each group, as in :func:`normalize`.
    """

    def __init__(self, layout: Layout) -> None:
        groups = [layout.center, *layout.torso]  # pelvis, mid-shoulders, torso lower end
        self.members = np.zeros((len(groups), layout.num_joints), dtype=bool)
        for g, joints in enumerate(groups):
            self.members[g, list(joints)] = True
        self.sizes = self.members.sum(axis=1)
        bones = np.asarray(layout.bones, dtype=np.intp).reshape(-1, 2)
        self.child, self.parent = bones[:, 0], bones[:, 1]

    def __call__(
        self, coords: np.ndarray, valid: np.ndarray, bones: bool = True
    ) -> zip[tuple[Any, ...]]:
        """``bones=False`` skips the bone lengths (0 for every frame)."""
        ok = valid[:, None, :] & self.members  # (T, 3, V)
        count = ok.sum(axis=2)
        known = np.where(valid[..., None], coords, 0.0)
        means = (ok @ known) / np.maximum(count, 1)[..., None]  # (T, 3, D)
        complete, partial = count == self.sizes, count > 0
        torso = np.sqrt(np.square(means[:, 1] - means[:, 2]).sum(axis=-1))
        bone = np.zeros(len(coords))
        if bones and self.child.size:
            length = np.sqrt(np.square(known[:, self.child] - known[:, self.parent]).sum(axis=-1))
            bone = np.where(valid[:, self.child] & valid[:, self.parent], length, 0.0).max(axis=1)
        return zip(
            means[:, 0],
            complete[:, 0],
            partial[:, 0],
            torso,
            complete[:, 1] & complete[:, 2],
            partial[:, 1] & partial[:, 2],
            bone,
            strict=True,
        )


class _RunningMedian:
    """The median of the values added so far (two heaps: O(log n) per value)."""

    def __init__(self) -> None:
        self._low: list[float] = []  # the smaller half, negated (a max-heap)
        self._high: list[float] = []  # the larger half

    def __len__(self) -> int:
        return len(self._low) + len(self._high)

    def add(self, value: float) -> None:
        if not self._low or value <= -self._low[0]:
            heapq.heappush(self._low, -value)
        else:
            heapq.heappush(self._high, value)
        if len(self._low) > len(self._high) + 1:
            heapq.heappush(self._high, -heapq.heappop(self._low))
        elif len(self._high) > len(self._low):
            heapq.heappush(self._low, -heapq.heappop(self._high))

    def median(self) -> float:
        if len(self._low) > len(self._high):
            return -self._low[0]
        return (-self._low[0] + self._high[0]) / 2


class _RunningStatistics:
    """The causal origin and divisor of :func:`normalize`, updated one frame at a time."""

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        self.origin_all: np.ndarray | None = None  # pelvis of the first frame with all joints
        self.origin_any: np.ndarray | None = None  # ... with some joints valid
        self.torso_all = _RunningMedian()
        self.torso_any = _RunningMedian()
        self.bone = _RunningMedian()

    @property
    def needs_bones(self) -> bool:
        """Whether bone lengths can still matter: the divisor falls back to them only while no
        torso length was seen, and a torso length once seen stays."""
        return self.config.scale and not (len(self.torso_all) or len(self.torso_any))

    def update(
        self,
        pelvis: np.ndarray,
        pelvis_all: bool,
        pelvis_any: bool,
        torso: float,
        torso_all: bool,
        torso_any: bool,
        bone: float,
    ) -> tuple[np.ndarray, float]:
        """Adds one frame's measures; returns the origin :obj:`(C - 1,)` and the divisor."""
        if self.origin_all is None and pelvis_all:
            self.origin_all = pelvis
        if self.origin_any is None and pelvis_any:
            self.origin_any = pelvis
        if torso_all:
            self.torso_all.add(float(torso))
        if torso_any:
            self.torso_any.add(float(torso))
        if bone > 0:
            self.bone.add(float(bone))
        origin = np.zeros_like(pelvis)
        if self.config.center:
            found = self.origin_all if self.origin_all is not None else self.origin_any
            origin = origin if found is None else found
        divisor = 1.0
        if self.config.scale:
            for lengths in (self.torso_all, self.torso_any, self.bone):
                if len(lengths):
                    divisor = lengths.median()
                    break
            divisor = max(divisor, self.config.eps)
        return origin, divisor


class CausalPreprocessor:
    r"""Causal preprocessing of a stream, one frame at a time.

    The output for frame :math:`t` equals frame :math:`t` of
    ``preprocess(kp[: t + 1], layout, replace(config, causal=True))`` (and so of the whole
    recorded clip): invalid joints take their last valid coordinates (0 before the first valid
    frame, confidence kept), centred on the first valid pelvis so far and divided by the running
    median torso length (see :class:`PreprocessConfig`). It keeps the last valid coordinates of
    every joint, the origin and three running medians (:math:`O(\log t)` per frame).

    Args:
        layout (Layout or str): The joint layout, with :obj:`V` joints.
        config (PreprocessConfig, optional): The settings; used as if :obj:`causal` were set.
            (default: :obj:`PreprocessConfig()`)

    Attributes:
        origin (numpy.ndarray): The origin :obj:`(C - 1,)` of the last frame (:obj:`None` before
            the first), such that ``input = output * scale + origin`` for valid coordinates.
        scale (float): The divisor of the last frame.
        num_frames (int): Frames processed since the start or :meth:`reset`.
    """

    def __init__(self, layout: Layout | str, config: PreprocessConfig | None = None) -> None:
        self.layout = get_layout(layout)
        self.config = config if config is not None else PreprocessConfig()
        self._measures = _FrameMeasures(self.layout)
        self.reset()

    def reset(self) -> None:
        """Forgets every frame: the next one is the first of a new stream."""
        self._statistics = _RunningStatistics(self.config)
        self._last: np.ndarray | None = None  # (V, C - 1) last valid coordinates
        self._seen: np.ndarray | None = None  # (V,) joints valid at least once
        self._channels: int | None = None
        self.origin: np.ndarray | None = None
        self.scale = 1.0
        self.num_frames = 0

    def update(self, frame: np.ndarray) -> np.ndarray:
        """Preprocesses the next frame.

        Args:
            frame (numpy.ndarray): Keypoints of shape :obj:`(V, C)`, confidence last.

        Returns:
            numpy.ndarray: The preprocessed frame :obj:`(V, C)`, :obj:`float32`.
        """
        frame = np.asarray(frame, dtype=np.float32)
        V = self.layout.num_joints
        if frame.ndim != 2 or frame.shape[0] != V or frame.shape[1] not in (3, 4):
            raise ValueError(
                f"CausalPreprocessor.update: frame: expected shape ({V}, C) with C in (3, 4) "
                f"for layout {self.layout.name!r}, got {frame.shape}"
            )
        if self._channels is not None and frame.shape[1] != self._channels:
            raise ValueError(
                f"CausalPreprocessor.update: frame: expected {self._channels} channels like the "
                f"earlier frames, got {frame.shape[1]}"
            )
        self._channels = frame.shape[1]
        kp = frame[None]
        valid = _valid(kp, self.config.confidence_threshold)
        coords = kp[..., :-1].astype(np.float64)
        if self.config.interpolate:
            if self._last is None:
                self._last = np.zeros(coords.shape[1:])
                self._seen = np.zeros(V, dtype=bool)
            self._last[valid[0]] = coords[0, valid[0]]
            self._seen |= valid[0]
            coords = self._last[None]
            uninformative = ~self._seen[None]
        else:
            uninformative = ~np.isfinite(coords).all(axis=-1)
        (measures,) = self._measures(coords, valid, bones=self._statistics.needs_bones)
        self.origin, self.scale = self._statistics.update(*measures)
        self.num_frames += 1
        return _normalised(kp, coords, self.origin, self.scale, uninformative)[0]


def resample(kp: np.ndarray, length: int) -> np.ndarray:
    r"""Resamples a clip to :obj:`length` frames by linear interpolation in time.

    Output frame :math:`i` samples the input at :math:`s_i = i (T - 1) / (\mathrm{length} - 1)`
    (:math:`s_0 = 0` when :obj:`length = 1`): with :math:`k = \lfloor s_i \rfloor` and
    :math:`w = s_i - k`, :math:`\mathbf{y}_i = (1 - w) \mathbf{x}_k + w \mathbf{x}_{k+1}`, for every
    channel including the confidence. The first and last frames are kept exactly; so is the clip for
    :obj:`length = T`.

    Args:
        kp (numpy.ndarray): Keypoints of shape :obj:`(T, V, C)`.
        length (int): The number of output frames, at least 1.

    Returns:
        numpy.ndarray: Keypoints of shape :obj:`(length, V, C)`, :obj:`float32`.
    """
    kp = _as_keypoints(kp)
    length = _positive_int(length, "length")
    num_frames = kp.shape[0]
    position = np.arange(length) * (num_frames - 1) / max(length - 1, 1)
    lo = np.minimum(np.floor(position).astype(np.intp), num_frames - 1)
    hi = np.minimum(lo + 1, num_frames - 1)
    weight = (position - lo)[:, None, None]
    start, end = kp[lo], kp[hi]
    blend = start + weight * (end.astype(np.float64) - start)
    return np.where(weight == 0.0, start, blend).astype(np.float32)


def pad(kp: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Pads a clip with zero frames after its end.

    Args:
        kp (numpy.ndarray): Keypoints of shape :obj:`(T, V, C)` with :obj:`T <= length`.
        length (int): The number of output frames.

    Returns:
        (numpy.ndarray, numpy.ndarray): The keypoints :obj:`(length, V, C)` (:obj:`float32`) and the
        frame mask :obj:`(length,)` (:obj:`bool`, :obj:`True` for the :obj:`T` real frames).
    """
    kp = _as_keypoints(kp)
    length = _positive_int(length, "length")
    num_frames = kp.shape[0]
    if num_frames > length:
        raise ValueError(f"kp: expected at most length={length} frames to pad, got {num_frames}")
    out = np.zeros((length, *kp.shape[1:]), dtype=np.float32)
    out[:num_frames] = kp
    return out, np.arange(length) < num_frames


def sliding_windows(
    kp: np.ndarray, length: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Cuts a clip into windows of :obj:`length` frames, from its start to its end.

    Windows start at :math:`0, s, 2s, \dots` while they fit; when the last of them does not reach
    the end of the clip, one more window aligned to the end (starting at
    :math:`T - \mathrm{length}`) is added, so no window of a clip with
    :math:`T \geq \mathrm{length}` is padded. A clip shorter than :obj:`length` gives one window,
    zero-padded after its end (see :func:`pad`). Every frame is in some window when
    :obj:`stride <= length`; a larger stride skips the frames between windows.

    Args:
        kp (numpy.ndarray): Keypoints of shape :obj:`(T, V, C)`.
        length (int): The window length, at least 1.
        stride (int): The step between window starts, at least 1.

    Returns:
        (numpy.ndarray, numpy.ndarray, numpy.ndarray): The windows :obj:`(W, length, V, C)`
        (:obj:`float32`, not sharing memory with :obj:`kp`), the frame masks :obj:`(W, length)`
        (:obj:`bool`) and the start frames :obj:`(W,)` (:obj:`int64`).
    """
    kp = _as_keypoints(kp)
    length = _positive_int(length, "length")
    stride = _positive_int(stride, "stride")
    num_frames = kp.shape[0]
    if num_frames <= length:
        padded, mask = pad(kp, length)
        return padded[None], mask[None], np.zeros(1, dtype=np.int64)
    starts = np.arange(0, num_frames - length + 1, stride, dtype=np.int64)
    if starts[-1] != num_frames - length:
        starts = np.append(starts, num_frames - length)
    windows = kp[starts[:, None] + np.arange(length)]
    return windows, np.ones(windows.shape[:2], dtype=bool), starts


def _as_keypoints(kp: Any) -> np.ndarray:
    kp = np.asarray(kp, dtype=np.float32)
    if kp.ndim != 3 or kp.shape[0] == 0 or kp.shape[-1] not in (3, 4):
        raise ValueError(
            f"kp: expected shape (T, V, C) with T >= 1 and C in (3, 4), got {kp.shape}"
        )
    return kp


def _anchor(
    coords: np.ndarray, valid: np.ndarray, groups: Sequence[Sequence[int]]
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per group, the (T, D) mean of its valid joints, and the (T,) frames to use.

    The frames are those where every joint of every group is valid or, when there is none, those
    where every group has at least one valid joint.
    """
    means, complete, partial = [], True, True
    for group in groups:
        joints = np.asarray(group, dtype=np.intp)
        ok = valid[:, joints]
        total = np.where(ok[..., None], coords[:, joints], 0.0).sum(axis=1)
        means.append(total / np.maximum(ok.sum(axis=1), 1)[:, None])
        complete = complete & ok.all(axis=1)
        partial = partial & ok.any(axis=1)
    return means, complete if complete.any() else partial


def _valid(kp: np.ndarray, threshold: float) -> np.ndarray:
    """(T, V) bool: confidence at least ``threshold`` and finite coordinates."""
    return (kp[..., -1] >= threshold) & np.isfinite(kp[..., :-1]).all(axis=-1)


def _positive_int(value: Any, name: str) -> int:
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    return value
