import pytest
import torch

from skelgraph.features import InputFeatures
from skelgraph.layouts import get_layout


def test_each_feature_matches_its_definition():
    layout = get_layout("penn13")
    x = torch.randn(2, 13, 7, 3)
    names = ["joint", "bone", "relative2", "velocity", "bone_velocity", "centre"]
    out = InputFeatures(layout, 3, names)(x)
    assert out.shape == (2, 13, 7, 6 * 2 + 1)
    coords = x[..., :2]
    pelvis = coords[:, list(layout.center)].mean(dim=1)
    wrist, elbow, shoulder = (
        layout.index(j) for j in ("left_wrist", "left_elbow", "left_shoulder")
    )
    hip = layout.index("left_hip")
    joint, bone, rel2, vel, bone_vel, centre = out[..., :-1].split(2, dim=-1)
    torch.testing.assert_close(joint, coords)
    torch.testing.assert_close(bone[:, wrist], coords[:, wrist] - coords[:, elbow])
    torch.testing.assert_close(bone[:, hip], coords[:, hip] - pelvis)
    torch.testing.assert_close(rel2[:, wrist], coords[:, wrist] - coords[:, shoulder])
    torch.testing.assert_close(rel2[:, shoulder], coords[:, shoulder] - pelvis)
    torch.testing.assert_close(vel[:, :, 0], torch.zeros_like(vel[:, :, 0]))
    torch.testing.assert_close(vel[:, :, 1:], coords[:, :, 1:] - coords[:, :, :-1])
    torch.testing.assert_close(bone_vel[:, :, 1:], bone[:, :, 1:] - bone[:, :, :-1])
    torch.testing.assert_close(centre, coords - pelvis[:, None])
    torch.testing.assert_close(out[..., -1], x[..., -1])


def test_motion_of_the_kth_mode():
    layout = get_layout("penn13")
    x = torch.randn(2, 13, 6, 3)
    rel, rel_vel = InputFeatures(layout, 3, ["relative2", "relative2_velocity"])(x)[..., :-1].split(
        2, dim=-1
    )
    torch.testing.assert_close(rel_vel[:, :, 0], torch.zeros_like(rel_vel[:, :, 0]))
    torch.testing.assert_close(rel_vel[:, :, 1:], rel[:, :, 1:] - rel[:, :, :-1])
    features = InputFeatures(layout, 3, ["relative3_velocity"])
    assert features.history == 1
    step = features.step(x[:, :, 4], x[:, :, 3])
    torch.testing.assert_close(step, features(x)[:, :, 4])


def test_distance_holds_every_other_joint_and_ignores_the_viewpoint():
    layout = get_layout("coco17")
    V = layout.num_joints
    x = torch.randn(2, V, 5, 4)
    features = InputFeatures(layout, 4, ["joint", "distance", "velocity"])
    out = features(x)
    assert features.out_channels == 3 + (V - 1) + 3 + 1 == out.size(-1)
    distance = out[..., 3 : 3 + V - 1]
    frames = x[..., :3].transpose(1, 2)  # [B, T, V, 3]
    pairs = torch.cdist(frames, frames)  # [B, T, V, V]
    for v in (0, 7, V - 1):
        others = [u for u in range(V) if u != v]
        torch.testing.assert_close(distance[:, v], pairs[:, :, v, others])
    # a turned, shifted body has the same distances
    angle = torch.tensor(0.7)
    c, s = torch.cos(angle), torch.sin(angle)
    turn = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    moved = x.clone()
    moved[..., :3] = x[..., :3] @ turn.T + torch.tensor([0.5, -2.0, 1.0])
    torch.testing.assert_close(features(moved)[..., 3 : 3 + V - 1], distance)
    torch.testing.assert_close(features.step(x[:, :, 3], x[:, :, 2]), out[:, :, 3])


def test_distance_has_a_finite_gradient_where_joints_coincide():
    x = torch.randn(1, 17, 3, 3)
    x[:, 1] = x[:, 0]
    x.requires_grad_()
    InputFeatures("coco17", 3, ["distance"])(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_features_are_causal():
    features = InputFeatures(
        "coco17", 3, ["joint", "bone", "velocity", "bone_velocity", "distance"]
    )
    x = torch.randn(1, 17, 10, 3)
    changed = x.clone()
    changed[:, :, 6:] += 1.0
    torch.testing.assert_close(features(x)[:, :, :6], features(changed)[:, :, :6])


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ([], "at least one"),
        (["joint", "joint"], "repeated"),
        (["speed"], "'speed'"),
        (["relative1"], "k >= 2"),
        (["relative1_velocity"], "k >= 2"),
        (["relative<k>"], "'relative<k>'"),
        (["relative<k>_velocity"], "'relative<k>_velocity'"),
    ],
)
def test_bad_feature_names_are_named(names, message):
    with pytest.raises(ValueError, match=message):
        InputFeatures("coco17", 3, names)
