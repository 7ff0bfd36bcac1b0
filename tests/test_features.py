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


def test_features_are_causal():
    features = InputFeatures("coco17", 3, ["joint", "bone", "velocity", "bone_velocity"])
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
