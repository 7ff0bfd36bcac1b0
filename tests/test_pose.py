from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from skelgraph.clip import SkeletonClip
from skelgraph.pose import (
    Detections,
    PersonFollower,
    PoseSequence,
    person_scores,
    resample_fps,
    resampled_length,
    result_detections,
    retime,
)

V = 17


@pytest.fixture(scope="module")
def ultralytics(tmp_path_factory: pytest.TempPathFactory):
    """ultralytics, imported offline with its settings in a temporary folder; skips without it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics")))
        mp.setenv("YOLO_OFFLINE", "1")
        module = pytest.importorskip("ultralytics")
        pytest.importorskip("cv2")
        yield module


def frames(num: int, size: int = 96, seed: int = 0) -> Iterator[np.ndarray]:
    """Frames of a bright rectangle moving over noise, :obj:`(size, size, 3)` uint8."""
    rng = np.random.default_rng(seed)
    for t in range(num):
        frame = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        x = 8 + 3 * t % (size - 30)
        frame[20 : size - 10, x : x + 20] = (200, 180, 160)
        yield frame


def write_test_video(path: Path, num: int = 10, size: int = 96, fps: float = 25.0) -> Path:
    from skelgraph.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    assert write_video(path, frames(num, size), fps) == num
    return path


def person_keypoints(cx: float, cy: float, conf: float = 0.9) -> np.ndarray:
    """A (17, 3) pose around (cx, cy), joint j offset by j pixels."""
    kp = np.zeros((V, 3), dtype=np.float32)
    kp[:, 0] = cx + np.arange(V)
    kp[:, 1] = cy - np.arange(V)
    kp[:, 2] = conf
    return kp


# people as (track id or None, x1, y1, x2, y2, box confidence)
Person = tuple[int | None, float, float, float, float, float]


def make_result(people: Sequence[Person], size: int = 200):
    """A real ultralytics Results of a pose model with the given people."""
    import torch
    from ultralytics.engine.results import Results

    tracked = all(p[0] is not None for p in people)
    width = 7 if tracked else 6
    boxes = torch.zeros((len(people), width))
    keypoints = torch.zeros((len(people), V, 3))
    for i, (track_id, x1, y1, x2, y2, conf) in enumerate(people):
        row = [x1, y1, x2, y2, *([track_id] if tracked else []), conf, 0.0]
        boxes[i] = torch.tensor(row, dtype=torch.float32)
        keypoints[i] = torch.from_numpy(person_keypoints((x1 + x2) / 2, (y1 + y2) / 2))
    image = np.zeros((size, size, 3), dtype=np.uint8)
    return Results(image, path="frame.jpg", names={0: "person"}, boxes=boxes, keypoints=keypoints)


def followed_x(keypoints: np.ndarray) -> float | None:
    """The nose x of a followed pose, None for an empty frame."""
    return None if keypoints[:, 2].max() == 0 else float(keypoints[0, 0])


# ------------------------------------------------------------------------------------------------
# without ultralytics


def test_import_without_ultralytics() -> None:
    code = (
        "import sys\n"
        "sys.modules['ultralytics'] = None\n"
        "sys.modules['cv2'] = None\n"
        "import skelgraph, skelgraph.pose\n"
        "try:\n"
        "    skelgraph.pose.UltralyticsPoseEstimator('yolo11n-pose.yaml')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert 'pip install "skelgraph[pose]"' in out


def test_resample_fps() -> None:
    rng = np.random.default_rng(0)
    kp = rng.uniform(0, 100, (30, V, 3)).astype(np.float32)
    kp[..., 2] = 1.0
    assert np.array_equal(resample_fps(kp, 30, 30), kp)
    half = resample_fps(kp, 30, 15)
    assert half.shape == (15, V, 3) and np.array_equal(half, kp[::2])
    double = resample_fps(kp, 15, 30)
    assert double.shape == (60, V, 3)
    np.testing.assert_allclose(double[1], (kp[0] + kp[1]) / 2, rtol=1e-6)
    assert np.array_equal(double[-2:], kp[[-1, -1]])  # clamped to the last frame


def test_resample_fps_never_blends_missing_joints() -> None:
    kp = np.zeros((2, V, 3), dtype=np.float32)
    kp[1] = person_keypoints(50, 50)  # frame 0: nobody (confidence 0)
    out = resample_fps(kp, 10, 40)
    assert out.shape == (8, V, 3)
    assert np.array_equal(out[1], kp[0]) and np.array_equal(out[2], kp[1])
    SkeletonClip(out, "coco17")
    with pytest.raises(ValueError, match="target_fps"):
        resample_fps(kp, 10, 0)


def test_retime() -> None:
    ten = list(range(10))
    assert list(retime(ten, 30, 30)) == ten
    assert list(retime(ten, 30, 15)) == [0, 2, 4, 6, 8]
    assert list(retime(ten, 25, 10)) == [0, 3, 5, 8]
    assert list(retime(ten[:3], 10, 20)) == [
        0,
        1,
        1,
        2,
        2,
        2,
    ]  # the duration is kept: 3 frames at 10 fps, 6 at 20


@pytest.mark.parametrize(
    ("fps", "target_fps"),
    [(30, 15), (25, 10), (10, 20), (30, 25), (25, 30), (29.97, 30), (60, 24), (6, 1), (1, 6)],
)
def test_retime_picks_the_frames_resample_fps_copies(fps: float, target_fps: float) -> None:
    """A frame stream and keypoints are resampled by one rule: the frame count, and where
    resample_fps copies the nearer frame (missing joints), retime yields that frame."""
    for num_frames in range(1, 40):
        kp = np.zeros((num_frames, 1, 3), np.float32)
        kp[:, 0, 0] = np.arange(num_frames)  # frame index, confidence 0: never blended
        nearest = resample_fps(kp, fps, target_fps)[:, 0, 0].astype(int).tolist()
        assert list(retime(range(num_frames), fps, target_fps)) == nearest
        assert len(nearest) == resampled_length(num_frames, fps, target_fps)
    assert list(retime([], fps, target_fps)) == []
    with pytest.raises(ValueError, match="target_fps"):
        next(retime(range(3), fps, 0))


def test_retime_is_lazy() -> None:
    """Frames come as the stream arrives (after about half an output frame when downsampling)."""
    seen: list[int] = []

    def stream() -> Iterator[int]:
        for i in range(100):
            seen.append(i)
            yield i

    retimed = retime(stream(), 60, 30)
    assert [next(retimed) for _ in range(3)] == [0, 2, 4] and len(seen) == 6
    assert list(retime(stream(), 30, 30))[:1] == [0]


def test_detections_validation() -> None:
    with pytest.raises(ValueError, match=r"detections\.boxes: expected shape \(N, 4\)"):
        Detections(np.zeros((2, 5)), np.zeros(2), np.zeros((2, V, 3)))
    with pytest.raises(ValueError, match=r"detections\.scores: expected shape \(2,\)"):
        Detections(np.zeros((2, 4)), np.zeros(3), np.zeros((2, V, 3)))
    with pytest.raises(ValueError, match=r"detections\.keypoints"):
        Detections(np.zeros((2, 4)), np.zeros(2), np.zeros((2, V, 2)))
    with pytest.raises(ValueError, match=r"detections\.track_ids"):
        Detections(np.zeros((1, 4)), np.zeros(1), np.zeros((1, V, 3)), track_ids=[1, 2])
    assert len(Detections.empty()) == 0
    with pytest.raises(ValueError, match="patience"):
        PersonFollower(patience=-1)


def test_person_scores_prefer_confident_and_large() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 40, 40], [0, 0, 40, 40]], dtype=np.float32)
    people = Detections(boxes, np.array([0.9, 0.5, 0.1]), np.zeros((3, V, 3)))
    np.testing.assert_allclose(person_scores(people), [9.0, 20.0, 4.0], rtol=1e-6)


def test_follower_on_arrays_masks_joints() -> None:
    kp = person_keypoints(10, 10)
    kp[3, 2] = 0.2  # below the threshold
    kp[4, :2] = np.nan  # not finite
    people = Detections(np.array([[0, 0, 20, 20]]), np.array([0.8]), kp[None], np.array([5]))
    follower = PersonFollower(keypoint_threshold=0.3)
    out = follower.update(people)
    assert follower.followed_id == 5 and out.dtype == np.float32
    assert out[3, 2] == 0 and out[3, 0] == kp[3, 0]  # masked, coordinates kept
    assert out[4, 2] == 0 and np.isfinite(out).all()
    assert np.array_equal(out[5:], kp[5:])
    empty = follower.update(Detections.empty())
    assert np.array_equal(empty, np.zeros((V, 3))) and follower.followed_id == 5
    SkeletonClip(np.stack([out, empty]), "coco17")


def test_follower_without_track_ids_takes_the_best_per_frame() -> None:
    follower = PersonFollower(patience=2)
    for big in (0, 1, 0):
        boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], dtype=np.float32)
        boxes[big] = [0, 0, 50, 50]
        assert follower.select(Detections(boxes, np.array([0.9, 0.9]), np.zeros((2, V, 3)))) == big
        assert follower.followed_id is None


# ------------------------------------------------------------------------------------------------
# real ultralytics Results


def test_result_detections(ultralytics) -> None:
    people = result_detections(make_result([(3, 10, 20, 50, 120, 0.8), (7, 0, 0, 10, 10, 0.4)]))
    assert people.track_ids.tolist() == [3, 7]
    np.testing.assert_allclose(people.boxes[0], [10, 20, 50, 120])
    np.testing.assert_allclose(people.scores, [0.8, 0.4], rtol=1e-6)
    assert people.keypoints.shape == (2, V, 3)
    np.testing.assert_allclose(people.keypoints[0], person_keypoints(30, 70))
    untracked = result_detections(make_result([(None, 10, 20, 50, 120, 0.8)]))
    assert untracked.track_ids is None and len(untracked) == 1
    assert len(result_detections(make_result([]))) == 0


def test_follow_zero_one_two_people(ultralytics) -> None:
    follower = PersonFollower()
    nobody = follower.update(result_detections(make_result([])))
    assert nobody.shape == (V, 3) and not nobody.any() and follower.followed_id is None
    one = follower.update(result_detections(make_result([(4, 100, 20, 140, 180, 0.6)])))
    assert followed_x(one) == 120 and follower.followed_id == 4
    follower.reset()
    # two people: the large confident one wins over the small one, whatever their order
    small, large = (1, 0, 0, 20, 40, 0.9), (2, 60, 10, 140, 190, 0.7)
    for people in ([small, large], [large, small]):
        follower.reset()
        assert followed_x(follower.update(result_detections(make_result(people)))) == 100
        assert follower.followed_id == 2


def test_follow_keeps_identity_while_visible(ultralytics) -> None:
    follower = PersonFollower(patience=3)
    a = (1, 60, 10, 140, 190, 0.9)
    b = (2, 0, 0, 30, 60, 0.5)
    assert followed_x(follower.update(result_detections(make_result([a, b])))) == 100
    # b grows larger than a: a stays followed while it is visible
    b_large = (2, 0, 0, 190, 199, 0.95)
    for _ in range(3):
        assert followed_x(follower.update(result_detections(make_result([b_large, a])))) == 100
    assert follower.followed_id == 1


def test_follow_person_leaving_and_returning(ultralytics) -> None:
    follower = PersonFollower(patience=3)
    a = (1, 60, 10, 140, 190, 0.9)
    b = (2, 0, 0, 30, 60, 0.5)
    xs = [followed_x(follower.update(result_detections(make_result([a, b])))) for _ in range(2)]
    # a leaves for `patience` frames: nobody is reported, b is not taken
    xs += [followed_x(follower.update(result_detections(make_result([b])))) for _ in range(3)]
    # a returns with its track id: identity kept
    xs.append(followed_x(follower.update(result_detections(make_result([b, a])))))
    assert xs == [100, 100, None, None, None, 100] and follower.followed_id == 1
    # a leaves for longer than `patience`: b, the best remaining track, is re-acquired ...
    xs = [followed_x(follower.update(result_detections(make_result([b])))) for _ in range(5)]
    assert xs == [None, None, None, 15, 15] and follower.followed_id == 2
    # ... and kept when a comes back
    assert followed_x(follower.update(result_detections(make_result([a, b])))) == 15


def test_follow_through_bytetrack(ultralytics) -> None:
    """ultralytics' ByteTrack assigns the track ids (as ``YOLO.track`` does) to known boxes of
    two people; the followed one walks, leaves the picture for 4 frames and comes back."""
    import torch
    import yaml
    from ultralytics.trackers.byte_tracker import BYTETracker
    from ultralytics.utils import IterableSimpleNamespace
    from ultralytics.utils.checks import check_yaml

    config = yaml.safe_load(Path(check_yaml("bytetrack.yaml")).read_text())
    tracker = BYTETracker(IterableSimpleNamespace(**config))
    follower = PersonFollower(patience=10)
    followed = []
    for t in range(30):
        people = [(0, 150, 50, 180, 120, 0.8)]  # small, standing
        if not 10 <= t < 14:
            people.append((0, 20 + 2 * t, 10, 100 + 2 * t, 190, 0.9))  # large, walking right
        people = people[::-1] if t % 2 else people
        result = make_result([(None, *p[1:]) for p in people])
        tracks = tracker.update(result.boxes.cpu().numpy(), result.orig_img)
        result = result[tracks[:, -1].astype(int)]
        result.update(boxes=torch.as_tensor(tracks[:, :-1], dtype=torch.float32))
        followed.append(followed_x(follower.update(result_detections(result))))
    large = [60.0 + 2 * t for t in range(30)]
    expected = [None if 10 <= t < 14 else large[t] for t in range(30)]
    np.testing.assert_allclose(
        [np.nan if x is None else x for x in followed],
        [np.nan if x is None else x for x in expected],
        atol=1.0,
    )


# ------------------------------------------------------------------------------------------------
# the estimator end to end (untrained yolo11n-pose: no weights can be downloaded here)


@pytest.fixture(scope="module")
def estimator(ultralytics):
    from skelgraph.pose import UltralyticsPoseEstimator

    return UltralyticsPoseEstimator("yolo11n-pose.yaml", device="cpu", imgsz=64)


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_estimator_on_a_video_file(estimator, tmp_path: Path, suffix: str) -> None:
    video = write_test_video(tmp_path / f"clip{suffix}", num=10, fps=25.0)
    keypoints, fps = sequence = estimator.estimate(video)
    assert isinstance(sequence, PoseSequence)
    assert keypoints.shape == (10, V, 3) and keypoints.dtype == np.float32 and fps == 25.0
    clip = sequence.to_clip(label="walk", source=video.name)
    assert clip.layout.name == "coco17" and clip.num_frames == 10 and clip.fps == 25.0
    assert ((keypoints[..., 2] == 0) | (keypoints[..., 2] >= 0.3)).all()


def test_estimator_on_frames_with_target_fps(ultralytics) -> None:
    from skelgraph.pose import UltralyticsPoseEstimator

    estimator = UltralyticsPoseEstimator(
        "yolo11n-pose.yaml", device="cpu", imgsz=64, tracker=None, batch_size=4, target_fps=10
    )
    assert estimator(frames(6)).shape == (6, V, 3)
    assert list(estimator.stream(frames(0))) == []
    keypoints, fps = estimator.estimate(frames(9), fps=30.0)
    assert keypoints.shape == (3, V, 3) and fps == 10.0
    with pytest.raises(ValueError, match="source frame rate is unknown"):
        estimator.estimate(frames(3))
    with pytest.raises(ValueError, match="expected at least one decodable frame"):
        estimator.estimate(frames(0), fps=30.0)


def test_estimator_tracks_what_the_model_detects(ultralytics) -> None:
    """An untrained model with its class bias raised reports (random) people in every frame, so
    the full path runs: YOLO.track ids, the follower, keypoint masking; each call starts a fresh
    tracker, so two calls on the same frames agree."""
    import torch

    from skelgraph.pose import UltralyticsPoseEstimator

    model = ultralytics.YOLO("yolo11n-pose.yaml")
    with torch.no_grad():
        for branch in model.model.model[-1].cv3:
            branch[-1].bias.fill_(4.0)
    estimator = UltralyticsPoseEstimator(model, device="cpu", imgsz=64, keypoint_threshold=0.5)
    first = estimator(frames(8))
    assert first.shape == (8, V, 3)
    assert (first[..., 2].max(axis=1) > 0).all()  # somebody followed in every frame
    assert ((first[..., 2] == 0) | (first[..., 2] >= 0.5)).all()
    assert (first[..., 2] == 0).any()
    np.testing.assert_array_equal(estimator(frames(8)), first)


def test_estimator_rejects_models_that_are_not_coco17_pose(ultralytics) -> None:
    from skelgraph.pose import UltralyticsPoseEstimator

    with pytest.raises(ValueError, match="expected a pose model"):
        UltralyticsPoseEstimator("yolo11n.yaml")
    assert "yolo11n-pose.yaml" in repr(UltralyticsPoseEstimator("yolo11n-pose.yaml"))
