from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import PENN13_POSE

from skelgraph.clip import SkeletonClip
from skelgraph.heatmaps import (
    PoseHeatmaps,
    flip_heatmaps,
    heatmap_channels,
    keypoint_heatmaps,
    limb_heatmaps,
    person_box,
    random_crop,
    to_pixels,
    uniform_sample,
)
from skelgraph.layouts import Layout, get_layout

pytestmark = pytest.mark.usefixtures("one_thread")

PENN = get_layout("penn13")


def penn_clip(frames: int = 12, seed: int = 0) -> np.ndarray:
    """A moving ``penn13`` person, :obj:`(T, 13, 3)` in pixels, confidences in (0.3, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames, dtype=np.float32)[:, None, None]
    xy = 200 + PENN13_POSE[None] + rng.normal(size=(frames, 13, 2)) * 3 + t * [4.0, -1.0]
    confidence = rng.uniform(0.3, 1.0, size=(frames, 13, 1))
    return np.concatenate([xy, confidence], axis=-1).astype(np.float32)


def mirror(kp: np.ndarray, layout: Layout = PENN, axis: float = 0.0) -> np.ndarray:
    """The mirror image :math:`x \\mapsto 2a - x` with left and right joints relabelled."""
    out = kp[..., layout.flip_permutation(), :].copy()
    out[..., 0] = 2 * axis - out[..., 0]
    return out


def one_joint(x: float, y: float, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    points = torch.tensor([x, y]).view(1, 1, 1, 1, 2)
    return points, torch.tensor([confidence]).view(1, 1, 1, 1)


# --------------------------------------------------------------------------------------------
# drawing


@pytest.mark.parametrize("confidence", [1.0, 0.4])
def test_keypoint_heatmap_peaks_at_the_joint_with_its_confidence(confidence):
    points, c = one_joint(5.5, 2.5, confidence)  # the centre of pixel (row 2, column 5)
    volume = keypoint_heatmaps(points, c, (8, 10), sigma=1.0)
    assert volume.shape == (1, 1, 1, 8, 10)
    image = volume[0, 0, 0]
    assert divmod(int(image.argmax()), 10) == (2, 5)
    assert float(image.max()) == pytest.approx(confidence)
    # the Gaussian: one pixel right and one down is exp(-2 / 2 sigma^2) lower
    assert float(image[3, 6]) == pytest.approx(confidence * math.exp(-1.0), rel=1e-5)


def test_limb_heatmap_is_maximal_along_the_segment():
    points = torch.tensor([[2.5, 3.5], [10.5, 3.5], [10.5, 9.5]]).view(1, 1, 1, 3, 2)
    confidence = torch.tensor([0.9, 0.6, 1.0]).view(1, 1, 1, 3)
    volume = limb_heatmaps(points, confidence, [[0, 1], [1, 2]], (12, 14), sigma=0.8)
    horizontal = volume[0, 0, 0]
    # min of the two confidences on every pixel of the segment, less anywhere else
    torch.testing.assert_close(horizontal[3, 2:11], torch.full((9,), 0.6))
    assert float(horizontal.max()) == pytest.approx(0.6)
    off = torch.ones_like(horizontal, dtype=torch.bool)
    off[3, 2:11] = False
    assert float(horizontal[off].max()) < 0.6 * math.exp(-0.5 / 0.8**2) + 1e-6
    # past the end the value falls with the distance to the end joint
    assert float(horizontal[3, 12]) == pytest.approx(0.6 * math.exp(-4 / (2 * 0.8**2)), rel=1e-5)
    vertical = volume[0, 1, 0]
    torch.testing.assert_close(vertical[3:10, 10], torch.full((7,), 0.6))


def test_limb_heatmap_matches_the_distance_to_the_segment():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(1, 1, 2, 4, 2, generator=generator) * 9
    points[0, 0, 1, 3] = points[0, 0, 1, 2]  # a bone of zero length
    confidence = torch.rand(1, 1, 2, 4, generator=generator)
    bones = [[0, 1], [1, 2], [2, 3]]
    volume = limb_heatmaps(points, confidence, bones, (9, 7), sigma=1.3)
    for f in range(2):
        for b, (i, j) in enumerate(bones):
            a, e = points[0, 0, f, i].double(), points[0, 0, f, j].double()
            for row in range(9):
                for col in range(7):
                    p = torch.tensor([col + 0.5, row + 0.5], dtype=torch.float64)
                    d = e - a
                    t = 0.0 if float(d @ d) == 0 else float(((p - a) @ d) / (d @ d))
                    distance2 = float((p - a - min(max(t, 0.0), 1.0) * d).square().sum())
                    weight = float(torch.minimum(confidence[0, 0, f, i], confidence[0, 0, f, j]))
                    expected = weight * math.exp(-distance2 / (2 * 1.3**2))
                    assert float(volume[0, b, f, row, col]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("persons", ["max", "sum"])
def test_persons_are_combined_per_channel(persons):
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(2, 3, 4, 5, 2, generator=generator) * 16
    confidence = torch.rand(2, 3, 4, 5, generator=generator)
    each = [
        keypoint_heatmaps(points[:, m : m + 1], confidence[:, m : m + 1], (16, 16))
        for m in range(3)
    ]
    together = keypoint_heatmaps(points, confidence, (16, 16), persons=persons)
    expected = torch.stack(each).amax(0) if persons == "max" else torch.stack(each).sum(0)
    torch.testing.assert_close(together, expected)
    bones = [[0, 1], [2, 3], [3, 4]]
    each = [
        limb_heatmaps(points[:, m : m + 1], confidence[:, m : m + 1], bones, (16, 16))
        for m in range(3)
    ]
    together = limb_heatmaps(points, confidence, bones, (16, 16), persons=persons)
    expected = torch.stack(each).amax(0) if persons == "max" else torch.stack(each).sum(0)
    torch.testing.assert_close(together, expected)


# --------------------------------------------------------------------------------------------
# the transform


@pytest.mark.parametrize(("input", "channels"), [("keypoint", 13), ("limb", 14), ("both", 27)])
def test_shapes_for_one_person_several_persons_and_batches(input, channels):
    transform = PoseHeatmaps("penn13", input, resolution=(20, 24), frames=6)
    assert transform.out_channels == channels == heatmap_channels("penn13", input)
    kp = torch.from_numpy(penn_clip(12))
    assert transform(kp).shape == (channels, 6, 20, 24)
    assert transform(kp.numpy()).shape == (channels, 6, 20, 24)
    assert transform(torch.stack([kp, kp + 30])).shape == (channels, 6, 20, 24)
    batch = torch.stack([kp, kp]).unsqueeze(0).expand(3, 2, 12, 13, 3)
    assert transform(batch).shape == (3, channels, 6, 20, 24)
    every = PoseHeatmaps("penn13", input, resolution=16, frames=None)
    assert every(kp).shape == (channels, 12, 16, 16)
    clip = SkeletonClip(kp.numpy(), "penn13")
    torch.testing.assert_close(transform(clip), transform(kp))


def test_several_persons_share_one_crop():
    kp = torch.from_numpy(penn_clip(8))
    other = kp.clone()
    other[..., 0] += 400  # far to the right: the box spans both, each person in one half
    transform = PoseHeatmaps("penn13", "both", resolution=(32, 64), frames=None, padding=0.0)
    both = transform(torch.stack([kp, other]))
    assert both[..., :32].amax(dim=(1, 2, 3)).min() > 0.25
    assert both[..., 32:].amax(dim=(1, 2, 3)).min() > 0.25
    summed = PoseHeatmaps(
        "penn13", "both", resolution=(32, 64), frames=None, padding=0.0, persons="sum"
    )
    torch.testing.assert_close(summed(torch.stack([kp, other])), both)  # they never overlap
    torch.testing.assert_close(transform(torch.stack([kp, kp])), transform(kp))


@pytest.mark.parametrize("input", ["keypoint", "limb", "both"])
@pytest.mark.parametrize("layout", ["penn13", "coco17"])
def test_flipped_volume_is_the_volume_of_the_mirrored_skeleton(input, layout):
    layout = get_layout(layout)
    rng = np.random.default_rng(2)
    V = layout.num_joints
    kp = np.concatenate(
        [rng.normal(size=(3, 10, V, 2)) * 40 + 100, rng.uniform(0.1, 1, (3, 10, V, 1))], -1
    ).astype(np.float32)
    kp[0, 4, 2, -1] = 0.0  # a missing joint
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 7:] = False
    transform = PoseHeatmaps(layout, input, resolution=(24, 20), frames=7, crop_area=(0.6, 1.0))
    volume = transform(torch.from_numpy(kp[:, None]), mask)
    for axis in (0.0, 37.5):
        mirrored = transform(torch.from_numpy(mirror(kp, layout, axis)[:, None]), mask)
        torch.testing.assert_close(transform.flip(volume), mirrored, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(flip_heatmaps(transform.flip(volume), layout, input), volume)


def test_missing_joints_contribute_nothing():
    kp = penn_clip(6)
    wrist = PENN.index("left_wrist")
    missing = kp.copy()
    missing[:, wrist, :2] = np.nan
    missing[:, wrist, 2] = 0.0
    hidden = kp.copy()  # the joint at a place inside the box, but with confidence 0
    hidden[:, wrist, :2] = kp[:, PENN.index("left_hip"), :2]
    hidden[:, wrist, 2] = 0.0
    transform = PoseHeatmaps("penn13", "both", resolution=16, frames=None)
    volume = transform(missing)
    assert torch.isfinite(volume).all()
    torch.testing.assert_close(volume, transform(hidden))
    assert float(volume[wrist].abs().max()) == 0.0
    bones = [13 + b for b, bone in enumerate(PENN.bones) if wrist in bone]
    assert bones and float(volume[bones].abs().max()) == 0.0
    others = [k for k in range(27) if k != wrist and k not in bones]
    assert (volume[others].amax(dim=(1, 2, 3)) > 0).all()
    # a padded frame draws nothing either, and no joint at all gives an empty volume
    mask = torch.tensor([True] * 5 + [False])
    assert float(transform(kp, mask)[:, 5].abs().max()) == 0.0
    nothing = kp.copy()
    nothing[..., 2] = 0.0
    assert float(transform(nothing).abs().max()) == 0.0


def test_volume_ignores_translation_and_scale():
    kp = penn_clip(9)
    moved = kp.copy()
    moved[..., :2] = kp[..., :2] * 0.01 - 3.0
    transform = PoseHeatmaps("penn13", "both", resolution=24, frames=5)
    torch.testing.assert_close(transform(moved), transform(kp), atol=1e-5, rtol=1e-4)


def test_the_person_fills_the_box_with_its_padding():
    points = torch.tensor([[[0.0, 0.0], [4.0, 2.0], [9.0, 9.0]]])
    valid = torch.tensor([[True, True, False]])
    box = person_box(points, valid, padding=0.5, aspect=1.0)
    torch.testing.assert_close(box, torch.tensor([[2.0, 1.0, 3.0, 3.0]]))
    wide = person_box(points, valid, padding=0.5, aspect=2.0)
    torch.testing.assert_close(wide, torch.tensor([[2.0, 1.0, 3.0, 1.5]]))
    pixels = to_pixels(points[:, :2], box, (6, 6))
    torch.testing.assert_close(pixels, torch.tensor([[[1.0, 2.0], [5.0, 4.0]]]))
    lonely = person_box(points, torch.tensor([[False, False, True]]), aspect=2.0)
    torch.testing.assert_close(lonely, torch.tensor([[9.0, 9.0, 2.0, 1.0]]))
    empty = person_box(points, torch.zeros(1, 3, dtype=torch.bool))
    torch.testing.assert_close(empty, torch.tensor([[0.0, 0.0, 1.0, 1.0]]))


def test_random_crop_stays_inside_the_box():
    generator = torch.Generator().manual_seed(3)
    boxes = torch.tensor([[5.0, -2.0, 4.0, 3.0]]).expand(500, 4)
    crops = random_crop(boxes, (0.5, 0.9), generator=generator)
    low, high = crops[:, :2] - crops[:, 2:], crops[:, :2] + crops[:, 2:]
    assert (low >= boxes[:, :2] - boxes[:, 2:] - 1e-5).all()
    assert (high <= boxes[:, :2] + boxes[:, 2:] + 1e-5).all()
    area = (crops[:, 2] * crops[:, 3]) / 12.0
    assert float(area.min()) >= 0.5 * 0.75 - 1e-5 and float(area.max()) <= 0.9 + 1e-5
    assert float(area.std()) > 0.05


def test_uniform_sample_takes_one_frame_per_segment():
    mask = torch.ones(1, 20, dtype=torch.bool)
    assert uniform_sample(mask, 4).tolist() == [[2, 7, 12, 17]]
    generator = torch.Generator().manual_seed(0)
    drawn = uniform_sample(mask.expand(200, 20), 4, random=True, generator=generator)
    segment = torch.arange(4) * 5
    assert ((drawn >= segment) & (drawn < segment + 5)).all()
    assert drawn.unique().numel() == 20  # every frame of every segment is drawn
    # padded frames are never drawn; fewer real frames than samples repeat them in order
    padded = torch.tensor([[True] * 3 + [False] * 5, [False, True, False, True] * 2])
    assert uniform_sample(padded, 6).tolist() == [[0, 0, 1, 1, 2, 2], [1, 3, 3, 5, 7, 7]]
    drawn = uniform_sample(padded, 6, random=True)
    assert all(bool(padded[b, drawn[b]].all()) for b in range(2))
    assert (drawn.diff(dim=1) >= 0).all()
    # a sample without a real frame uses all of them
    assert uniform_sample(torch.zeros(1, 4, dtype=torch.bool), 2).tolist() == [[1, 3]]


def test_training_draws_other_frames_and_crops():
    kp = penn_clip(40)
    transform = PoseHeatmaps("penn13", resolution=16, frames=8, crop_area=(0.56, 1.0))
    evaluation = transform(kp)
    torch.testing.assert_close(transform(kp), evaluation)
    first = transform(kp, train=True, generator=torch.Generator().manual_seed(0))
    again = transform(kp, train=True, generator=torch.Generator().manual_seed(0))
    other = transform(kp, train=True, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again)
    assert (first - evaluation).abs().max() > 0.1 and (first - other).abs().max() > 0.1


def test_gradients_reach_the_coordinates():
    kp = torch.from_numpy(penn_clip(5)).double().requires_grad_()
    transform = PoseHeatmaps("penn13", "both", resolution=12, frames=None, crop_area=(0.6, 1))
    transform(kp, train=True).square().sum().backward()
    assert torch.isfinite(kp.grad).all() and kp.grad[..., :2].abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_device_draws_what_the_cpu_draws():
    kp = torch.from_numpy(penn_clip(16))
    transform = PoseHeatmaps("penn13", "both", resolution=32, frames=8)
    expected = transform(kp)
    torch.testing.assert_close(transform.cuda()(kp.cuda()).cpu(), expected, atol=1e-5, rtol=1e-4)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match=r"input: expected one of \['keypoint', 'limb', 'both'\]"):
        PoseHeatmaps("penn13", "bones")
    with pytest.raises(ValueError, match="sigma: expected a positive number"):
        PoseHeatmaps("penn13", sigma=0)
    with pytest.raises(ValueError, match="resolution: expected a positive integer"):
        PoseHeatmaps("penn13", resolution=(0, 8))
    with pytest.raises(ValueError, match="frames: expected a positive integer"):
        PoseHeatmaps("penn13", frames=0)
    with pytest.raises(ValueError, match=r"crop_area: expected \[low, high\]"):
        PoseHeatmaps("penn13", crop_area=(0.5, 1.5))
    with pytest.raises(ValueError, match="persons: expected one of"):
        PoseHeatmaps("penn13", persons="mean")
    transform = PoseHeatmaps("penn13", frames=4)
    with pytest.raises(ValueError, match=r"keypoints: expected shape \[T, 13, C\]"):
        transform(torch.zeros(5, 17, 3))
    with pytest.raises(ValueError, match=r"mask: expected a bool tensor of shape \[5\]"):
        transform(torch.zeros(5, 13, 3), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="expected a clip of layout 'penn13'"):
        transform(SkeletonClip(np.ones((3, 17, 3), np.float32), "coco17"))
    with pytest.raises(ValueError, match=r"volume: expected shape \[\*, 13, F, H, W\]"):
        flip_heatmaps(torch.zeros(14, 2, 4, 4), "penn13")
    with pytest.raises(ValueError, match=r"bones: expected joint indices in \[0, 5\)"):
        limb_heatmaps(torch.zeros(1, 1, 1, 5, 2), torch.ones(1, 1, 1, 5), [[0, 5]], (4, 4))
