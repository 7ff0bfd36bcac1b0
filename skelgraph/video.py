r"""Videos (files, webcams, streams) with OpenCV, and video-level augmentation before pose
estimation.

Frames are :obj:`(H, W, 3)` :obj:`uint8` arrays in BGR order (OpenCV's). The augmentations follow
the real-time pipeline blog (§2.3): horizontal mirroring, brightness/saturation changes in HSV
space, and tempo changes by uniform retiming; each works on a frame iterator, so a video is never
held in memory. Needs OpenCV (``pip install "skelgraph[pose]"``).
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

try:
    import cv2
except ImportError as e:  # pragma: no cover - depends on the installation
    raise ImportError('skelgraph.video needs OpenCV: pip install "skelgraph[pose]"') from e

__all__ = [
    "STREAM_SCHEMES",
    "VIDEO_AUGMENTATIONS",
    "VIDEO_SUFFIXES",
    "VideoReader",
    "adjust_color",
    "augment_frames",
    "change_tempo",
    "mirror",
    "sample_augmentation",
    "write_video",
]

#: URL prefixes of network streams (compared in lower case)
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")

#: file suffixes treated as videos when searching a folder (compared in lower case)
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)

#: the video-level augmentations, by name
VIDEO_AUGMENTATIONS = ("mirror", "color", "tempo")

#: OpenCV codec used by :func:`write_video`, by file suffix (others: ``mp4v``)
_FOURCC = {".avi": "MJPG", ".mp4": "mp4v", ".mov": "mp4v", ".mkv": "mp4v"}


class VideoReader:
    """A video file, webcam or network stream whose frames are read with OpenCV on iteration.

    Every iteration opens the file anew and yields its frames in order, so the reader of a file
    can be iterated several times (e.g. once per augmentation). A webcam or stream is live: the
    capture opened to read its properties stays open for the first iteration, and later ones
    reconnect.

    Args:
        source (str, int or os.PathLike): A video file, a webcam index (:obj:`int`) or a stream
            URL (a :obj:`str` starting with one of :data:`STREAM_SCHEMES`).

    Attributes:
        name (str): The source for messages: the file, ``webcam <index>`` or ``stream <URL>``.
        path (pathlib.Path or None): The video file, :obj:`None` for a webcam or stream.
        fps (float or None): Frame rate from the container, :obj:`None` when it reports none.
        frame_count (int): Number of frames the container reports (may be approximate, 0 when
            unknown, always 0 for a webcam).
        width (int), height (int): Frame size in pixels.

    Raises:
        FileNotFoundError: When the file does not exist.
        ValueError: When OpenCV cannot open the source as a video.
    """

    def __init__(self, source: str | int | os.PathLike[str]) -> None:
        self.path: Path | None = None
        self._target: str | int
        if isinstance(source, int):
            self._target, self.name = source, f"webcam {source}"
        elif isinstance(source, str) and source.lower().startswith(STREAM_SCHEMES):
            self._target, self.name = source, f"stream {source}"
        else:
            self.path = Path(source)
            self._target = self.name = str(self.path)
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: no such file")
        capture = self._open()
        try:
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if math.isfinite(fps) and fps > 0 else None
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            self.frame_count = 0 if isinstance(source, int) else max(count, 0)
            self.width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            self.height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        finally:
            if self.path is not None:
                capture.release()
        # reopening a live source would reconnect, so its first iteration reads this capture
        self._held = None if self.path is not None else capture
        self._reading: list[cv2.VideoCapture] = []

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self._target)
        if not capture.isOpened():
            capture.release()
            raise ValueError(f"{self.name}: OpenCV cannot open it as a video")
        return capture

    def __iter__(self) -> Iterator[np.ndarray]:
        capture = self._open() if self._held is None else self._held
        self._held = None
        self._reading.append(capture)
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()
            self._reading.remove(capture)

    def close(self) -> None:
        """Releases the open captures: a live source's kept for its first iteration, and those of
        the running iterations, which then end."""
        held = [] if self._held is None else [self._held]
        for capture in [*held, *self._reading]:
            capture.release()
        self._held = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, fps={self.fps}, "
            f"frames={self.frame_count}, size={self.width}x{self.height})"
        )


def write_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    fourcc: str | None = None,
) -> int:
    """Writes frames to a video file (a temporary file moved onto :obj:`path` when complete).

    Args:
        path (str or os.PathLike): The file; its suffix picks the container.
        frames (Iterable[numpy.ndarray]): Images :obj:`(H, W, 3)`, :obj:`uint8`, BGR, all of one
            size.
        fps (float): Frame rate, positive.
        fourcc (str, optional): Four-letter codec code. (default: ``MJPG`` for ``.avi``, else
            ``mp4v``)

    Returns:
        int: The number of frames written.

    Raises:
        ValueError: On no frames, a frame of another shape or type, or a codec OpenCV cannot
            open.
    """
    path = Path(path)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps: expected a positive frame rate, got {fps!r}")
    fourcc = fourcc or _FOURCC.get(path.suffix.lower(), "mp4v")
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    writer: cv2.VideoWriter | None = None
    count = 0
    try:
        for frame in frames:
            if writer is None:
                shape = frame.shape
                if frame.ndim != 3 or shape[2] != 3:
                    raise ValueError(f"frames[0]: expected shape (H, W, 3), got {shape}")
                writer = cv2.VideoWriter(
                    str(tmp), cv2.VideoWriter_fourcc(*fourcc), float(fps), (shape[1], shape[0])
                )
                if not writer.isOpened():
                    raise ValueError(f"{path}: OpenCV cannot write codec {fourcc!r} here")
            if frame.shape != shape or frame.dtype != np.uint8:
                raise ValueError(
                    f"frames[{count}]: expected {shape} uint8 like the first frame, got "
                    f"{frame.shape} {frame.dtype}"
                )
            writer.write(frame)
            count += 1
        if writer is None:
            raise ValueError(f"{path}: expected at least one frame, got none")
        writer.release()
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            writer.release()
        tmp.unlink(missing_ok=True)
        raise
    return count


def mirror(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Flips every frame horizontally (left/right viewpoint change)."""
    for frame in frames:
        yield cv2.flip(frame, 1)


def adjust_color(
    frames: Iterable[np.ndarray], *, brightness: float = 1.0, saturation: float = 1.0
) -> Iterator[np.ndarray]:
    """Scales every frame's brightness (HSV value) and saturation (HSV saturation), clipped to
    the valid range; the hue is kept (illumination and sensor changes)."""
    for name, value in (("brightness", brightness), ("saturation", saturation)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: expected a factor >= 0, got {value!r}")
    scale = np.array([1.0, saturation, brightness], dtype=np.float32)
    for frame in frames:
        hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV).astype(np.float32) * scale
        yield cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)


def change_tempo(frames: Iterable[np.ndarray], speed: float) -> Iterator[np.ndarray]:
    r"""Retimes a video uniformly at the same frame rate: output frame :math:`j` shows input frame
    :math:`\lfloor j \cdot \mathrm{speed} \rfloor`, so :obj:`speed > 1` drops frames (faster
    motion) and :obj:`speed < 1` repeats them (slower); :math:`T` frames become
    :math:`\lceil T / \mathrm{speed} \rceil`."""
    if not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed: expected a positive factor, got {speed!r}")
    out = 0
    for index, frame in enumerate(frames):
        while math.floor(out * speed) == index:
            yield frame
            out += 1


def sample_augmentation(name: str, rng: np.random.Generator) -> dict[str, float]:
    """Random parameters of the augmentation :obj:`name` (one of :data:`VIDEO_AUGMENTATIONS`):
    ``mirror`` has none; ``color`` scales brightness and saturation by factors in
    :math:`[0.7, 1.3]`; ``tempo`` changes the speed by a factor in :math:`[1.1, 1.25]` or its
    inverse."""
    if name == "mirror":
        return {}
    if name == "color":
        return {
            "brightness": float(rng.uniform(0.7, 1.3)),
            "saturation": float(rng.uniform(0.7, 1.3)),
        }
    if name == "tempo":
        return {"speed": float(rng.uniform(1.1, 1.25) ** rng.choice([-1, 1]))}
    raise ValueError(
        f"augmentation: expected one of {', '.join(VIDEO_AUGMENTATIONS)}, got {name!r}"
    )


def augment_frames(
    frames: Iterable[np.ndarray], name: str, params: dict[str, float]
) -> Iterator[np.ndarray]:
    """Applies the augmentation :obj:`name` with :obj:`params` (see :func:`sample_augmentation`)."""
    if name == "mirror":
        return mirror(frames)
    if name == "color":
        return adjust_color(frames, **params)
    if name == "tempo":
        return change_tempo(frames, **params)
    raise ValueError(
        f"augmentation: expected one of {', '.join(VIDEO_AUGMENTATIONS)}, got {name!r}"
    )
