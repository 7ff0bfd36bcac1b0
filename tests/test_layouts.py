from __future__ import annotations

import copy
import json
import pickle
import warnings

import networkx as nx
import numpy as np
import pytest
import torch

from skelgraph.layouts import (
    Layout,
    MappingWarning,
    check_mappable,
    get_layout,
    keypoint_mapping,
    list_layouts,
    map_keypoints,
    mapping_gaps,
    mirror_pairs,
    register_layout,
)
from skelgraph.layouts.graph import (
    adjacency,
    bone_edge_index,
    complete_edge_index,
    hop_distance,
    k_hop_adjacency,
    parents,
    part_graph,
    spatial_partitions,
)

BUILTIN = ["coco17", "ntu25", "openpose18", "penn13"]
PARTS = {"head", "torso", "left_arm", "right_arm", "left_leg", "right_leg"}


def _mirror_name(name: str) -> str:
    for a, b in (("left", "right"), ("right", "left")):
        if name.startswith(f"{a}_"):
            return f"{b}_{name[len(a) + 1 :]}"
        if name.endswith(f"_{a}"):
            return f"{name[: -len(a) - 1]}_{b}"
    return name


def _chain_layout(name: str = "chain3") -> Layout:
    return Layout(name=name, joints=("a", "b", "c"), bones=((1, 0), (2, 1)), center=(0,),
                  torso=((1,), (0,)), pairs=(), parts={"all": (0, 1, 2)})  # fmt: skip


def _hand_layout() -> Layout:
    """A custom 5-joint layout: a torso point, two shoulders, two hands."""
    return Layout.from_names(
        name="test_five",
        joints=("chest", "left_shoulder", "right_shoulder", "left_hand", "right_hand"),
        bones=[("left_shoulder", "chest"), ("right_shoulder", "chest"),
               ("left_hand", "left_shoulder"), ("right_hand", "right_shoulder")],
        center=["chest"],
        torso=(["left_shoulder", "right_shoulder"], ["chest"]),
        parts={"torso": ["chest", "left_shoulder", "right_shoulder"],
               "left_arm": ["left_hand"], "right_arm": ["right_hand"]},
    )  # fmt: skip


# --- built-in layouts ---------------------------------------------------------------------------


def test_builtins_registered():
    assert set(BUILTIN) <= set(list_layouts())
    assert get_layout("coco17").num_joints == 17
    assert get_layout("penn13").num_joints == 13
    assert get_layout("openpose18").num_joints == 18
    assert get_layout("ntu25").num_joints == 25


def test_builtin_orders():
    assert get_layout("coco17").joints[:5] == (
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    )  # fmt: skip
    assert get_layout("coco17").joints[-1] == "right_ankle"
    assert get_layout("penn13").joints == (
        "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
        "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
        "right_ankle",
    )  # fmt: skip
    assert get_layout("openpose18").joints[:3] == ("nose", "neck", "right_shoulder")
    ntu = get_layout("ntu25")
    assert ntu.joints[0] == "spine_base" and ntu.joints[20] == "spine_shoulder"
    assert ntu.torso == ((ntu.index("spine_shoulder"),), (ntu.index("spine_base"),))


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_structure(name):
    layout = get_layout(name)
    graph = nx.Graph(layout.bones)
    graph.add_nodes_from(range(layout.num_joints))
    assert nx.is_connected(graph)
    assert set(layout.parts) == PARTS
    for left, right in layout.pairs:
        assert _mirror_name(layout.joints[left]) == layout.joints[right]
    sided = [j for j in layout.joints if _mirror_name(j) != j]
    assert len(layout.pairs) * 2 == len(sided)
    perm = layout.flip_permutation()
    assert perm.dtype == np.int64
    np.testing.assert_array_equal(perm[perm], np.arange(layout.num_joints))
    assert [_mirror_name(layout.joints[p]) for p in perm] == list(layout.joints)
    bones = layout.bone_flip_permutation()
    assert bones.dtype == np.int64
    np.testing.assert_array_equal(bones[bones], np.arange(layout.num_bones))
    for b, (child, parent) in enumerate(layout.bones):
        assert set(layout.bones[bones[b]]) == {perm[child], perm[parent]}


def test_bone_flip_permutation_needs_mirrored_bones():
    five = _hand_layout()
    assert five.bone_flip_permutation().tolist() == [1, 0, 3, 2]
    lopsided = Layout.from_dict(five.to_dict() | {"name": "lopsided", "bones": [[1, 0], [3, 1]]})
    with pytest.raises(
        ValueError,
        match=r"mirror image \(right_shoulder, chest\) of bone 0 \(left_shoulder, chest\)",
    ):
        lopsided.bone_flip_permutation()


@pytest.mark.parametrize("name", BUILTIN)
def test_dict_round_trip(name):
    layout = get_layout(name)
    restored = Layout.from_dict(json.loads(json.dumps(layout.to_dict())))
    assert restored == layout and hash(restored) == hash(layout)
    assert pickle.loads(pickle.dumps(layout)) == layout
    assert copy.deepcopy(layout) == layout


def test_coco17_centre_and_torso():
    coco = get_layout("coco17")
    assert coco.center == (coco.index("left_hip"), coco.index("right_hip"))
    assert coco.torso == ((5, 6), (11, 12))


def test_layout_is_immutable():
    layout = get_layout("penn13")
    with pytest.raises(AttributeError):
        layout.name = "other"
    with pytest.raises(TypeError):
        layout.parts["head"] = (1,)


def test_index_and_unknown_names():
    assert get_layout("penn13").index("left_knee") == 9
    with pytest.raises(ValueError, match=r"layout 'penn13': joint: expected one of .* got 'nose'"):
        get_layout("penn13").index("nose")
    with pytest.raises(ValueError, match=r"layout: expected one of \[.*'coco17'.*\], got 'coco18'"):
        get_layout("coco18")
    with pytest.raises(TypeError, match="expected a layout name or Layout, got int"):
        get_layout(17)


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"joints": ()}, r"layout 'bad': joints: expected at least one joint name"),
        ({"joints": ("a", "b", "a")}, r"joints: expected unique names, got \"duplicates \['a'\]\""),
        ({"bones": ((1, 3),)}, r"layout 'bad': bones: expected joint indices in \[0, 3\), got 3"),
        (
            {"bones": ((1, 1),)},
            r"bones: expected two different joints \(no self-loop\), got \(1, 1\)",
        ),
        (
            {"bones": ((1, 0), (0, 1))},
            r"bones: expected each joint pair at most once, got \(0, 1\)",
        ),
        ({"center": ()}, r"center: expected at least one joint index, got \(\)"),
        ({"center": (5,)}, r"center: expected joint indices in \[0, 3\), got 5"),
        ({"torso": ((0,), ())}, r"torso: expected \(upper joints, lower joints\), both non-empty"),
        ({"torso": ((0,), (-1,))}, r"torso: expected joint indices in \[0, 3\), got -1"),
        ({"pairs": ((1, 1),)}, r"pairs: expected \(left, right\) pairs of two different joints"),
        ({"pairs": ((1, 7),)}, r"pairs: expected joint indices in \[0, 3\), got 7"),
        ({"pairs": ((1, 2), (2, 0))}, r"pairs: expected each joint in at most one pair"),
        ({"parts": {"arm": ()}}, r"parts: expected a name mapped to at least one joint"),
        ({"parts": {"arm": (4,)}}, r"parts\['arm'\]: expected joint indices in \[0, 3\), got 4"),
        ({"root": 3}, r"layout 'bad': root: expected joint indices in \[0, 3\), got 3"),
        ({"name": ""}, r"Layout.name: expected a non-empty string, got ''"),
    ],
)
def test_bad_layouts_raise(changes, match):
    fields = {"name": "bad", "joints": ("a", "b", "c"), "bones": ((1, 0), (2, 1)),
              "center": (0,), "torso": ((1,), (0,)), "pairs": (), "parts": {}}  # fmt: skip
    with pytest.raises(ValueError, match=match):
        Layout(**{**fields, **changes})


def test_from_names_and_from_dict_errors():
    with pytest.raises(
        ValueError, match=r"layout 'x': center: expected joint names from .* got 'z'"
    ):
        Layout.from_names("x", ["a", "b"], [("b", "a")], center=["z"], torso=(["a"], ["b"]))
    fields = _chain_layout().to_dict()
    del fields["bones"]
    with pytest.raises(ValueError, match=r"got missing \['bones'\] and unknown \['colour'\]"):
        Layout.from_dict({**fields, "colour": "red"})


def test_register_layout_conflicts():
    chain = register_layout(_chain_layout("test_chain"))
    assert get_layout("test_chain") is chain
    assert register_layout(_chain_layout("test_chain")) == chain  # identical: no-op
    other = Layout(name="test_chain", joints=("a", "b"), bones=((1, 0),), center=(0,),
                   torso=((1,), (0,)), pairs=())  # fmt: skip
    with pytest.raises(ValueError, match=r"'test_chain' is already registered.*overwrite=True"):
        register_layout(other)
    assert register_layout(other, overwrite=True) is get_layout("test_chain")
    with pytest.raises(TypeError, match="expected a Layout, got str"):
        register_layout("coco17")


def test_mirror_pairs_by_name():
    assert mirror_pairs(["hand_left", "hand_right", "left_eye", "nose", "right_eye"]) == (
        (0, 1), (2, 4),
    )  # fmt: skip


# --- keypoint mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_map_coco_to_penn_and_back(channels):
    rng = np.random.default_rng(0)
    kp = rng.random((5, 17, channels)).astype(np.float32)
    kp[..., -1] = rng.uniform(0.1, 1.0, (5, 17))
    coco, penn = get_layout("coco17"), get_layout("penn13")
    to_penn = map_keypoints(kp, coco, "penn13")
    assert to_penn.shape == (5, 13, channels) and to_penn.dtype == np.float32
    np.testing.assert_array_equal(to_penn[:, 0], kp[:, coco.index("nose")])  # head <- nose
    np.testing.assert_array_equal(to_penn[:, 1:], kp[:, 5:])
    with pytest.warns(MappingWarning, match=r"left_eye, right_eye, left_ear, right_ear"):
        back = map_keypoints(to_penn, penn, coco)
    shared = [coco.index("nose"), *range(5, 17)]
    np.testing.assert_array_equal(back[:, shared], kp[:, shared])
    np.testing.assert_array_equal(back[:, 1:5], 0.0)  # eyes, ears: no source, confidence 0


def test_map_derived_joints_take_min_confidence():
    coco = get_layout("coco17")
    kp = np.zeros((1, 17, 3), np.float32)
    kp[0, coco.index("left_shoulder")] = (2.0, 4.0, 0.9)
    kp[0, coco.index("right_shoulder")] = (4.0, 8.0, 0.5)
    kp[0, coco.index("left_hip")] = (0.0, 10.0, 0.7)
    kp[0, coco.index("right_hip")] = (2.0, 12.0, 0.8)
    op = map_keypoints(kp, coco, "openpose18")
    np.testing.assert_allclose(op[0, 1], (3.0, 6.0, 0.5))  # neck = mean of the shoulders
    ntu = get_layout("ntu25")
    with pytest.warns(MappingWarning, match=r"8 of its 25 joints have no source"):
        out = map_keypoints(kp, coco, ntu)  # coco17 has no hands, feet, hand tips or thumbs
    np.testing.assert_allclose(out[0, ntu.index("spine_base")], (1.0, 11.0, 0.7))
    np.testing.assert_allclose(out[0, ntu.index("spine_mid")], (2.0, 8.5, 0.5))
    np.testing.assert_allclose(out[0, ntu.index("shoulder_left")], (2.0, 4.0, 0.9))
    np.testing.assert_array_equal(out[0, ntu.index("hand_tip_left")], 0.0)


def test_map_ignores_nan_in_unused_joints():
    kp = np.ones((2, 17, 3), np.float32)
    kp[:, 1] = np.nan  # left_eye, which penn13 does not use
    assert np.isfinite(map_keypoints(kp, "coco17", "penn13")).all()


def test_map_ntu_names_and_bad_input():
    mapping = keypoint_mapping("ntu25", "coco17")
    assert mapping[get_layout("coco17").index("left_shoulder")] == {4: 1.0}
    with pytest.raises(ValueError, match=r"expected shape \(T, 17, C>=2\) for layout 'coco17'"):
        map_keypoints(np.zeros((4, 13, 3)), "coco17", "penn13")
    ints = map_keypoints(np.ones((1, 13, 3), dtype=np.int64), "penn13", "penn13")
    assert ints.dtype == np.float32


def test_check_mappable_allows_at_most_half_the_joints_missing():
    for src, dst in [("coco17", "penn13"), ("penn13", "coco17"), ("coco17", "ntu25")]:
        check_mappable(src, dst)
    head = Layout.from_names(
        "head_only", ["nose", "neck"], [("nose", "neck")], ["neck"], (["neck"], ["neck"])
    )
    with pytest.raises(
        ValueError,
        match=r"layout 'head_only' cannot be mapped to the model's layout 'penn13': 12 of its 13 "
        r"joints have no source \(left_shoulder, right_shoulder, ",
    ):
        check_mappable(head, "penn13", target="the model's layout")


# --- graph helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_bone_edge_index_matches_bones(name):
    layout = get_layout(name)
    edge_index = bone_edge_index(name)
    assert edge_index.dtype == torch.long and edge_index.shape == (2, 2 * layout.num_bones)
    edges = set(map(tuple, edge_index.t().tolist()))
    expected = {b for b in layout.bones} | {b[::-1] for b in layout.bones}
    assert edges == expected and len(edges) == edge_index.size(1)
    assert (edge_index[0] != edge_index[1]).all()


def test_complete_edge_index_order():
    ei = complete_edge_index(3, 2)
    assert ei.shape == (2, 18)
    e = 1 * 9 + 2 * 3 + 1  # (g=1, i=2, j=1)
    assert ei[:, e].tolist() == [1 * 3 + 1, 1 * 3 + 2]
    no_loops = complete_edge_index(3, 1, self_loops=False)
    assert no_loops.tolist() == [[1, 2, 0, 2, 0, 1], [0, 0, 1, 1, 2, 2]]
    with pytest.raises(ValueError, match="num_nodes >= 0"):
        complete_edge_index(-1)


def test_sym_adjacency_by_hand_on_chain():
    A = torch.tensor([[1.0, 1, 0], [1, 1, 1], [0, 1, 1]])
    D = torch.diag(A.sum(1).pow(-0.5))
    torch.testing.assert_close(adjacency(_chain_layout()), D @ A @ D)
    torch.testing.assert_close(adjacency(_chain_layout(), normalize=None), A)
    raw = adjacency(_chain_layout(), self_loops=False, normalize="row")
    torch.testing.assert_close(raw, torch.tensor([[0.0, 1, 0], [0.5, 0, 0.5], [0, 1, 0]]))
    with pytest.raises(ValueError, match="normalize: expected 'sym', 'row' or None, got 'col'"):
        adjacency(_chain_layout(), normalize="col")


def test_results_are_clones():
    A = adjacency("penn13")
    A.zero_()
    assert adjacency("penn13").sum() > 0
    ei = bone_edge_index("penn13")
    ei.fill_(0)
    assert bone_edge_index("penn13").max() == 12


def test_hop_distance_penn13_by_hand():
    penn = get_layout("penn13")
    hops = hop_distance(penn)
    assert hops.dtype == torch.long and (hops == hops.t()).all() and (hops.diag() == 0).all()

    def d(a: str, b: str) -> int:
        return int(hops[penn.index(a), penn.index(b)])

    assert d("head", "left_shoulder") == 1
    assert d("head", "right_hip") == 2
    assert d("left_wrist", "right_wrist") == 5
    assert d("head", "left_ankle") == 4
    assert d("left_ankle", "right_wrist") == 6


def test_hop_distance_unreachable():
    forest = Layout(name="forest", joints=("a", "b", "c"), bones=((1, 0),), center=(0,),
                    torso=((1,), (0,)), pairs=())  # fmt: skip
    assert hop_distance(forest).tolist() == [[0, 1, -1], [1, 0, -1], [-1, -1, 0]]


def test_parents_point_towards_the_centre():
    layout = get_layout("coco17")
    parent = parents(layout)
    assert [parent[layout.index(j)] for j in ("left_hip", "right_hip")] == [-1, -1]
    assert parent[layout.index("left_wrist")] == layout.index("left_elbow")
    assert parent[layout.index("left_shoulder")] == layout.index("left_hip")


def test_k_hop_adjacency():
    torch.testing.assert_close(k_hop_adjacency("penn13", 0), torch.eye(13))
    torch.testing.assert_close(
        k_hop_adjacency("penn13", 1), adjacency("penn13", self_loops=False, normalize=None)
    )
    two = k_hop_adjacency("penn13", 2)
    assert two[0, 7] == 1 and two[0, 3] == 1 and two[0, 1] == 0
    assert (k_hop_adjacency("penn13", 2, normalize="row").sum(1) - 1).abs().max() < 1e-6
    with pytest.raises(ValueError, match="k: expected an integer >= 0, got -1"):
        k_hop_adjacency("penn13", -1)


@pytest.mark.parametrize("name", BUILTIN)
def test_spatial_partitions_sum_to_adjacency(name):
    parts = spatial_partitions(name)
    V = get_layout(name).num_joints
    assert parts.shape == (3, V, V)
    torch.testing.assert_close(parts.sum(0), adjacency(name, normalize="row"))
    assert (parts > 0).sum(0).max() == 1  # the groups are disjoint
    torch.testing.assert_close(parts[0].diag(), adjacency(name, normalize="row").diag())


def test_spatial_partitions_groups_on_chain():
    P = spatial_partitions(_chain_layout())  # centre = joint 0; distances 0, 1, 2
    third = 1 / 3
    torch.testing.assert_close(P[0], torch.diag(torch.tensor([0.5, third, 0.5])))
    torch.testing.assert_close(P[1], torch.tensor([[0, 0, 0], [third, 0, 0], [0, 0.5, 0]]))
    torch.testing.assert_close(P[2], torch.tensor([[0, 0.5, 0], [0, 0, third], [0, 0, 0]]))
    two = spatial_partitions(_chain_layout(), max_hop=2)
    assert two[1, 2, 0] > 0 and two[2, 0, 2] > 0
    with pytest.raises(ValueError, match="max_hop: expected an integer >= 1, got 0"):
        spatial_partitions(_chain_layout(), max_hop=0)


def test_spatial_partitions_use_root():
    ntu = get_layout("ntu25")
    P = spatial_partitions(ntu)
    spine_shoulder, neck = ntu.index("spine_shoulder"), ntu.index("neck")
    assert P[1, neck, spine_shoulder] > 0  # neck's neighbour spine_shoulder is the root
    assert P[2, spine_shoulder, neck] > 0


def test_part_graph():
    S, links = part_graph("penn13")
    assert S.shape == (13, 6) and links.shape == (6, 6)
    torch.testing.assert_close(S.sum(1), torch.ones(13))
    names = list(get_layout("penn13").parts)
    assert links[names.index("torso")].sum() == 5
    assert links[names.index("left_arm"), names.index("left_leg")] == 0
    assert torch.equal(links, links.t()) and (links.diag() == 0).all()
    overlapping = Layout(name="overlap", joints=("a", "b", "c"), bones=((1, 0), (2, 1)),
                         center=(0,), torso=((1,), (0,)), pairs=(),
                         parts={"p": (0, 1), "q": (1, 2)})  # fmt: skip
    S, links = part_graph(overlapping)
    torch.testing.assert_close(S, torch.tensor([[1.0, 0], [0.5, 0.5], [0, 1]]))
    with pytest.raises(ValueError, match="parts: expected at least one part"):
        part_graph(Layout.from_dict({**_chain_layout().to_dict(), "parts": {}}))


def test_custom_layout_every_helper():
    five = register_layout(_hand_layout())
    assert get_layout("test_five") is five
    assert five.pairs == ((1, 2), (3, 4))
    assert five.flip_permutation().tolist() == [0, 2, 1, 4, 3]
    assert bone_edge_index("test_five").shape == (2, 8)
    assert adjacency("test_five").shape == (5, 5)
    assert hop_distance("test_five")[3, 4] == 4
    assert k_hop_adjacency("test_five", 2).sum() == 6
    P = spatial_partitions("test_five")
    assert P.shape == (3, 5, 5) and P[1, 3, 1] > 0 and P[2, 1, 3] > 0
    S, A = part_graph("test_five")
    assert S.shape == (5, 3) and A.tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]]
    kp = np.random.default_rng(1).random((4, 17, 3)).astype(np.float32)
    with pytest.warns(MappingWarning, match=r"\(chest, left_hand, right_hand\)"):
        mapped = map_keypoints(kp, "coco17", "test_five")
    np.testing.assert_array_equal(mapped[:, 1:3], kp[:, 5:7])
    np.testing.assert_array_equal(mapped[:, [0, 3, 4]], 0.0)
    assert Layout.from_dict(json.loads(json.dumps(five.to_dict()))) == five


#: Kinect v1 (MSR Action3D, UTKinect, N-UCLA): 20 joints, names partly outside the vocabulary
KINECT_V1 = (
    "hip_center", "spine", "shoulder_center", "head",
    "shoulder_left", "elbow_left", "wrist_left", "hand_left",
    "shoulder_right", "elbow_right", "wrist_right", "hand_right",
    "hip_left", "knee_left", "ankle_left", "foot_left",
    "hip_right", "knee_right", "ankle_right", "foot_right",
)  # fmt: skip


def kinect_layout(joints=KINECT_V1) -> Layout:
    return Layout.from_names(
        "kinect_test",
        joints=joints,
        bones=[(j, joints[0]) for j in joints[1:]],
        center=[joints[0]],
        torso=([joints[2]], [joints[0]]),
    )


def test_mapping_warning_names_the_joints_it_cannot_fill():
    kinect = kinect_layout()
    kp = np.ones((3, 20, 4), np.float32)
    with pytest.warns(MappingWarning) as caught:
        out = map_keypoints(kp, kinect, "ntu25")
    (message,) = [str(w.message) for w in caught]
    assert "'kinect_test' to 'ntu25': 4 of its 25 joints have no source" in message
    assert "(hand_tip_left, thumb_left, hand_tip_right, thumb_right)" in message
    ntu = get_layout("ntu25")
    assert (out[:, [ntu.index(j) for j in ("hand_tip_left", "thumb_right")], -1] == 0).all()
    # the Kinect v1 names of the spine are synonyms, not derivations from hips and shoulders
    assert keypoint_mapping(kinect, ntu)[ntu.index("spine_base")] == {0: 1.0}
    assert keypoint_mapping(kinect, ntu)[ntu.index("spine_mid")] == {1: 1.0}
    assert keypoint_mapping(kinect, ntu)[ntu.index("spine_shoulder")] == {2: 1.0}
    with pytest.raises(ValueError, match=r"hand_tip_left, thumb_left, hand_tip_right"):
        map_keypoints(kp, kinect, "ntu25", strict=True)


def test_mapping_warning_names_source_joints_outside_the_vocabulary():
    joints = ("waist", "spine", "chest_center", "head", *KINECT_V1[4:])
    kinect = kinect_layout(joints)
    with pytest.warns(MappingWarning, match=r"source joints waist, chest_center are not names"):
        map_keypoints(np.ones((2, 20, 4)), kinect, "ntu25")
    assert mapping_gaps(kinect, "coco17") == (
        ("left_eye", "right_eye", "left_ear", "right_ear"),
        ("waist", "chest_center"),
    )
    with pytest.raises(ValueError, match="waist, chest_center"):
        map_keypoints(np.ones((2, 20, 4)), kinect, "coco17", strict=True)


def test_complete_mappings_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        map_keypoints(np.ones((1, 17, 3)), "coco17", "penn13")  # eyes, ears: known, dropped
        map_keypoints(np.ones((1, 25, 3)), "ntu25", "penn13")
        map_keypoints(np.ones((1, 13, 3)), "penn13", "penn13")
    assert mapping_gaps("coco17", "penn13") == ((), ())
