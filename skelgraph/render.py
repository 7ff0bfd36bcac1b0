r"""Overlay drawing on video frames with OpenCV: skeletons, class probabilities, forecasts.

Images are :obj:`(H, W, 3)` :obj:`uint8` arrays in BGR order (OpenCV's); every ``draw_*``
function draws in place and returns the image. Keypoints are in pixels of the image, confidence
last. :class:`Canvas` places skeletons without a video (e.g. an ``.npz`` clip) on a blank image,
and :class:`OverlayWriter` writes the frames to a video file atomically. Needs OpenCV
(``pip install "skelgraph[pose]"``).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from skelgraph.layouts import Layout, get_layout

try:
    import cv2
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError('skelgraph.render needs OpenCV: pip install "skelgraph[pose]"') from e

__all__ = [
    "BAR_COLOUR",
    "FORECAST_COLOUR",
    "SKELETON_COLOUR",
    "Canvas",
    "OverlayWriter",
    "draw_forecast",
    "draw_overlay",
    "draw_probabilities",
    "draw_skeleton",
    "probability_panel_height",
]

Colour = tuple[int, int, int]

#: BGR colour of the observed skeleton (green)
SKELETON_COLOUR: Colour = (80, 220, 80)
#: BGR colour of the forecast skeleton (orange)
FORECAST_COLOUR: Colour = (0, 150, 255)
#: BGR colour of the probability bars (blue); the top class's bar uses :data:`SKELETON_COLOUR`
BAR_COLOUR: Colour = (230, 160, 60)
#: OpenCV codec of :class:`OverlayWriter`, by file suffix (others: ``mp4v``)
FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}

_TEXT_COLOUR: Colour = (255, 255, 255)
_PANEL_COLOUR: Colour = (32, 32, 32)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
#: pixel coordinates are clipped to this magnitude before drawing (OpenCV needs int32 points)
_MAX_COORD = 1 << 15


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"image: expected a BGR array of shape (H, W, 3), got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8, got {image.dtype}")


def _points(xy: np.ndarray) -> np.ndarray:
    """Pixel coordinates :obj:`(..., 2)` as rounded, clipped :obj:`int32` points."""
    return np.clip(np.rint(xy), -_MAX_COORD, _MAX_COORD).astype(np.int32)


def draw_skeleton(
    image: np.ndarray,
    keypoints: np.ndarray,
    layout: Layout | str,
    colour: Colour = SKELETON_COLOUR,
    threshold: float = 0.0,
    *,
    thickness: int = 2,
    radius: int = 3,
) -> np.ndarray:
    r"""Draws the bones and joints of one skeleton.

    A joint is drawn when its confidence is above :obj:`threshold` and its coordinates are
    finite; a bone when both of its joints are.

    Args:
        image (numpy.ndarray): Image :obj:`(H, W, 3)`, :obj:`uint8`, BGR; drawn on in place.
        keypoints (numpy.ndarray): Keypoints :obj:`(V, C)`, :obj:`C >= 3`: :math:`x, y` in pixels
            first, confidence last (:math:`z` of 3D keypoints is ignored).
        layout (Layout or str): The joint layout, :obj:`V` joints.
        colour (tuple of int): BGR colour. (default: :data:`SKELETON_COLOUR`)
        threshold (float): Joints with a confidence at or below it are not drawn.
            (default: :obj:`0.0`)
        thickness (int): Bone line width in pixels. (default: :obj:`2`)
        radius (int): Joint circle radius in pixels. (default: :obj:`3`)

    Returns:
        numpy.ndarray: :obj:`image`.
    """
    _check_image(image)
    layout = get_layout(layout)
    kp = np.asarray(keypoints, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[0] != layout.num_joints or kp.shape[1] < 3:
        raise ValueError(
            f"keypoints: expected shape ({layout.num_joints}, C >= 3) for layout "
            f"{layout.name!r}, got {kp.shape}"
        )
    visible = (kp[:, -1] > threshold) & np.isfinite(kp[:, :2]).all(axis=1)
    points = _points(np.where(visible[:, None], kp[:, :2], 0.0))
    for child, parent in layout.bones:
        if visible[child] and visible[parent]:
            start, end = points[child].tolist(), points[parent].tolist()
            cv2.line(image, start, end, colour, thickness, cv2.LINE_AA)
    for joint in np.flatnonzero(visible):
        cv2.circle(image, points[joint].tolist(), radius, colour, -1, cv2.LINE_AA)
    return image


def draw_forecast(
    image: np.ndarray,
    forecast: np.ndarray,
    layout: Layout | str,
    colour: Colour = FORECAST_COLOUR,
    visible: np.ndarray | None = None,
    *,
    max_alpha: float = 0.8,
    thickness: int = 2,
    radius: int = 2,
) -> np.ndarray:
    r"""Draws the future skeletons of a forecast, fading with every step ahead.

    Step :math:`n = 1, \dots, N` is blended onto the image with opacity
    :math:`\alpha_n = \alpha_{max} (N - n + 1) / N`, the farthest step first, so the nearest
    future is the most opaque and drawn on top.

    Args:
        image (numpy.ndarray): Image :obj:`(H, W, 3)`, :obj:`uint8`, BGR; drawn on in place.
        forecast (numpy.ndarray): Future joints :obj:`(N, V, D)`, :obj:`D >= 2` coordinates
            (:math:`x, y` in pixels first), no confidence.
        layout (Layout or str): The joint layout, :obj:`V` joints.
        colour (tuple of int): BGR colour. (default: :data:`FORECAST_COLOUR`)
        visible (numpy.ndarray, optional): Boolean mask :obj:`(V,)` of the joints to draw, e.g.
            the joints detected in the current frame. (default: :obj:`None`: all joints)
        max_alpha (float): Opacity of the first step, in :math:`(0, 1]`. (default: :obj:`0.8`)
        thickness (int): Bone line width in pixels. (default: :obj:`2`)
        radius (int): Joint circle radius in pixels. (default: :obj:`2`)

    Returns:
        numpy.ndarray: :obj:`image`.
    """
    _check_image(image)
    layout = get_layout(layout)
    future = np.asarray(forecast, dtype=np.float64)
    if future.ndim != 3 or future.shape[1] != layout.num_joints or future.shape[2] < 2:
        raise ValueError(
            f"forecast: expected shape (N, {layout.num_joints}, D >= 2) for layout "
            f"{layout.name!r}, got {future.shape}"
        )
    if not 0.0 < max_alpha <= 1.0:
        raise ValueError(f"max_alpha: expected a value in (0, 1], got {max_alpha!r}")
    mask = np.ones(layout.num_joints, dtype=bool) if visible is None else np.asarray(visible)
    if mask.shape != (layout.num_joints,):
        raise ValueError(f"visible: expected shape ({layout.num_joints},), got {mask.shape}")
    steps = future.shape[0]
    height, width = image.shape[:2]
    margin = thickness + radius + 2
    for n in reversed(range(steps)):
        xy = future[n, :, :2]
        shown = mask.astype(bool) & np.isfinite(xy).all(axis=1)
        if not shown.any():
            continue
        # blend only the region the step covers
        lo = np.clip(np.floor(xy[shown].min(axis=0)) - margin, 0, [width, height]).astype(int)
        hi = np.clip(np.ceil(xy[shown].max(axis=0)) + margin + 1, 0, [width, height]).astype(int)
        if (hi <= lo).any():
            continue
        region = image[lo[1] : hi[1], lo[0] : hi[0]]
        layer = region.copy()
        keypoints = np.concatenate([xy - lo, shown[:, None].astype(np.float64)], axis=1)
        draw_skeleton(layer, keypoints, layout, colour, thickness=thickness, radius=radius)
        alpha = max_alpha * (steps - n) / steps
        cv2.addWeighted(layer, alpha, region, 1.0 - alpha, 0.0, dst=region)
    return image


def _panel_metrics(shape: tuple[int, ...]) -> tuple[float, int, int, int, int]:
    """Text scale, text height, row height, padding and title height of the probability panel
    on an image of :obj:`shape` :math:`(H, W, ...)`: a font scale of 0.5 at 480 pixels on the
    short side."""
    scale = float(np.clip(min(shape[:2]) / 960, 0.3, 1.2))
    text_h = cv2.getTextSize("Ag", _FONT, scale, 1)[0][1]
    title_h = cv2.getTextSize("Ag", _FONT, scale * 1.4, 2)[0][1]
    return scale, text_h, int(text_h * 1.9) + 2, max(3, text_h // 2), title_h


def probability_panel_height(shape: tuple[int, ...], top_k: int) -> int:
    """The height in pixels of the panel of :func:`draw_probabilities` with :obj:`top_k` bars
    on an image of :obj:`shape` :math:`(H, W, ...)`."""
    _, _, row, pad, title_h = _panel_metrics(shape)
    return title_h + 3 * pad + top_k * row


def draw_probabilities(
    image: np.ndarray,
    classes: Sequence[str],
    probabilities: np.ndarray,
    top_k: int = 5,
    *,
    origin: tuple[int, int] = (8, 8),
    width: int | None = None,
    title: str | None = None,
) -> np.ndarray:
    r"""Draws a panel with the top class in large text and a bar per class of the
    :obj:`top_k` most probable ones (label, bar of length :math:`\propto p`, percentage).

    The panel background is semi-transparent; the bars are opaque, the top class's in
    :data:`SKELETON_COLOUR` and the others in :data:`BAR_COLOUR`.

    Args:
        image (numpy.ndarray): Image :obj:`(H, W, 3)`, :obj:`uint8`, BGR; drawn on in place.
        classes (Sequence[str]): The :obj:`K` class names.
        probabilities (numpy.ndarray): Class probabilities :obj:`(K,)`.
        top_k (int): Number of bars, at most :obj:`K`. (default: :obj:`5`)
        origin (tuple of int): Top-left corner of the panel :math:`(x, y)`. (default: (8, 8))
        width (int, optional): Full-bar length in pixels. (default: :obj:`None`: a quarter of
            the image width, at least 40)
        title (str, optional): The large text, e.g. a smoothed label. (default: :obj:`None`:
            the top class and its probability)

    Returns:
        numpy.ndarray: :obj:`image`.
    """
    _check_image(image)
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.shape != (len(classes),):
        raise ValueError(
            f"probabilities: expected shape ({len(classes)},) for {len(classes)} classes, "
            f"got {probs.shape}"
        )
    if int(top_k) != top_k or top_k < 1:
        raise ValueError(f"top_k: expected an integer >= 1, got {top_k!r}")
    order = np.argsort(-np.nan_to_num(probs, nan=-1.0), kind="stable")[: int(top_k)]
    scale, text_h, row, pad, title_h = _panel_metrics(image.shape)
    bar_length = width if width is not None else max(40, image.shape[1] // 4)
    label_w = max(cv2.getTextSize(classes[i], _FONT, scale, 1)[0][0] for i in order)
    if title is None:
        title = f"{classes[order[0]]} {probs[order[0]]:.0%}"
    title_w = cv2.getTextSize(title, _FONT, scale * 1.4, 2)[0][0]
    percent_w = cv2.getTextSize("100%", _FONT, scale, 1)[0][0]
    panel_w = max(title_w, label_w + bar_length + percent_w + 4 * pad) + 2 * pad
    panel_h = probability_panel_height(image.shape, len(order))
    x0, y0 = origin
    x1, y1 = min(x0 + panel_w, image.shape[1]), min(y0 + panel_h, image.shape[0])
    if x1 > max(x0, 0) and y1 > max(y0, 0):
        region = image[max(y0, 0) : y1, max(x0, 0) : x1]
        background = np.full_like(region, _PANEL_COLOUR)
        cv2.addWeighted(background, 0.6, region, 0.4, 0.0, dst=region)
    y = y0 + pad + title_h
    cv2.putText(image, title, (x0 + pad, y), _FONT, scale * 1.4, _TEXT_COLOUR, 2, cv2.LINE_AA)
    y += pad
    bar_x = x0 + 2 * pad + label_w
    for rank, i in enumerate(order):
        top, p = y + rank * row, float(np.clip(np.nan_to_num(probs[i]), 0.0, 1.0))
        baseline = top + (row + text_h) // 2
        cv2.putText(image, classes[i], (x0 + pad, baseline), _FONT, scale, _TEXT_COLOUR, 1)
        length = round(p * bar_length)
        if length > 0:
            colour = SKELETON_COLOUR if rank == 0 else BAR_COLOUR
            cv2.rectangle(image, (bar_x, top + 2), (bar_x + length - 1, top + row - 3), colour, -1)
        text_x = bar_x + bar_length + pad
        cv2.putText(image, f"{p:.0%}", (text_x, baseline), _FONT, scale, _TEXT_COLOUR, 1)
    return image


def draw_overlay(
    image: np.ndarray,
    keypoints: np.ndarray,
    layout: Layout | str,
    classes: Sequence[str],
    probabilities: np.ndarray,
    forecast: np.ndarray | None = None,
    *,
    threshold: float = 0.0,
    top_k: int = 5,
    title: str | None = None,
) -> np.ndarray:
    """Draws a recognition result: the forecast (joints visible now only), the skeleton on top,
    and the probability panel (see :func:`draw_forecast`, :func:`draw_skeleton`,
    :func:`draw_probabilities`).

    Args:
        image (numpy.ndarray): Image :obj:`(H, W, 3)`, :obj:`uint8`, BGR; drawn on in place.
        keypoints (numpy.ndarray): The current skeleton :obj:`(V, C)`, confidence last.
        layout (Layout or str): The layout of :obj:`keypoints` and :obj:`forecast`.
        classes (Sequence[str]): The :obj:`K` class names.
        probabilities (numpy.ndarray): Class probabilities :obj:`(K,)`.
        forecast (numpy.ndarray, optional): Future joints :obj:`(N, V, D)`. (default: None)
        threshold (float): Confidence threshold of the drawn joints. (default: :obj:`0.0`)
        top_k (int): Number of probability bars. (default: :obj:`5`)
        title (str, optional): The panel's large text. (default: :obj:`None`: the top class)

    Returns:
        numpy.ndarray: :obj:`image`.
    """
    top_k = min(top_k, len(classes))
    if forecast is not None:
        visible = np.asarray(keypoints)[:, -1] > threshold
        draw_forecast(image, forecast, layout, visible=visible)
    draw_skeleton(image, keypoints, layout, threshold=threshold)
    return draw_probabilities(image, classes, probabilities, top_k, title=title)


@dataclass(frozen=True)
class Canvas:
    r"""A blank image for skeletons without a video: pixel = coordinate :math:`\cdot`
    :obj:`scale` + :obj:`offset`.

    Args:
        width (int), height (int): Image size in pixels (even, as video codecs need).
        scale (float): Pixels per keypoint unit.
        offset (tuple of float): Pixel position :math:`(x, y)` of the coordinate origin.
    """

    width: int
    height: int
    scale: float
    offset: tuple[float, float]

    @classmethod
    def from_keypoints(
        cls,
        keypoints: np.ndarray,
        *,
        margin: int = 24,
        header: int = 0,
        min_size: int = 320,
        max_size: int = 1280,
    ) -> Canvas:
        """The canvas holding every confident joint of a clip, plus :obj:`margin` pixels.

        Pixel coordinates are kept (scale 1) when the longer side of their extent lies in
        :math:`[` :obj:`min_size`, :obj:`max_size` :math:`]`; other extents (normalised or
        metric coordinates, huge frames) are scaled into that range.

        Args:
            keypoints (numpy.ndarray): Keypoints :obj:`(T, V, C)`, :math:`x, y` first,
                confidence last.
            margin (int): Border around the extent in pixels. (default: :obj:`24`)
            header (int): Extra pixels above the top border, e.g. room for the panel of
                :func:`draw_probabilities`. (default: :obj:`0`)
            min_size (int), max_size (int): Range of the longer side of the scaled extent.
                (default: :obj:`320`, :obj:`1280`)
        """
        kp = np.asarray(keypoints, dtype=np.float64)
        if kp.ndim != 3 or kp.shape[2] < 3:
            raise ValueError(f"keypoints: expected shape (T, V, C >= 3), got {kp.shape}")
        xy = kp[..., :2][(kp[..., -1] > 0) & np.isfinite(kp[..., :2]).all(axis=-1)]
        if xy.size == 0:
            lo, extent = np.zeros(2), np.zeros(2)
        else:
            lo, extent = xy.min(axis=0), np.ptp(xy, axis=0)
        longest = float(extent.max())
        if longest <= 0:
            scale = 1.0
            lo = lo - min_size / 2
            extent = np.full(2, float(min_size))
        else:
            scale = float(np.clip(longest, min_size, max_size)) / longest
        width, height = (math.ceil(s * scale) + 2 * margin for s in extent)
        height += header
        offset = (float(margin - lo[0] * scale), float(margin + header - lo[1] * scale))
        return cls(width + width % 2, height + height % 2, scale, offset)

    def blank(self, colour: Colour = (0, 0, 0)) -> np.ndarray:
        """A new image :obj:`(height, width, 3)`, :obj:`uint8`, filled with :obj:`colour`."""
        return np.full((self.height, self.width, 3), colour, dtype=np.uint8)

    def transform(self, keypoints: np.ndarray) -> np.ndarray:
        """Keypoints :obj:`(..., C)` with :math:`x, y` mapped to canvas pixels; the other
        channels (:math:`z`, confidence) unchanged."""
        out = np.array(keypoints, dtype=np.float32)
        out[..., :2] = out[..., :2] * self.scale + np.asarray(self.offset, dtype=np.float32)
        return out


class OverlayWriter:
    """Writes frames to a video file atomically: into a temporary file in the same folder, moved
    onto :obj:`path` by :meth:`close`. The writer opens on the first frame, whose size every
    later frame must have. Used as a context manager, an exception inside the block discards
    the temporary file and leaves an existing :obj:`path` untouched.

    Args:
        path (str or os.PathLike): The video file; its suffix picks the container.
        fps (float): Frame rate, positive.
        fourcc (str, optional): Four-letter codec code. (default: ``MJPG`` for ``.avi``, else
            ``mp4v``)

    Attributes:
        frames (int): The number of frames written so far.

    Raises:
        FileNotFoundError: When the folder of :obj:`path` does not exist.
        ValueError: On a non-positive frame rate or a codec code not of four characters.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, fourcc: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: folder {self.path.parent} does not exist")
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps: expected a positive frame rate, got {fps!r}")
        self.fourcc = fourcc or FOURCC.get(self.path.suffix.lower(), "mp4v")
        if len(self.fourcc) != 4:
            raise ValueError(f"fourcc: expected a four-character code, got {self.fourcc!r}")
        self.fps = float(fps)
        self.frames = 0
        self._tmp = self.path.with_name(
            f".{self.path.stem}.{uuid.uuid4().hex[:12]}.tmp{self.path.suffix}"
        )
        self._writer: cv2.VideoWriter | None = None
        self._shape: tuple[int, ...] | None = None
        self._closed = False

    def write(self, frame: np.ndarray) -> None:
        """Appends one frame :obj:`(H, W, 3)`, :obj:`uint8`, BGR.

        Raises:
            ValueError: When the frame differs in shape or type from the first one, or OpenCV
                cannot open the codec for this file.
        """
        if self._closed:
            raise ValueError(f"{self.path}: the writer is closed")
        if self._writer is None:
            _check_image(frame)
            height, width = frame.shape[:2]
            writer = cv2.VideoWriter(
                str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (width, height)
            )
            if not writer.isOpened():
                writer.release()
                self._tmp.unlink(missing_ok=True)
                raise ValueError(
                    f"{self.path}: OpenCV cannot write a {self.path.suffix or 'suffix-less'} "
                    f"video with codec {self.fourcc!r} at {width}x{height} (try .mp4 or .avi)"
                )
            self._writer, self._shape = writer, frame.shape
        elif frame.shape != self._shape or frame.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: frame {self.frames}: expected {self._shape} uint8 like the first "
                f"frame, got {frame.shape} {frame.dtype}"
            )
        self._writer.write(frame)
        self.frames += 1

    def close(self) -> None:
        """Finishes the video and moves it onto :obj:`path`.

        Raises:
            ValueError: When no frame was written (nothing is created).
        """
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            raise ValueError(f"{self.path}: expected at least one frame, got none")
        self._writer.release()
        self._writer = None
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        """Stops writing and removes the temporary file; :obj:`path` is not touched."""
        self._closed = True
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> OverlayWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, fps={self.fps}, fourcc={self.fourcc!r}, "
            f"frames={self.frames})"
        )
