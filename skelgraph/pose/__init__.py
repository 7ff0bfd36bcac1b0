"""Pose estimation: video frames to one tracked person's ``coco17`` keypoints.

:class:`PoseEstimator` is the interface; :class:`UltralyticsPoseEstimator` implements it with
YOLO pose models and needs the optional extra (``pip install "skelgraph[pose]"``); everything
else here works without it.
"""

from skelgraph.pose.base import PoseEstimator, PoseSequence, resample_fps, resampled_length, retime
from skelgraph.pose.tracking import Detections, PersonFollower, person_scores
from skelgraph.pose.ultralytics import UltralyticsPoseEstimator, result_detections

__all__ = [
    "Detections",
    "PersonFollower",
    "PoseEstimator",
    "PoseSequence",
    "UltralyticsPoseEstimator",
    "person_scores",
    "resample_fps",
    "resampled_length",
    "result_detections",
    "retime",
]
