from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from skelgraph.clip import SkeletonClip
from skelgraph.io import load_penn_action_mat
from skelgraph.layouts import get_layout
from skelgraph.preprocess import (
    CausalPreprocessor,
    PreprocessConfig,
    frame_normalization,
    interpolate_missing,
    normalize,
    pad,
    preprocess,
    resample,
    sliding_windows,
)

#: property tests run on a shared 2-core machine: no per-example deadline
property_settings = settings(deadline=None, max_examples=60)

COCO = get_layout("coco17")
CONFIDENCES = [0.0, 0.1, 0.19, 0.2, 0.5, 1.0]


@st.composite
def keypoints(
    draw, num_joints: int = 6, max_frames: int = 12, low: float = -100.0, high: float = 100.0
):
    """(T, V, C) float32 keypoints, 2D or 3D, confidences around 0.2, maybe NaN where it is 0."""
    num_frames = draw(st.integers(1, max_frames))
    channels = draw(st.sampled_from([3, 4]))
    coords = draw(
        arrays(
            np.float32,
            (num_frames, num_joints, channels - 1),
            elements=st.floats(low, high, width=32, allow_subnormal=False),
        )
    )
    conf = draw(arrays(np.float32, (num_frames, num_joints), elements=st.sampled_from(CONFIDENCES)))
    if draw(st.booleans()):
        coords[conf == 0] = np.nan
    return np.concatenate([coords, conf[..., None]], axis=-1)


def neighbours(valid: np.ndarray, t: int) -> tuple[int | None, int | None]:
    """The valid frames closest before and after frame ``t`` in a 1D validity mask."""
    before = np.flatnonzero(valid[:t])
    after = np.flatnonzero(valid[t + 1 :]) + t + 1
    return (before[-1] if before.size else None), (after[0] if after.size else None)


# ------------------------------------------------------------------------------------------------
# interpolate_missing


@property_settings
@given(keypoints(), st.sampled_from([0.0, 0.2, 0.5]))
def test_interpolation_keeps_valid_frames(kp, threshold):
    out = interpolate_missing(kp, threshold)
    valid = (kp[..., -1] >= threshold) & np.isfinite(kp).all(axis=-1)
    np.testing.assert_array_equal(out[valid], kp[valid])
    assert out.dtype == np.float32 and out.shape == kp.shape


@property_settings
@given(keypoints())
def test_interpolated_values_lie_between_their_neighbours(kp):
    out = interpolate_missing(kp, 0.2)
    valid = kp[..., -1] >= 0.2
    for v in range(kp.shape[1]):
        if not valid[:, v].any():
            assert (out[:, v] == 0).all()  # coordinates and confidence
            continue
        np.testing.assert_array_equal(out[:, v, -1], kp[:, v, -1])  # confidence kept
        for t in np.flatnonzero(~valid[:, v]):
            before, after = neighbours(valid[:, v], t)
            if before is None:
                np.testing.assert_array_equal(out[t, v, :-1], kp[after, v, :-1])
            elif after is None:
                np.testing.assert_array_equal(out[t, v, :-1], kp[before, v, :-1])
            else:
                lo = np.minimum(kp[before, v, :-1], kp[after, v, :-1])
                hi = np.maximum(kp[before, v, :-1], kp[after, v, :-1])
                assert (lo <= out[t, v, :-1]).all() and (out[t, v, :-1] <= hi).all()


@pytest.mark.parametrize("channels", [3, 4])
def test_interpolation_is_linear_and_fills_ends_with_nearest_value(channels):
    series = np.array([9.0, 2.0, np.nan, 99.0, 8.0, 7.0, 5.0])
    conf = np.array([0.1, 1.0, 0.0, 0.05, 1.0, 0.0, 0.0])
    kp = np.zeros((7, 17, channels), np.float32)
    kp[:, 3, :-1] = series[:, None] * np.arange(1, channels)
    kp[:, 3, -1] = conf
    kp[:, :, -1] = np.where(np.arange(17) == 3, conf[:, None], 1.0)
    out = interpolate_missing(kp, 0.2)
    expected = np.array([2.0, 2.0, 4.0, 6.0, 8.0, 8.0, 8.0])[:, None] * np.arange(1, channels)
    np.testing.assert_allclose(out[:, 3, :-1], expected, rtol=1e-6)
    np.testing.assert_array_equal(out[:, 3, -1], conf.astype(np.float32))
    np.testing.assert_array_equal(np.delete(out, 3, axis=1), np.delete(kp, 3, axis=1))


def test_joint_missing_in_whole_clip_becomes_zero_with_zero_confidence():
    kp = np.random.default_rng(0).uniform(1, 2, size=(10, 17, 3)).astype(np.float32)
    kp[:, 0, -1] = 0.1
    kp[:, 1] = [np.nan, np.nan, 0.0]
    out = interpolate_missing(kp)
    np.testing.assert_array_equal(out[:, :2], 0.0)
    np.testing.assert_array_equal(out[:, 2:], kp[:, 2:])


def test_single_valid_frame_fills_whole_series():
    kp = np.zeros((5, 2, 4), np.float32)
    kp[2, 0] = [1.0, 2.0, 3.0, 0.9]
    out = interpolate_missing(kp)
    np.testing.assert_array_equal(out[:, 0, :3], np.tile([1.0, 2.0, 3.0], (5, 1)))


def test_interpolation_does_not_modify_its_input():
    kp = np.zeros((4, 2, 3), np.float32)
    kp[0, 0] = [1.0, 1.0, 1.0]
    copy = kp.copy()
    interpolate_missing(kp)
    np.testing.assert_array_equal(kp, copy)


# ------------------------------------------------------------------------------------------------
# normalize


def standing_pose(num_frames: int = 4, channels: int = 3) -> np.ndarray:
    """coco17 keypoints: hips at (±1, 0), shoulders at (±1, 4) (torso length 4), all valid."""
    kp = np.zeros((num_frames, 17, channels), np.float32)
    kp[..., -1] = 1.0
    kp[:, [11, 12], 0] = [-1.0, 1.0]
    kp[:, [5, 6], 0] = [-1.0, 1.0]
    kp[:, [5, 6], 1] = 4.0
    return kp


def test_normalize_uses_first_valid_pelvis_and_median_torso():
    kp = standing_pose(num_frames=5)
    kp[:, :, 0] += np.arange(5)[:, None]  # walks along x
    kp[0, 11, -1] = 0.1  # frame 0 has no valid pelvis
    kp[:, [5, 6], 1] = np.array([4.0, 4.0, 6.0, 100.0, 6.0])[:, None]  # torso lengths
    out, origin, divisor = normalize(kp, "coco17")
    np.testing.assert_allclose(origin, [1.0, 0.0])
    # frames 1..4 have a valid torso: lengths 4, 6, 100, 6 -> median 6
    assert divisor == pytest.approx(6.0)
    np.testing.assert_allclose(out[..., :-1] * divisor + origin, kp[..., :-1], atol=1e-5)
    np.testing.assert_array_equal(out[..., -1], kp[..., -1])


def test_normalize_3d():
    kp = standing_pose(channels=4)
    kp[..., 2] = 10.0
    out, origin, divisor = normalize(kp, COCO)
    np.testing.assert_allclose(origin, [0.0, 0.0, 10.0])
    assert divisor == pytest.approx(4.0)
    np.testing.assert_allclose(out[0, 5, :3], [-0.25, 1.0, 0.0])


def test_normalize_side_view_uses_the_visible_joints_of_each_group():
    kp = standing_pose(num_frames=3)
    kp[:, [5, 11], -1] = 0.0  # left shoulder and left hip never visible
    kp[:, 6, 1] = [3.0, 5.0, 9.0]  # right torso lengths 3, 5, 9
    _, origin, divisor = normalize(kp, "coco17")
    np.testing.assert_allclose(origin, [1.0, 0.0])
    assert divisor == pytest.approx(5.0)
    kp[:, 6, -1] = 0.0  # no shoulder at all: the longest valid bone is the scale
    child, parent = np.asarray(COCO.bones).T
    valid = (kp[:, child, -1] >= 0.2) & (kp[:, parent, -1] >= 0.2)
    bones = np.linalg.norm(kp[:, child, :2] - kp[:, parent, :2], axis=-1)
    longest = np.where(valid, bones, 0.0).max(axis=1)
    assert normalize(kp, "coco17")[2] == pytest.approx(np.median(longest))


def test_normalize_without_valid_frames_falls_back_to_identity():
    kp = standing_pose()
    kp[..., -1] = 0.1
    out, origin, divisor = normalize(kp, "coco17")
    np.testing.assert_array_equal(origin, [0.0, 0.0])
    assert divisor == 1.0
    np.testing.assert_array_equal(out, kp)


def test_normalize_guards_against_zero_torso_and_can_skip_steps():
    kp = standing_pose()
    kp[:, [5, 6], 1] = 0.0
    kp[:, [5, 6], 0] = [-1.0, 1.0]
    _, _, divisor = normalize(kp, "coco17", eps=1e-3)
    assert divisor == 1e-3
    kp = standing_pose() + np.array([5.0, 5.0, 0.0], np.float32)
    out, origin, divisor = normalize(kp, "coco17", center=False, scale=False)
    np.testing.assert_array_equal(out, kp)
    assert divisor == 1.0 and (origin == 0).all()


def test_normalize_rejects_wrong_joint_count():
    with pytest.raises(ValueError, match="kp: expected 13 joints for layout 'penn13', got 17"):
        normalize(standing_pose(), "penn13")


# ------------------------------------------------------------------------------------------------
# preprocess


@st.composite
def posed_keypoints(draw):
    """coco17 keypoints, torso at least 1 long, a frame with a valid shoulder and hip (or both)."""
    kp = draw(keypoints(num_joints=17, low=-1.0, high=1.0))
    frame = draw(st.integers(0, kp.shape[0] - 1))
    torso = draw(st.sampled_from([[5], [6], [5, 6]])) + draw(
        st.sampled_from([[11], [12], [11, 12]])
    )
    kp[frame, torso] = np.nan_to_num(kp[frame, torso])
    kp[frame, torso, -1] = 1.0
    kp[:, [5, 6], 1] += 3.0  # shoulders above the hips
    return kp


@property_settings
@given(
    posed_keypoints(),
    st.floats(0.25, 4.0),
    arrays(np.float64, 3, elements=st.floats(-50, 50)),
)
def test_preprocess_is_invariant_to_translation_and_scale(kp, factor, shift):
    moved = kp.copy()
    moved[..., :-1] = kp[..., :-1] * factor + shift[: kp.shape[-1] - 1]
    expected = preprocess(kp, "coco17")
    np.testing.assert_allclose(preprocess(moved, "coco17"), expected, atol=2e-4)
    assert np.isfinite(expected).all()


def test_preprocess_clip_and_config():
    kp = standing_pose(num_frames=6)
    kp[:, :, :2] = kp[:, :, :2] * 3.0 + 7.0
    kp[2, 9] = [np.nan, np.nan, 0.0]
    kp[:, 10] = [np.nan, np.nan, 0.0]  # right wrist never seen
    clip = SkeletonClip(kp, "coco17")
    out = preprocess(clip)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 11, :2], [-0.25, 0.0])
    np.testing.assert_array_equal(out[:, 10], 0.0)
    np.testing.assert_array_equal(preprocess(kp, "coco17"), out)

    raw = preprocess(clip, config=PreprocessConfig(interpolate=False))
    np.testing.assert_array_equal(raw[2, 9], [0.0, 0.0, 0.0])  # NaN coordinates -> origin
    unscaled = preprocess(clip, config=PreprocessConfig(scale=False, center=False))
    np.testing.assert_array_equal(unscaled[:, 11], kp[:, 11])


def test_preprocess_layout_errors():
    clip = SkeletonClip(standing_pose(), "coco17")
    with pytest.raises(ValueError, match="layout: expected the clip's layout 'coco17'"):
        preprocess(clip, "penn13")
    with pytest.raises(ValueError, match="layout: expected a Layout or layout name"):
        preprocess(clip.keypoints)


def test_preprocess_config():
    config = PreprocessConfig(confidence_threshold=0.3)
    assert config.to_dict() == {
        "confidence_threshold": 0.3,
        "eps": 1e-6,
        "center": True,
        "scale": True,
        "interpolate": True,
        "causal": False,
    }
    assert PreprocessConfig(**config.to_dict()) == config
    with pytest.raises(ValueError, match=r"confidence_threshold: expected a value in \[0, 1\]"):
        PreprocessConfig(confidence_threshold=1.5)
    with pytest.raises(ValueError, match="eps: expected a positive value, got 0"):
        PreprocessConfig(eps=0)


def test_preprocess_real_penn_action_clip(penn_action_root):
    clip = load_penn_action_mat(penn_action_root / "labels" / "0001.mat")
    out = preprocess(clip)
    assert out.shape == (151, 13, 3) and np.isfinite(out).all()
    layout = clip.layout
    valid = (clip.keypoints[:, layout.center, -1] >= 0.2).all(axis=1)
    first = int(np.argmax(valid))
    np.testing.assert_allclose(out[first, layout.center, :2].mean(axis=0), 0.0, atol=1e-5)
    upper, lower = (list(j) for j in layout.torso)
    torso = out[:, upper, :2].mean(axis=1) - out[:, lower, :2].mean(axis=1)
    valid_torso = (clip.keypoints[:, upper + lower, -1] >= 0.2).all(axis=1)
    assert np.median(np.linalg.norm(torso[valid_torso], axis=-1)) == pytest.approx(1.0, rel=1e-4)


# ------------------------------------------------------------------------------------------------
# causal preprocessing

CAUSAL = PreprocessConfig(causal=True)


def stream(kp: np.ndarray, layout: str = "coco17", config: PreprocessConfig = CAUSAL) -> np.ndarray:
    """Every frame of ``kp`` through one :class:`CausalPreprocessor`."""
    online = CausalPreprocessor(layout, config)
    return np.stack([online.update(frame) for frame in kp])


@property_settings
@given(keypoints(num_joints=17, max_frames=16), st.booleans(), st.booleans(), st.booleans())
def test_causal_preprocessor_equals_offline_causal_preprocess(kp, interpolate, center, scale):
    config = PreprocessConfig(causal=True, interpolate=interpolate, center=center, scale=scale)
    offline = preprocess(kp, "coco17", config)
    assert offline.dtype == np.float32 and np.isfinite(offline).all()
    np.testing.assert_allclose(stream(kp, config=config), offline, rtol=1e-6, atol=1e-6)
    # causal: every prefix gives the same frames
    for end in range(1, len(kp)):
        np.testing.assert_array_equal(preprocess(kp[:end], "coco17", config), offline[:end])


def test_causal_forward_fill_and_first_valid_pelvis():
    kp = standing_pose(num_frames=6)
    kp[:, :, 0] += np.arange(6)[:, None]  # walks along x
    kp[:2, 11, -1] = 0.1  # no valid pelvis before frame 2; the left hip appears there
    kp[3:5, 9] = [np.nan, np.nan, 0.0]  # left wrist lost for two frames
    kp[:4, 10, -1] = 0.0  # right wrist first seen at frame 4
    out = preprocess(kp, "coco17", CAUSAL)
    # frames 0, 1 fall back to the partly visible pelvis (the right hip of frame 0) and torso
    # (mid-shoulders to the right hip: length sqrt(17))
    np.testing.assert_allclose(out[0, 12, :2], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(out[1, 12, :2], [1 / np.sqrt(17), 0.0], atol=1e-6)
    # from frame 2 the origin is the first complete pelvis, (2, 0), and the torso 4 long
    np.testing.assert_allclose(out[2, 11, :2], [-0.25, 0.0], atol=1e-6)
    # the lost wrist keeps its frame-2 position (not interpolated towards frame 5)
    np.testing.assert_allclose(out[3:5, 9, :2], out[[2, 2], 9, :2])
    np.testing.assert_array_equal(out[3:5, 9, -1], 0.0)
    # before its first valid frame the right wrist is 0, with its confidence
    np.testing.assert_array_equal(out[:4, 10, :2], 0.0)
    np.testing.assert_array_equal(out[:4, 10, -1], 0.0)
    assert np.isfinite(out).all()


def test_causal_scale_is_the_running_median_torso():
    kp = standing_pose(num_frames=5)
    kp[:, [5, 6], 1] = np.array([4.0, 8.0, 100.0, 6.0, 2.0])[:, None]  # torso lengths
    online = CausalPreprocessor("coco17")
    divisors = []
    for frame in kp:
        online.update(frame)
        divisors.append(online.scale)
    np.testing.assert_allclose(divisors, [4.0, 6.0, 8.0, 7.0, 6.0])
    np.testing.assert_array_equal(online.origin, [0.0, 0.0])
    out = preprocess(kp, "coco17", CAUSAL)
    np.testing.assert_allclose(out[:, 5, 1], kp[:, 5, 1] / np.array(divisors))
    # a clip with a constant valid torso: causal and offline agree
    still = standing_pose(num_frames=4)
    np.testing.assert_allclose(preprocess(still, "coco17", CAUSAL), preprocess(still, "coco17"))


@property_settings
@given(keypoints(num_joints=17, max_frames=16), st.booleans(), st.booleans(), st.booleans())
def test_frame_normalization_is_what_preprocess_applies_to_the_last_frame(
    kp, causal, center, scale
):
    config = PreprocessConfig(causal=causal, center=center, scale=scale)
    origin, divisor = frame_normalization(kp, "coco17", config)
    out = preprocess(kp, "coco17", config)[-1]
    valid = (kp[-1, :, -1] >= config.confidence_threshold) & np.isfinite(kp[-1, :, :-1]).all(-1)
    expected = (kp[-1, valid, :-1].astype(np.float64) - origin) / divisor
    np.testing.assert_allclose(out[valid, :-1], expected, rtol=1e-5, atol=1e-5)
    assert origin.shape == (kp.shape[-1] - 1,) and divisor > 0
    if not center:
        np.testing.assert_array_equal(origin, 0.0)
    if not scale:
        assert divisor == 1.0
    if causal:  # the running statistics after the last frame
        online = CausalPreprocessor("coco17", config)
        for frame in kp:
            online.update(frame)
        np.testing.assert_allclose(origin, online.origin, rtol=1e-6)
        assert divisor == pytest.approx(online.scale)


def test_frame_normalization_of_a_prefix_ignores_later_frames():
    kp = standing_pose(num_frames=6)
    kp[:, [5, 6], 1] = np.array([4.0, 4.0, 4.0, 40.0, 40.0, 40.0])[:, None]  # torso lengths
    for causal in (True, False):
        config = PreprocessConfig(causal=causal)
        assert frame_normalization(kp[:3], "coco17", config)[1] == 4.0
    # the whole clip's median (offline) and the running median after frame 5 (causal) differ
    assert frame_normalization(kp, "coco17", PreprocessConfig())[1] == 22.0
    assert frame_normalization(kp, "coco17", CAUSAL)[1] == 22.0


def test_causal_preprocessor_reset_and_errors():
    kp = standing_pose(num_frames=3) * 7.0
    online = CausalPreprocessor("coco17")
    first = np.stack([online.update(frame) for frame in kp])
    assert online.num_frames == 3
    online.reset()
    assert online.num_frames == 0 and online.origin is None
    np.testing.assert_array_equal(np.stack([online.update(frame) for frame in kp]), first)
    with pytest.raises(ValueError, match=r"frame: expected shape \(17, C\) .* got \(13, 3\)"):
        online.update(np.zeros((13, 3)))
    with pytest.raises(ValueError, match="expected 3 channels like the earlier frames, got 4"):
        online.update(np.zeros((17, 4)))


def test_causal_preprocess_real_penn_action_clip(penn_action_root):
    clip = load_penn_action_mat(penn_action_root / "labels" / "0001.mat")
    offline = preprocess(clip, config=CAUSAL)
    assert offline.shape == (151, 13, 3) and np.isfinite(offline).all()
    np.testing.assert_allclose(stream(clip.keypoints, "penn13"), offline, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# resample, pad, sliding_windows


@property_settings
@given(keypoints(num_joints=2, max_frames=20), st.integers(1, 40))
def test_resample_shape_and_end_frames(kp, length):
    out = resample(kp, length)
    assert out.shape == (length, *kp.shape[1:]) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], kp[0])
    if length > 1:
        np.testing.assert_array_equal(out[-1], kp[-1])
    np.testing.assert_array_equal(resample(kp, kp.shape[0]), kp)


def test_resample_is_linear_in_time():
    ramp = np.broadcast_to(np.arange(5, dtype=np.float32)[:, None, None], (5, 2, 3))
    out = resample(ramp, 9)
    np.testing.assert_allclose(out[:, 0, 0], np.linspace(0, 4, 9))
    single = resample(ramp[:1], 4)
    np.testing.assert_array_equal(single, np.zeros((4, 2, 3)))


@property_settings
@given(keypoints(num_joints=2, max_frames=10), st.integers(0, 10))
def test_pad_shape_and_mask(kp, extra):
    length = kp.shape[0] + extra
    out, mask = pad(kp, length)
    assert out.shape == (length, *kp.shape[1:]) and mask.shape == (length,)
    assert mask.dtype == bool and mask.sum() == kp.shape[0] and mask[: kp.shape[0]].all()
    np.testing.assert_array_equal(out[mask], kp)
    assert (out[~mask] == 0).all()


def test_pad_rejects_long_clip():
    with pytest.raises(ValueError, match="kp: expected at most length=3 frames to pad, got 5"):
        pad(np.zeros((5, 2, 3)), 3)


@property_settings
@given(st.integers(1, 40), st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 4]))
def test_sliding_windows_cover_clip(num_frames, length, stride, channels):
    kp = np.random.default_rng(num_frames).normal(size=(num_frames, 3, channels))
    kp = kp.astype(np.float32)
    windows, mask, starts = sliding_windows(kp, length, stride)
    count = len(starts)
    assert windows.shape == (count, length, 3, channels)
    assert mask.shape == (count, length) and mask.dtype == bool and starts.dtype == np.int64
    assert starts[0] == 0 and starts[-1] == max(num_frames - length, 0)
    assert (np.diff(starts) > 0).all() and (np.diff(starts) <= stride).all()
    covered = np.zeros(num_frames, bool)
    for window, frames, start in zip(windows, mask, starts, strict=True):
        real = int(frames.sum())
        assert frames[:real].all() and (window[real:] == 0).all()
        np.testing.assert_array_equal(window[:real], kp[start : start + real])
        covered[start : start + real] = True
    assert covered.all() or stride > length
    if num_frames < length:
        assert count == 1 and mask.sum() == num_frames
    else:
        assert mask.all()
    windows[0, 0] += 1  # windows are copies
    assert not np.shares_memory(windows, kp)


def test_sliding_windows_starts():
    kp = np.zeros((11, 2, 3), np.float32)
    assert sliding_windows(kp, 4, 3)[2].tolist() == [0, 3, 6, 7]
    assert sliding_windows(kp[:10], 4, 3)[2].tolist() == [0, 3, 6]
    assert sliding_windows(kp, 11, 5)[2].tolist() == [0]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: interpolate_missing(np.zeros((3, 4))), r"kp: expected shape \(T, V, C\)"),
        (lambda: resample(np.zeros((0, 4, 3)), 3), r"with T >= 1 .* got \(0, 4, 3\)"),
        (lambda: pad(np.zeros((2, 4, 5)), 3), r"C in \(3, 4\), got \(2, 4, 5\)"),
        (lambda: resample(np.zeros((2, 4, 3)), 0), "length: expected a positive integer, got 0"),
        (
            lambda: sliding_windows(np.zeros((2, 4, 3)), 2, -1),
            "stride: expected a positive integer, got -1",
        ),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
