r"""Following one person through a video, on plain arrays (no pose library needed).

Per frame, a pose model reports :class:`Detections`: boxes, box scores, keypoints and, when a
multi-object tracker runs, a track id per person. :class:`PersonFollower` picks one person per
frame and keeps that identity:

* the followed track is kept in every frame where it is present;
* while it is missing, the frame has nobody (all confidences 0) for up to :obj:`patience`
  frames, so an occluded person is not swapped for a bystander;
* with no followed track (at the start, or after :obj:`patience` missing frames) the best
  person of the frame is taken, by :func:`person_scores` (the most confident and largest), and
  followed from then on when it carries a track id.

Detections without track ids (no tracker, or detections the tracker has not confirmed) are only
taken when no track is followed, and never become the followed identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Detections", "PersonFollower", "person_scores"]


@dataclass(frozen=True)
class Detections:
    r"""The :obj:`N` people found in one frame.

    Args:
        boxes (numpy.ndarray): Boxes :obj:`(N, 4)` as :math:`(x_1, y_1, x_2, y_2)` in pixels.
        scores (numpy.ndarray): Box confidences :obj:`(N,)` in :math:`[0, 1]`.
        keypoints (numpy.ndarray): Keypoints :obj:`(N, V, 3)`: :math:`x, y` in pixels and the
            joint confidence.
        track_ids (numpy.ndarray, optional): Integer track ids :obj:`(N,)`, or :obj:`None` when
            the people are not tracked. (default: :obj:`None`)
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    track_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"detections.boxes: expected shape (N, 4), got {boxes.shape}")
        num = boxes.shape[0]
        scores = np.asarray(self.scores, dtype=np.float32)
        keypoints = np.asarray(self.keypoints, dtype=np.float32)
        if scores.shape != (num,):
            raise ValueError(f"detections.scores: expected shape ({num},), got {scores.shape}")
        if keypoints.ndim != 3 or keypoints.shape[0] != num or keypoints.shape[2] != 3:
            raise ValueError(
                f"detections.keypoints: expected shape ({num}, V, 3), got {keypoints.shape}"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "keypoints", keypoints)
        if self.track_ids is not None:
            ids = np.asarray(self.track_ids).astype(np.int64)
            if ids.shape != (num,):
                raise ValueError(f"detections.track_ids: expected shape ({num},), got {ids.shape}")
            object.__setattr__(self, "track_ids", ids)

    @classmethod
    def empty(cls, num_joints: int = 17) -> Detections:
        """A frame without people."""
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, num_joints, 3)))

    def __len__(self) -> int:
        return self.boxes.shape[0]


def person_scores(people: Detections) -> np.ndarray:
    r"""The ranking score of every person: box confidence times the square root of the box area,
    :math:`s = c \sqrt{(x_2 - x_1)(y_2 - y_1)}`, shape :obj:`(N,)`."""
    size = np.clip(people.boxes[:, 2:] - people.boxes[:, :2], 0.0, None)
    return people.scores * np.sqrt(size[:, 0] * size[:, 1])


class PersonFollower:
    r"""Selects one person per frame and keeps following the same track (module docstring).

    Args:
        patience (int, optional): The number of consecutive frames the followed track may be
            missing before the best remaining person is taken instead. (default: :obj:`30`)
        keypoint_threshold (float, optional): Joints with a lower confidence (or non-finite
            coordinates) get confidence 0 in :meth:`update`. (default: :obj:`0.3`)
    """

    def __init__(self, *, patience: int = 30, keypoint_threshold: float = 0.3) -> None:
        if int(patience) != patience or patience < 0:
            raise ValueError(f"patience: expected an integer >= 0, got {patience!r}")
        if not 0.0 <= keypoint_threshold <= 1.0:
            raise ValueError(
                f"keypoint_threshold: expected a value in [0, 1], got {keypoint_threshold!r}"
            )
        self.patience = int(patience)
        self.keypoint_threshold = float(keypoint_threshold)
        self.reset()

    @property
    def followed_id(self) -> int | None:
        """The track id being followed, :obj:`None` when none is."""
        return self._followed

    def reset(self) -> None:
        """Forgets the followed track (call between videos)."""
        self._followed: int | None = None
        self._missing = 0

    def select(self, people: Detections) -> int | None:
        """The index of the followed person among :obj:`people`, :obj:`None` for nobody."""
        ids = people.track_ids
        if self._followed is not None:
            if ids is not None:
                hit = np.flatnonzero(ids == self._followed)
                if hit.size:
                    self._missing = 0
                    return int(hit[0])
            self._missing += 1
            if self._missing <= self.patience:
                return None
            self.reset()
        if len(people) == 0:
            return None
        best = int(np.argmax(person_scores(people)))
        if ids is not None:
            self._followed = int(ids[best])
        return best

    def update(self, people: Detections) -> np.ndarray:
        """The followed person's keypoints :obj:`(V, 3)`, :obj:`float32`: joints below
        :obj:`keypoint_threshold` get confidence 0; all zeros when nobody is selected."""
        index = self.select(people)
        if index is None:
            return np.zeros(people.keypoints.shape[1:], dtype=np.float32)
        keypoints = people.keypoints[index].copy()
        keypoints[~np.isfinite(keypoints).all(-1)] = 0.0
        keypoints[:, 2] = np.clip(keypoints[:, 2], 0.0, 1.0)
        keypoints[keypoints[:, 2] < self.keypoint_threshold, 2] = 0.0
        return keypoints
