r"""Pose estimation with ultralytics YOLO pose models (optional extra ``skelgraph[pose]``).

The model runs in tracking mode (``YOLO.track(..., persist=True)``, ByteTrack by default) and a
:class:`~skelgraph.pose.tracking.PersonFollower` follows one person through the video. This
module imports without ultralytics; constructing :class:`UltralyticsPoseEstimator` needs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from skelgraph.pose.base import PoseEstimator
from skelgraph.pose.tracking import Detections, PersonFollower

if TYPE_CHECKING:
    from ultralytics import YOLO
    from ultralytics.engine.results import Results

__all__ = ["UltralyticsPoseEstimator", "result_detections"]

INSTALL_HINT = 'pip install "skelgraph[pose]"'


def result_detections(result: Results) -> Detections:
    """The people of one ultralytics pose result (boxes, scores, keypoints, track ids).

    Args:
        result (ultralytics.engine.results.Results): One frame's result of a pose model, with
            :obj:`N` boxes (track ids when tracked) and keypoints :obj:`(N, V, 3)`.

    Returns:
        Detections: The :obj:`N` people; :obj:`track_ids` is :obj:`None` for untracked boxes.
    """
    if result.keypoints is None or result.boxes is None:
        raise ValueError(
            f"result {result.path!r}: expected boxes and keypoints of a pose model, got "
            f"boxes={result.boxes is not None}, keypoints={result.keypoints is not None}"
        )
    keypoints = _numpy(result.keypoints.data)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(
            f"result {result.path!r}: keypoints: expected shape (N, V, 3) with confidences, "
            f"got {keypoints.shape}"
        )
    boxes = result.boxes
    ids = None if boxes.id is None else _numpy(boxes.id)
    return Detections(_numpy(boxes.xyxy), _numpy(boxes.conf), keypoints, ids)


class UltralyticsPoseEstimator(PoseEstimator):
    r"""A YOLO pose model that tracks people and follows one of them.

    Args:
        model (str, os.PathLike or ultralytics.YOLO, optional): Weights or model file, by name
            (``"yolo11n-pose.pt"``, downloaded by ultralytics when missing), by path, an
            architecture file (``"yolo11n-pose.yaml"``, untrained), or a loaded ``YOLO`` pose
            model. (default: :obj:`"yolo11x-pose.pt"`)
        device (str, optional): Inference device as ultralytics names it (``"cpu"``,
            ``"cuda:0"``, ``"0"``, ``"mps"``). (default: :obj:`None`: ultralytics' choice)
        conf (float, optional): Minimum box confidence of the detector. (default: :obj:`None`:
            ultralytics' default, 0.1 when tracking so the tracker sees weak boxes)
        imgsz (int, optional): Inference image size. (default: :obj:`None`: the model's)
        keypoint_threshold (float, optional): Joints with a lower confidence get confidence 0.
            (default: :obj:`0.3`)
        tracker (str, optional): Ultralytics tracker configuration (``"bytetrack.yaml"``,
            ``"botsort.yaml"`` or a file), or :obj:`None` to detect without tracking (the best
            person of every frame is taken). (default: :obj:`"bytetrack.yaml"`)
        patience (int, optional): Frames the followed person may be missing before another
            track is taken, see :class:`~skelgraph.pose.tracking.PersonFollower`.
            (default: :obj:`30`)
        batch_size (int, optional): Frames per model call. (default: :obj:`1`)
        target_fps (float, optional): See :class:`~skelgraph.pose.PoseEstimator`.

    Attributes:
        model (ultralytics.YOLO): The model.
        follower (PersonFollower): Selects the followed person; reset by every :meth:`stream`.

    Raises:
        ImportError: When ultralytics is not installed.
        ValueError: When the model is not a pose model with 17 keypoints (``coco17``).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | YOLO = "yolo11x-pose.pt",
        *,
        device: str | None = None,
        conf: float | None = None,
        imgsz: int | None = None,
        keypoint_threshold: float = 0.3,
        tracker: str | None = "bytetrack.yaml",
        patience: int = 30,
        batch_size: int = 1,
        target_fps: float | None = None,
    ) -> None:
        super().__init__(target_fps=target_fps)
        try:
            from ultralytics import YOLO
        except ImportError as e:
            raise ImportError(
                f"UltralyticsPoseEstimator needs the ultralytics package: {INSTALL_HINT}"
            ) from e
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.follower = PersonFollower(patience=patience, keypoint_threshold=keypoint_threshold)
        self.model = model if isinstance(model, YOLO) else YOLO(os.fspath(model))
        if self.model.task != "pose":
            raise ValueError(
                f"model: expected a pose model (task 'pose'), got task {self.model.task!r} "
                f"for {model}"
            )
        # PyTorch models know their keypoint shape; exported ones are checked on their output
        kpt_shape = getattr(self.model.model, "kpt_shape", None)
        if kpt_shape is not None and tuple(kpt_shape) != (self.layout.num_joints, 3):
            raise ValueError(
                f"model: expected keypoint shape ({self.layout.num_joints}, 3) for layout "
                f"{self.layout.name!r}, got {tuple(kpt_shape)} for {model}"
            )
        self.tracker = tracker
        self.batch_size = int(batch_size)
        self.predict_args: dict[str, Any] = {
            key: value
            for key, value in (("device", device), ("conf", conf), ("imgsz", imgsz))
            if value is not None
        }

    def stream(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Yields the followed person's keypoints :obj:`(17, 3)` for every frame
        (see :meth:`PoseEstimator.stream`); :attr:`follower` holds the tracking state."""
        self.follower.reset()
        for results in self._infer(frames):
            for result in results:
                people = result_detections(result)
                if people.keypoints.shape[1] != self.layout.num_joints:
                    raise ValueError(
                        f"model: expected {self.layout.num_joints} keypoints per person "
                        f"(layout {self.layout.name!r}), got {people.keypoints.shape[1]}"
                    )
                yield self.follower.update(people)

    def _infer(self, frames: Iterable[np.ndarray]) -> Iterator[list[Results]]:
        """Runs the model on batches of frames; the first frame alone starts a fresh tracker,
        later batches continue it (``persist=True``)."""
        batch: list[np.ndarray] = []
        started = False
        for frame in frames:
            batch.append(frame)
            if not started or len(batch) == self.batch_size:
                yield self._run(batch, persist=started)
                batch, started = [], True
        if batch:
            yield self._run(batch, persist=True)

    def _run(self, batch: list[np.ndarray], *, persist: bool) -> list[Results]:
        if self.tracker is None:
            return self.model.predict(batch, verbose=False, **self.predict_args)
        return self.model.track(
            batch, persist=persist, tracker=self.tracker, verbose=False, **self.predict_args
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.model.model_name!r}, tracker={self.tracker!r}, "
            f"keypoint_threshold={self.follower.keypoint_threshold}, "
            f"patience={self.follower.patience}, target_fps={self.target_fps})"
        )


def _numpy(values: Any) -> np.ndarray:
    """A torch tensor or array as a numpy array on the CPU."""
    return values.cpu().numpy() if hasattr(values, "cpu") else np.asarray(values)
