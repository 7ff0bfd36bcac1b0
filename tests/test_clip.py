from __future__ import annotations

import numpy as np
import pytest

from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout, get_layout


def make_keypoints(
    num_frames: int = 5, num_joints: int = 17, channels: int = 3, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = rng.normal(size=(num_frames, num_joints, channels)).astype(np.float32)
    kp[..., -1] = rng.uniform(0.0, 1.0, size=(num_frames, num_joints))
    return kp


def test_valid_2d_clip_resolves_layout_and_keeps_array():
    kp = make_keypoints()
    clip = SkeletonClip(kp, "coco17", label=3, fps=25, source="a.mp4", meta={"split": "train"})
    assert clip.layout is get_layout("coco17")
    assert clip.keypoints is kp  # already float32: no copy
    assert (clip.num_frames, clip.num_joints, clip.num_channels) == (5, 17, 3)
    assert not clip.is_3d
    assert clip.fps == 25.0 and isinstance(clip.fps, float)
    assert clip.meta == {"split": "train"}
    assert repr(clip) == (
        "SkeletonClip(keypoints=[5x17x3], layout='coco17', label=3, fps=25.0, source='a.mp4')"
    )


def test_valid_3d_clip_is_cast_to_float32():
    kp = make_keypoints(channels=4, num_joints=25).astype(np.float64)
    clip = SkeletonClip(kp, get_layout("ntu25"))
    assert clip.is_3d
    assert clip.keypoints.dtype == np.float32
    np.testing.assert_allclose(clip.keypoints, kp, rtol=1e-6)
    assert clip.meta == {} and clip.label is None and clip.fps is None


@pytest.mark.parametrize(
    ("label", "expected"), [(2, 2), (np.int64(7), 7), ("golf_swing", "golf_swing"), (None, None)]
)
def test_label_is_index_or_class_name(label, expected):
    clip = SkeletonClip(make_keypoints(), "coco17", label=label)
    assert clip.label == expected
    assert type(clip.label) is type(expected)


@pytest.mark.parametrize("label", [True, 1.5, ["a"]])
def test_label_of_other_type_is_rejected(label):
    with pytest.raises(TypeError, match=r"clip\.label"):
        SkeletonClip(make_keypoints(), "coco17", label=label)


def test_custom_layout_object():
    layout = Layout(
        name="stick3",
        joints=("top", "middle", "bottom"),
        bones=((0, 1), (2, 1)),
        center=(2,),
        torso=((0,), (2,)),
        pairs=(),
    )
    clip = SkeletonClip(make_keypoints(num_joints=3), layout)
    assert clip.layout is layout


def test_nan_coordinates_with_zero_confidence_mean_missing():
    kp = make_keypoints()
    kp[2, 4, :2] = np.nan
    kp[2, 4, 2] = 0.0
    clip = SkeletonClip(kp, "coco17")
    assert np.isnan(clip.keypoints[2, 4, 0])


def test_confidence_bounds_are_inclusive():
    kp = make_keypoints()
    kp[0, :, -1] = 0.0
    kp[1, :, -1] = 1.0
    SkeletonClip(kp, "coco17")


def _with(kp: np.ndarray, index: tuple, value: float) -> np.ndarray:
    kp = kp.copy()
    kp[index] = value
    return kp


@pytest.mark.parametrize(
    ("keypoints", "layout", "match"),
    [
        (np.zeros((17, 3), np.float32), "coco17", r"expected rank 3 \(T, V, C\), got rank 2"),
        (np.zeros((1, 2, 17, 3), np.float32), "coco17", "got rank 4"),
        (make_keypoints(num_joints=13), "coco17", "expected 17 joints for layout 'coco17', got 13"),
        (make_keypoints(channels=2), "coco17", "expected 3 .* or 4 .* channels, got 2"),
        (make_keypoints(channels=5), "coco17", "channels, got 5"),
        (np.zeros((0, 17, 3), np.float32), "coco17", "expected at least 1 frame, got 0"),
        (make_keypoints(), "coco18", r"clip.layout: expected a registered layout name .*coco17"),
        (
            _with(make_keypoints(), (2, 3, 2), 1.5),
            "coco17",
            r"expected confidence in \[0, 1\], got 1.5 at frame 2, joint 3 \('left_ear'\)",
        ),
        (
            _with(make_keypoints(), (4, 0, 2), -0.25),
            "coco17",
            r"confidence in \[0, 1\], got -0.25 at frame 4, joint 0",
        ),
        (
            _with(make_keypoints(), (1, 1, 2), np.nan),
            "coco17",
            r"confidence in \[0, 1\], got nan at frame 1, joint 1",
        ),
        (
            _with(_with(make_keypoints(), (3, 16, 2), 0.5), (3, 16, 0), np.nan),
            "coco17",
            r"expected finite coordinates where confidence is not 0, got \[nan, .*"
            r"at frame 3, joint 16 \('right_ankle'\)",
        ),
        (
            _with(_with(make_keypoints(channels=4), (0, 5, 3), 1.0), (0, 5, 2), np.inf),
            "coco17",
            r"finite coordinates .*inf.* at frame 0, joint 5",
        ),
    ],
)
def test_invalid_clip_raises(keypoints, layout, match):
    with pytest.raises(ValueError, match=match):
        SkeletonClip(keypoints, layout)


def test_unknown_layout_lists_known_layouts():
    with pytest.raises(ValueError) as info:
        SkeletonClip(make_keypoints(), "nope")
    for name in ("coco17", "penn13", "openpose18", "ntu25"):
        assert name in str(info.value)


@pytest.mark.parametrize("fps", [0.0, -30.0, float("nan"), float("inf")])
def test_invalid_fps_raises(fps):
    with pytest.raises(ValueError, match=r"clip\.fps: expected a positive finite frame rate"):
        SkeletonClip(make_keypoints(), "coco17", fps=fps)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": 17}, "clip.layout"),
        ({"source": 3}, "clip.source"),
        ({"meta": [1, 2]}, "clip.meta"),
    ],
)
def test_wrong_types_raise(kwargs, match):
    kwargs = {"layout": "coco17", **kwargs}
    with pytest.raises(TypeError, match=match):
        SkeletonClip(make_keypoints(), **kwargs)


def test_save_and_load_methods(tmp_path):
    clip = SkeletonClip(make_keypoints(channels=4), "coco17", label="squat", fps=30.0)
    clip.save(tmp_path / "clip.npz")
    loaded = SkeletonClip.load(tmp_path / "clip.npz")
    np.testing.assert_array_equal(loaded.keypoints, clip.keypoints)
    assert (loaded.label, loaded.fps, loaded.layout) == ("squat", 30.0, clip.layout)
