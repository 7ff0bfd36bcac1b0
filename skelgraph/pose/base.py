r"""The pose estimator interface: video frames in, one person's keypoints per frame out.

A :class:`PoseEstimator` turns a sequence of video frames into keypoints of shape
:obj:`(T, V, 3)` (:math:`x, y` in pixels of the frame, confidence in :math:`[0, 1]`) in the
estimator's layout (``coco17`` for YOLO pose models). Frames without the followed person, and
joints below the keypoint threshold, have confidence 0, so the result always passes
:class:`~skelgraph.clip.SkeletonClip` validation.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np

from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout, get_layout

__all__ = ["PoseEstimator", "PoseSequence", "resample_fps", "resampled_length", "retime"]

T = TypeVar("T")


class PoseSequence(NamedTuple):
    """The keypoints of one video and their frame rate; unpacks as ``keypoints, fps``.

    Args:
        keypoints (numpy.ndarray): Array of shape :obj:`(T, V, 3)`, :obj:`float32`.
        fps (float, optional): Frame rate of :obj:`keypoints` (the target rate when the estimator
            resamples), :obj:`None` when unknown.
    """

    keypoints: np.ndarray
    fps: float | None

    def to_clip(
        self,
        layout: Layout | str = "coco17",
        *,
        label: int | str | None = None,
        source: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> SkeletonClip:
        """The sequence as a validated :class:`~skelgraph.clip.SkeletonClip`."""
        return SkeletonClip(
            self.keypoints, layout, label=label, fps=self.fps, source=source, meta=meta or {}
        )


class PoseEstimator(ABC):
    r"""Estimates the 2D pose of one person in every frame of a video.

    Subclasses implement :meth:`stream`; :meth:`__call__` and :meth:`estimate` collect its
    output. Every call to :meth:`stream` starts a new sequence (tracking state is reset), so one
    estimator processes one sequence at a time.

    Args:
        target_fps (float, optional): Resample the keypoints of :meth:`estimate` to this frame
            rate (see :func:`resample_fps`). (default: :obj:`None`: keep the source rate)
    """

    #: the joint layout of the keypoints
    layout: Layout = get_layout("coco17")

    def __init__(self, *, target_fps: float | None = None) -> None:
        if target_fps is not None and not (math.isfinite(target_fps) and target_fps > 0):
            raise ValueError(f"target_fps: expected a positive frame rate, got {target_fps!r}")
        self.target_fps = None if target_fps is None else float(target_fps)

    @abstractmethod
    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Yields the followed person's keypoints of every frame, as the frames arrive.

        Args:
            frames (Iterable[numpy.ndarray]): Images of shape :obj:`(H, W, 3)`, :obj:`uint8`,
                BGR (OpenCV's order).

        Yields:
            numpy.ndarray: Keypoints of shape :obj:`(V, 3)`, :obj:`float32`, one per frame.
        """

    def __call__(self, frames: Iterable[np.ndarray]) -> np.ndarray:
        """The keypoints of all frames, shape :obj:`(T, V, 3)` (:obj:`T = 0` for no frames),
        at the rate of the frames."""
        keypoints = list(self.stream(frames))
        if not keypoints:
            return np.zeros((0, self.layout.num_joints, 3), dtype=np.float32)
        return np.stack(keypoints).astype(np.float32, copy=False)

    def estimate(
        self,
        source: str | os.PathLike[str] | Iterable[np.ndarray],
        fps: float | None = None,
    ) -> PoseSequence:
        """The keypoints of a video file or of a sequence of frames.

        Args:
            source (str, os.PathLike or Iterable[numpy.ndarray]): A video file or stream URL
                (read with :class:`skelgraph.video.VideoReader`) or frames of shape
                :obj:`(H, W, 3)`.
            fps (float, optional): Frame rate of :obj:`source` when it is a frame sequence
                (a video file's own rate is used otherwise). (default: :obj:`None`)

        Returns:
            PoseSequence: Keypoints :obj:`(T, V, 3)` at :obj:`target_fps` when set, else at the
            source rate, and that rate.

        Raises:
            ValueError: When the source holds no frame, or :obj:`target_fps` is set and the
                source frame rate is unknown.
        """
        name = "frames"
        if isinstance(source, (str, os.PathLike)):
            from skelgraph.video import VideoReader

            reader = VideoReader(source)
            source, fps, name = reader, reader.fps, reader.name
        keypoints = self(source)
        if keypoints.shape[0] == 0:
            raise ValueError(f"{name}: expected at least one decodable frame, got none")
        if self.target_fps is None:
            return PoseSequence(keypoints, fps)
        if fps is None:
            raise ValueError(
                f"{name}: cannot resample to {self.target_fps} fps: the source frame rate is "
                "unknown (pass fps=...)"
            )
        return PoseSequence(resample_fps(keypoints, fps, self.target_fps), self.target_fps)


def resampled_length(num_frames: int, fps: float, target_fps: float) -> int:
    r"""The number of frames :math:`T'` of :obj:`num_frames` frames at :obj:`fps` resampled to
    :obj:`target_fps` with the duration kept: :math:`\mathrm{round}(T f_{target} / f)`, at least 1
    (0 for no frames). See :func:`resample_fps` and :func:`retime`."""
    _check_rates(fps, target_fps)
    return max(1, round(num_frames * target_fps / fps)) if num_frames else 0


def resample_fps(keypoints: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    r"""Resamples keypoints from :obj:`fps` to :obj:`target_fps`, keeping the duration.

    Output frame :math:`i` is the pose at time :math:`i / f_{target}`, i.e. at source position
    :math:`s_i = i \, f / f_{target}` (clamped to the last frame), for
    :math:`i < \mathrm{round}(T f_{target} / f)` (at least 1, see :func:`resampled_length`). A
    joint is interpolated linearly between source frames :math:`\lfloor s_i \rfloor` and
    :math:`\lfloor s_i \rfloor + 1` when it has a non-zero confidence in both; otherwise the
    nearer frame is copied (the later one at half-way), so a missing joint (confidence 0) is
    never blended with a detected one. :func:`retime` resamples frames that cannot be blended
    (images) by the same rule.

    Args:
        keypoints (numpy.ndarray): Array of shape :obj:`(T, V, C)`, confidence last,
            :obj:`T >= 1`.
        fps (float): Frame rate of :obj:`keypoints`, positive.
        target_fps (float): The output frame rate, positive.

    Returns:
        numpy.ndarray: Array of shape :obj:`(T', V, C)`, :obj:`float32`.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim != 3 or kp.shape[0] == 0:
        raise ValueError(f"keypoints: expected shape (T >= 1, V, C), got {kp.shape}")
    num_frames = kp.shape[0]
    lo, weight = _grid(np.arange(resampled_length(num_frames, fps, target_fps)), fps, target_fps)
    lo = np.minimum(lo, num_frames - 1)  # past the last frame, both ends are the last frame
    hi = np.minimum(lo + 1, num_frames - 1)
    weight = weight[:, None, None]
    start, end = kp[lo], kp[hi]
    both = (start[..., -1:] > 0) & (end[..., -1:] > 0)
    nearest = np.where(weight < 0.5, start, end)
    blend = start + weight * (end - start)
    return np.where(both, blend, nearest).astype(np.float32)


def retime(frames: Iterable[T], fps: float, target_fps: float) -> Iterator[T]:
    r"""Resamples a stream of frames from :obj:`fps` to :obj:`target_fps` by the rule of
    :func:`resample_fps`, taking the nearer source frame where it would blend two: frames are
    dropped (lower rate) or repeated (higher rate), the duration is kept, and :math:`T` frames
    give :func:`resampled_length` frames.

    The stream is read lazily. When downsampling, an output frame comes once the stream is known
    to last long enough to include it, about half an output frame after its source frame; the
    repeats of the last frame come when the stream ends.
    """
    _check_rates(fps, target_fps)

    def source_frame(i: int) -> int:
        lo, weight = _grid(np.array(i), fps, target_fps)
        return int(lo) + int(weight >= 0.5)

    chosen: deque[T] = deque()  # the source frames of the outputs not yielded yet
    num_chosen = num_yielded = num_frames = 0
    last: T | None = None
    for index, frame in enumerate(frames):
        num_frames, last = index + 1, frame
        while source_frame(num_chosen) == index:
            chosen.append(frame)
            num_chosen += 1
        for _ in range(resampled_length(num_frames, fps, target_fps) - num_yielded):
            if not chosen:
                break
            yield chosen.popleft()
            num_yielded += 1
    for _ in range(resampled_length(num_frames, fps, target_fps) - num_yielded):
        yield chosen.popleft() if chosen else cast(T, last)


def _grid(index: np.ndarray, fps: float, target_fps: float) -> tuple[np.ndarray, np.ndarray]:
    r"""The source frame :math:`\lfloor s_i \rfloor` before each output frame :math:`i` of
    :obj:`index` and the weight :math:`s_i - \lfloor s_i \rfloor` (:obj:`float32`) of the one
    after, for :math:`s_i = i f / f_{target}`."""
    position = index * (fps / target_fps)
    lo = np.floor(position)
    return lo.astype(np.intp), (position - lo).astype(np.float32)


def _check_rates(fps: float, target_fps: float) -> None:
    for name, value in (("fps", fps), ("target_fps", target_fps)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive frame rate, got {value!r}")
