from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data
from torch_geometric.transforms import Compose

from skelgraph.augment import (
    GaussianJitter,
    RandomMirror,
    RandomRotation,
    RandomScale,
    RandomShear,
    RandomTemporalCrop,
    RandomTranslation,
    TemporalResample,
    default_train_transform,
)
from skelgraph.layouts import get_layout

LAYOUTS = ("penn13", "coco17")


def make_sample(
    seed: int, layout: str = "penn13", frames: int = 8, is_3d: bool = False, padded: int = 0
) -> Data:
    """A random sample: ``x [V, frames + padded, C]`` with some zero-confidence joints and
    ``padded`` zero frames at the end."""
    g = torch.Generator().manual_seed(seed)
    num_joints = get_layout(layout).num_joints
    channels = 4 if is_3d else 3
    x = torch.randn(num_joints, frames + padded, channels, generator=g) * 3
    conf = torch.rand(num_joints, frames + padded, generator=g)
    x[..., -1] = torch.where(conf < 0.2, torch.zeros_like(conf), conf)
    x[:, frames:] = 0
    mask = torch.zeros(1, frames + padded, dtype=torch.bool)
    mask[:, :frames] = True
    return Data(x=x, frame_mask=mask)


def bone_lengths(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``[num_bones, T]`` Euclidean bone lengths of ``x [V, T, C]``."""
    bones = torch.tensor(get_layout(layout).bones)
    coords = x[..., :-1]
    return (coords[bones[:, 0]] - coords[bones[:, 1]]).norm(dim=-1)


GEOMETRIC = [
    lambda layout, seed: RandomRotation(30.0, seed=seed),
    lambda layout, seed: RandomScale((0.5, 2.0), seed=seed),
    lambda layout, seed: RandomTranslation(1.0, seed=seed),
    lambda layout, seed: RandomMirror(layout, p=1.0, seed=seed),
    lambda layout, seed: GaussianJitter(0.1, seed=seed),
    lambda layout, seed: default_train_transform(layout, seed=seed),
    lambda layout, seed: RandomScale((0.5, 2.0), per_axis=True, seed=seed),
    lambda layout, seed: RandomShear(0.3, seed=seed),
]

samples = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "layout": st.sampled_from(LAYOUTS),
        "frames": st.integers(1, 10),
        "is_3d": st.booleans(),
    }
)


@settings(max_examples=40, deadline=None)
@given(sample=samples)
def test_mirror_twice_is_identity(sample: dict) -> None:
    data = make_sample(**sample)
    mirror = RandomMirror(sample["layout"], p=1.0)
    twice = mirror(mirror(data))
    torch.testing.assert_close(twice.x, data.x, atol=1e-5, rtol=0)


def test_mirror_swaps_left_and_right() -> None:
    layout = get_layout("penn13")
    data = make_sample(0)
    out = RandomMirror(layout, p=1.0)(data)
    left, right = layout.index("left_wrist"), layout.index("right_wrist")
    # the new left wrist is the reflected old right wrist, with its confidence
    torch.testing.assert_close(out.x[left, :, 1:], data.x[right, :, 1:])
    # x' = 2·centre_t − x of the swapped joint: the sum is the same for every joint of a frame
    twice_center = out.x[:, :, 0] + data.x[layout.flip_permutation(), :, 0]
    assert torch.allclose(twice_center, twice_center[:1].expand_as(twice_center), atol=1e-5)


def test_mirror_probability_zero_keeps_input() -> None:
    data = make_sample(1)
    assert torch.equal(RandomMirror("penn13", p=0.0)(data).x, data.x)


@settings(max_examples=40, deadline=None)
@given(sample=samples, degrees=st.floats(0.0, 180.0), offset=st.floats(0.0, 5.0))
def test_rotation_and_translation_keep_bone_lengths(
    sample: dict, degrees: float, offset: float
) -> None:
    data = make_sample(**sample)
    before = bone_lengths(data.x, sample["layout"])
    for transform in (
        RandomRotation(degrees, seed=sample["seed"]),
        RandomTranslation(offset, seed=sample["seed"]),
    ):
        after = bone_lengths(transform(data).x, sample["layout"])
        torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


#: float32 coordinates recover a map to about 1e-6; angles to a few thousandths of a degree
ATOL, DEGREES_ATOL = 1e-5, 0.01


def linear_map(before: Data, after: Data) -> torch.Tensor:
    """The ``[D, D]`` matrix ``M`` with ``after = M (before - centroid) + centroid`` in the first
    frame (all joints confident), by least squares."""
    x, y = before.x[:, 0, :-1].double(), after.x[:, 0, :-1].double()
    x, y = x - x.mean(0), y - y.mean(0)
    return torch.linalg.lstsq(x, y).solution.T


def euler_degrees(rotation: torch.Tensor) -> torch.Tensor:
    """Angles ``(x, y, z)`` in degrees of ``R = R_z R_y R_x``."""
    r = rotation
    angles = (torch.atan2(r[2, 1], r[2, 2]), -torch.asin(r[2, 0]), torch.atan2(r[1, 0], r[0, 0]))
    return torch.rad2deg(torch.stack(angles))


def confident_sample(seed: int, is_3d: bool) -> Data:
    data = make_sample(seed, frames=2, is_3d=is_3d)
    data.x[..., -1] = 1.0
    return data


@pytest.mark.parametrize("axes", [(0, 1, 2), (1,), (0, 1), (2,)])
def test_rotation_ranges_hold_per_axis(axes: tuple[int, ...]) -> None:
    max_degrees = tuple(60.0 if k in axes else 0.0 for k in range(3))
    rotation = RandomRotation(max_degrees, seed=0)
    data = confident_sample(0, is_3d=True)
    angles = []
    for _ in range(300):
        matrix = linear_map(data, rotation(data.clone()))
        identity = torch.eye(3, dtype=torch.float64)
        torch.testing.assert_close(matrix @ matrix.T, identity, atol=ATOL, rtol=0)
        assert torch.det(matrix) == pytest.approx(1.0, abs=ATOL)
        angles.append(euler_degrees(matrix))
    angles = torch.stack(angles)  # [300, 3]
    for k in range(3):
        if k in axes:
            assert angles[:, k].abs().max() <= 60.0 + DEGREES_ATOL  # none beyond the range
            assert angles[:, k].max() > 50.0 and angles[:, k].min() < -50.0  # up to it, both ways
        else:
            assert angles[:, k].abs().max() < DEGREES_ATOL  # none about the other axes


def test_rotation_2d_is_in_the_image_plane_within_range() -> None:
    data = confident_sample(1, is_3d=False)
    for max_degrees in (60.0, (0.0, 0.0, 60.0)):
        rotation = RandomRotation(max_degrees, seed=1)
        angles = []
        for _ in range(200):
            matrix = linear_map(data, rotation(data.clone()))
            identity = torch.eye(2, dtype=torch.float64)
            torch.testing.assert_close(matrix @ matrix.T, identity, atol=ATOL, rtol=0)
            angles.append(float(torch.rad2deg(torch.atan2(matrix[1, 0], matrix[0, 0]))))
        assert max(map(abs, angles)) <= 60.0 + DEGREES_ATOL
        assert max(angles) > 50 and min(angles) < -50
    with pytest.raises(ValueError, match=r"2D samples rotate about z only"):
        RandomRotation((30.0, 0.0, 10.0))(data)


def test_per_axis_scale_and_shear_ranges() -> None:
    data = confident_sample(2, is_3d=True)
    scale = RandomScale((0.5, 2.0), per_axis=True, seed=0)
    factors = torch.stack(
        [torch.diagonal(linear_map(data, scale(data.clone()))) for _ in range(100)]
    )
    assert factors.min() >= 0.5 - ATOL and factors.max() <= 2.0 + ATOL
    assert (factors.max(1).values - factors.min(1).values).min() > 0  # axes scaled differently
    one = RandomScale((0.5, 2.0), seed=0)
    same = torch.diagonal(linear_map(data, one(data.clone())))
    torch.testing.assert_close(same, same[:1].expand(3), atol=ATOL, rtol=0)
    shear = RandomShear(0.3, seed=0)
    for _ in range(50):
        matrix = linear_map(data, shear(data.clone()))
        ones = torch.ones(3, dtype=torch.float64)
        torch.testing.assert_close(torch.diagonal(matrix), ones, atol=ATOL, rtol=0)
        off = matrix[~torch.eye(3, dtype=torch.bool)]
        assert off.abs().max() <= 0.3 + ATOL and off.abs().min() > 0


def test_rotation_3d_is_about_the_vertical_axis() -> None:
    data = make_sample(3, is_3d=True)
    out = RandomRotation(90.0, seed=0)(data)
    torch.testing.assert_close(out.x[..., 1], data.x[..., 1])  # y unchanged
    assert not torch.allclose(out.x[..., 0], data.x[..., 0])


@settings(max_examples=40, deadline=None)
@given(sample=samples, factor=st.floats(0.1, 10.0))
def test_scale_multiplies_bone_lengths(sample: dict, factor: float) -> None:
    data = make_sample(**sample)
    out = RandomScale((factor, factor))(data)
    expected = bone_lengths(data.x, sample["layout"]) * factor
    torch.testing.assert_close(
        bone_lengths(out.x, sample["layout"]), expected, atol=1e-3, rtol=1e-4
    )


def test_random_scale_uses_one_factor_in_range() -> None:
    data = make_sample(4)
    out = RandomScale((0.5, 2.0), seed=0)(data)
    ratio = bone_lengths(out.x, "penn13") / bone_lengths(data.x, "penn13")
    assert 0.5 <= float(ratio.mean()) <= 2.0
    torch.testing.assert_close(ratio, ratio.mean().expand_as(ratio), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("make", GEOMETRIC)
@pytest.mark.parametrize("is_3d", [False, True])
def test_confidence_preserved_and_padding_stays_zero(make, is_3d: bool) -> None:
    data = make_sample(5, frames=6, padded=4, is_3d=is_3d)
    original = data.x.clone()
    transform = make("penn13", 0)
    out = transform(data)
    assert out.x.shape == data.x.shape and out.x.dtype == torch.float32
    mirrored = any(isinstance(t, RandomMirror) for t in getattr(transform, "transforms", []))
    if isinstance(transform, RandomMirror) or mirrored:
        # the mirror permutes joints; the multiset of confidences per frame is preserved
        assert torch.equal(out.x[..., -1].sort(0).values, data.x[..., -1].sort(0).values)
    else:
        assert torch.equal(out.x[..., -1], data.x[..., -1])
    assert torch.count_nonzero(out.x[:, 6:]) == 0
    assert torch.equal(data.x, original)  # input not modified in place
    assert torch.equal(out.frame_mask, data.frame_mask)


@pytest.mark.parametrize("make", GEOMETRIC)
def test_reproducible_with_seed(make) -> None:
    data = make_sample(6)
    assert torch.equal(make("penn13", 7)(data).x, make("penn13", 7)(data).x)


@pytest.mark.parametrize("make", [m for i, m in enumerate(GEOMETRIC) if i != 3])
def test_different_seeds_differ(make) -> None:
    data = make_sample(6)
    assert not torch.equal(make("penn13", 7)(data).x, make("penn13", 8)(data).x)


def test_generator_argument_is_used() -> None:
    data = make_sample(7)
    first = RandomRotation(45.0, generator=torch.Generator().manual_seed(3))(data).x
    again = RandomRotation(45.0, generator=torch.Generator().manual_seed(3))(data).x
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="generator or seed"):
        RandomRotation(generator=torch.Generator(), seed=1)


def test_jitter_only_moves_confident_joints() -> None:
    data = make_sample(8, frames=6, padded=2)
    out = GaussianJitter(0.5, seed=0)(data)
    missing = data.x[..., -1] == 0
    assert torch.equal(out.x[missing], data.x[missing])
    assert not torch.equal(out.x[~missing], data.x[~missing])


@settings(max_examples=30, deadline=None)
@given(
    frames=st.integers(1, 40),
    padded=st.integers(0, 10),
    length=st.integers(1, 32),
    low=st.floats(0.05, 1.0),
    seed=st.integers(0, 1000),
)
def test_temporal_crop_length_and_mask(
    frames: int, padded: int, length: int, low: float, seed: int
) -> None:
    data = make_sample(seed, frames=frames, padded=padded)
    for p_interval in ((low, 1.0), (low,)):
        out = RandomTemporalCrop(p_interval, length, seed=seed)(data)
        assert out.x.shape == (13, length, 3)
        assert out.frame_mask.shape == (1, length) and bool(out.frame_mask.all())
        assert out.x[..., -1].min() >= 0 and out.x[..., -1].max() <= 1


def test_temporal_crop_keeps_a_contiguous_part_of_the_real_frames() -> None:
    data = make_sample(9, frames=20, padded=5)
    data.x[..., 0] = torch.arange(25.0).expand(13, 25) * data.frame_mask  # x = frame index
    out = RandomTemporalCrop((0.5, 0.5), 10, seed=1)(data)  # 10 frames, resampled to 10
    frames = out.x[0, :, 0]
    assert torch.equal(frames, frames[0] + torch.arange(10.0))
    assert frames[0] >= 0 and frames[-1] <= 19
    centred = RandomTemporalCrop((0.5,), 10)(data).x[0, :, 0]
    assert torch.equal(centred, torch.arange(5.0, 15.0))  # int(0.5 · 20 / 2) = 5 dropped per end


def test_temporal_resample() -> None:
    data = make_sample(10, frames=7, padded=3)
    data.x[..., :-1] = data.x[:, :1, :-1] * data.frame_mask.view(1, -1, 1)  # constant over time
    out = TemporalResample(16)(data)
    assert out.x.shape == (13, 16, 3) and bool(out.frame_mask.all())
    torch.testing.assert_close(out.x[..., :-1], data.x[:, :1, :-1].expand(13, 16, 2))
    assert torch.equal(TemporalResample(7)(data).x, data.x[:, :7])
    assert repr(TemporalResample(16)) == "TemporalResample(length=16)"


def test_compose_and_repr() -> None:
    transform = Compose([RandomRotation(10.0), RandomMirror("coco17", p=0.25)])
    text = repr(transform)
    assert "RandomRotation(max_degrees=10.0)" in text
    assert "RandomMirror(layout='coco17', p=0.25)" in text
    out = transform(make_sample(11, layout="coco17"))
    assert out.x.shape == (17, 8, 3)


def test_default_train_transform() -> None:
    full = default_train_transform("penn13", 32, seed=0)
    names = [type(t).__name__ for t in full.transforms]
    assert names == [
        "RandomTemporalCrop",
        "RandomRotation",
        "RandomScale",
        "RandomTranslation",
        "RandomMirror",
        "GaussianJitter",
    ]
    assert full.transforms[0].p_interval == (0.5, 1.0)
    assert full(make_sample(12, frames=20, padded=4)).x.shape == (13, 32, 3)
    rotation_only = default_train_transform(
        "penn13", scales=None, max_offset=None, mirror_p=None, jitter_std=None
    )
    assert [type(t).__name__ for t in rotation_only.transforms] == ["RandomRotation"]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomRotation(-1.0), "max_degrees"),
        (lambda: RandomRotation((10.0, 20.0)), "max_degrees"),
        (lambda: RandomRotation((0.0, 200.0, 0.0)), "max_degrees"),
        (lambda: RandomShear(-0.1), "max_shear"),
        (lambda: RandomScale((2.0, 1.0)), "scales"),
        (lambda: RandomTranslation(-0.1), "max_offset"),
        (lambda: RandomMirror("penn13", p=1.5), "p: expected"),
        (lambda: GaussianJitter(-1.0), "std"),
        (lambda: RandomTemporalCrop((0.0, 1.0), 8), "p_interval"),
        (lambda: RandomTemporalCrop((0.9, 0.5), 8), "low <= high"),
        (lambda: RandomTemporalCrop((0.5,), 0), "length"),
        (lambda: TemporalResample(0), "length"),
    ],
)
def test_invalid_parameters(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_samples() -> None:
    with pytest.raises(ValueError, match=r"data.x: expected shape \[V, T, C\]"):
        RandomRotation()(Data(x=torch.zeros(13, 4, 5)))
    with pytest.raises(ValueError, match="expected 13 joints for layout 'penn13', got 17"):
        RandomMirror("penn13", p=1.0)(make_sample(0, layout="coco17"))
    data = make_sample(0)
    data.frame_mask = torch.zeros(1, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="no real frame"):
        TemporalResample(4)(data)
    data.frame_mask = torch.ones(1, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="frame_mask: expected 8 entries"):
        RandomTemporalCrop((0.5,), 4)(data)
