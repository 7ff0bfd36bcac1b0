r"""The service's pose model: JPEG frames and uploaded videos to ``coco17`` keypoints.

One YOLO pose model (:class:`~skelgraph.pose.UltralyticsPoseEstimator`, optional extra
``skelgraph[pose]``) is loaded on the first frame or video that needs it and shared by every
session; each session follows its own person with its own
:class:`~skelgraph.pose.PersonFollower`. Ultralytics models are not safe to call from several
threads at once, so calls are serialised by a lock (one frame at a time).
"""

from __future__ import annotations

import importlib.util
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skelgraph.pose.tracking import PersonFollower
from skelgraph.serve.inputs import InputError, jpeg_size

if TYPE_CHECKING:
    from skelgraph.pose import UltralyticsPoseEstimator

__all__ = ["PoseService", "PoseUnavailable"]

INSTALL_HINT = 'pip install "skelgraph[pose]"'


class PoseUnavailable(InputError):
    """Frames or videos arrived but the service cannot estimate poses (no pose model configured,
    ultralytics or OpenCV missing, or the model failed to load)."""


class PoseService:
    r"""A lazily loaded YOLO pose model shared by the sessions of a service.

    Args:
        model (str, optional): YOLO pose weights or architecture (``"yolo11n-pose.pt"``,
            ``"yolo11n-pose.yaml"``, a path); :obj:`None` serves keypoints only.
        device (str, optional): Inference device as ultralytics names it. (default: :obj:`None`)
        imgsz (int, optional): Inference image size. (default: :obj:`None`: the model's)
        max_pixels (int, optional): Largest accepted JPEG frame or video frame, width × height.
            (default: :obj:`1920 * 1080`)
        keypoint_threshold (float, optional): Joints below this confidence get confidence 0.
            (default: :obj:`0.3`)
    """

    def __init__(
        self,
        model: str | None,
        *,
        device: str | None = None,
        imgsz: int | None = None,
        max_pixels: int = 1920 * 1080,
        keypoint_threshold: float = 0.3,
    ) -> None:
        self.model = model
        self.device = device
        self.imgsz = imgsz
        self.max_pixels = int(max_pixels)
        self.keypoint_threshold = float(keypoint_threshold)
        self._estimator: UltralyticsPoseEstimator | None = None
        self._error: str | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        """Pickles as its settings: another process gets a pose service of its own, whose model
        loads on first use there."""
        settings = partial(
            PoseService,
            self.model,
            device=self.device,
            imgsz=self.imgsz,
            max_pixels=self.max_pixels,
            keypoint_threshold=self.keypoint_threshold,
        )
        return settings, ()

    def unavailable(self) -> str | None:
        """Why frames cannot be processed, :obj:`None` when they can (as far as is known without
        loading the model)."""
        if self.model is None:
            return (
                "this server runs without a pose model, so it accepts keypoints and skeleton "
                f"files only: start it with --pose-model yolo11n-pose.pt ({INSTALL_HINT})"
            )
        missing = [m for m in ("ultralytics", "cv2") if importlib.util.find_spec(m) is None]
        if missing:
            names = " and ".join("OpenCV" if m == "cv2" else m for m in missing)
            return f"pose estimation needs {names}, not installed on this server: {INSTALL_HINT}"
        return self._error

    def follower(self) -> PersonFollower:
        """A new person follower for one session or video."""
        return PersonFollower(keypoint_threshold=self.keypoint_threshold)

    def estimator(self) -> UltralyticsPoseEstimator:
        """The pose model, loaded on the first call.

        Raises:
            PoseUnavailable: Status 415 when no model is configured or the extra is missing, 503
                when loading failed (the reason is kept and repeated for later calls).
        """
        if self._error is not None:
            raise PoseUnavailable(self._error, status=503)
        reason = self.unavailable()
        if reason is not None:
            raise PoseUnavailable(reason, status=415)
        with self._lock:
            if self._estimator is None:
                from skelgraph.pose import UltralyticsPoseEstimator

                try:
                    self._estimator = UltralyticsPoseEstimator(
                        self.model, device=self.device, imgsz=self.imgsz, tracker=None
                    )
                except Exception as e:
                    self._error = f"pose model {self.model!r} failed to load: {e}"
                    raise PoseUnavailable(self._error, status=503) from e
            return self._estimator

    def decode(self, data: bytes) -> np.ndarray:
        """A JPEG image as a BGR array :obj:`(H, W, 3)`, :obj:`uint8`.

        Raises:
            InputError: 422 for bytes that are not a decodable JPEG, 413 for an image above
                :attr:`max_pixels`.
        """
        self._check_pixels(*jpeg_size(data), "binary message: JPEG")
        import cv2

        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"binary message: JPEG could not be decoded ({len(data)} bytes)")
        return image

    def _check_pixels(self, width: int, height: int, what: str = "video") -> None:
        """Refuses (413) an image or video of more than :attr:`max_pixels` pixels."""
        if width * height > self.max_pixels:
            raise InputError(
                f"{what}: expected at most {self.max_pixels} pixels per frame, got "
                f"{width}x{height}",
                status=413,
            )

    def detect(self, image: np.ndarray, follower: PersonFollower) -> np.ndarray:
        """The followed person's keypoints :obj:`(17, 3)` in one BGR image (all zeros when
        nobody is seen)."""
        from skelgraph.pose import result_detections

        estimator = self.estimator()
        with self._lock:
            result = estimator.model.predict(image, verbose=False, **estimator.predict_args)[0]
        return follower.update(result_detections(result))

    def video(self, path: Path, max_frames: int) -> tuple[np.ndarray, float | None]:
        """The keypoints :obj:`(T, 17, 3)` of one person in a video file and its frame rate;
        other sessions' frames interleave with this video's (the lock is taken per frame).

        Raises:
            InputError: 422 when the file is not a readable video or has no frame, 413 when it
                has more than :obj:`max_frames` frames or frames of more than :attr:`max_pixels`
                (both checked on the container's header before any frame is decoded, and again
                on every frame, since a header can lie).
        """
        self.estimator()
        from skelgraph.video import VideoReader

        try:
            reader = VideoReader(path)
        except (OSError, ValueError) as e:
            raise InputError(f"video: {str(e).replace(str(path), 'the file')}") from e
        if reader.frame_count > max_frames:
            raise InputError(
                f"video: expected at most {max_frames} frames, got {reader.frame_count}",
                status=413,
            )
        self._check_pixels(reader.width, reader.height)
        follower = self.follower()
        keypoints = []
        for t, image in enumerate(reader):
            if t == max_frames:
                raise InputError(f"video: expected at most {max_frames} frames", status=413)
            self._check_pixels(image.shape[1], image.shape[0], f"video frame {t}")
            keypoints.append(self.detect(image, follower))
        if not keypoints:
            raise InputError("video: no decodable frame")
        return np.stack(keypoints).astype(np.float32), reader.fps
