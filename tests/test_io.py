from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.io

from skelgraph.clip import SkeletonClip
from skelgraph.io import (
    load_npz,
    load_penn_action_mat,
    load_pyskl,
    save_npz,
    save_pyskl,
)
from skelgraph.layouts import Layout, list_layouts
from skelgraph.utils import atomic_write


def make_keypoints(
    num_frames: int = 6, num_joints: int = 17, channels: int = 3, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kp = rng.normal(size=(num_frames, num_joints, channels)).astype(np.float32)
    kp[..., -1] = rng.uniform(0.0, 1.0, size=(num_frames, num_joints))
    return kp


# ------------------------------------------------------------------------------------------------
# .npz


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("label", [4, "tennis_serve", None])
def test_npz_round_trip(tmp_path, channels, label):
    kp = make_keypoints(channels=channels)
    kp[1, 2, :-1] = np.nan
    kp[1, 2, -1] = 0.0
    meta = {"split": "train", "bbox": np.arange(8.0).reshape(2, 4), "view": np.str_("front")}
    clip = SkeletonClip(kp, "coco17", label=label, fps=29.97, source="clip.mp4", meta=meta)
    path = tmp_path / "clip.npz"
    save_npz(clip, path)
    loaded = load_npz(path)
    np.testing.assert_array_equal(loaded.keypoints, kp)  # NaN of the missing joint included
    assert loaded.keypoints.dtype == np.float32
    assert loaded.layout == clip.layout
    assert (loaded.label, loaded.fps, loaded.source) == (label, 29.97, "clip.mp4")
    assert loaded.meta == {"split": "train", "bbox": meta["bbox"].tolist(), "view": "front"}


def test_npz_without_optional_fields(tmp_path):
    clip = SkeletonClip(make_keypoints(), "coco17")
    save_npz(clip, tmp_path / "bare.npz")
    with np.load(tmp_path / "bare.npz") as archive:
        assert sorted(archive.files) == ["keypoints", "layout", "layout_json", "meta"]
    loaded = load_npz(tmp_path / "bare.npz")
    assert (loaded.label, loaded.fps, loaded.source, loaded.meta) == (None, None, None, {})


def test_npz_round_trip_of_unregistered_custom_layout(tmp_path):
    layout = Layout.from_names(
        "my_stick5",
        joints=["head", "left_hand", "right_hand", "left_foot", "right_foot"],
        bones=[("left_hand", "head"), ("right_hand", "head"), ("left_foot", "head")],
        center=["left_foot", "right_foot"],
        torso=(["head"], ["left_foot", "right_foot"]),
        parts={"arms": ["left_hand", "right_hand"]},
    )
    assert "my_stick5" not in list_layouts()
    clip = SkeletonClip(make_keypoints(num_joints=5), layout, label=1)
    clip.save(tmp_path / "custom.npz")
    loaded = load_npz(tmp_path / "custom.npz")
    assert loaded.layout == layout
    assert loaded.layout.pairs == ((1, 2), (3, 4))
    assert "my_stick5" not in list_layouts()


def test_failing_npz_write_keeps_existing_file(tmp_path):
    path = tmp_path / "clip.npz"
    good = SkeletonClip(make_keypoints(), "coco17", label=1)
    save_npz(good, path)
    before = path.read_bytes()
    bad = SkeletonClip(make_keypoints(seed=1), "coco17", meta={"model": object()})
    with pytest.raises(TypeError, match=r"clip\.meta: value of type object"):
        save_npz(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["clip.npz"]


def test_atomic_write_failure_mid_write_keeps_existing_file(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("name,label\na,1\n")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(path, "w") as f:
        f.write("name,label\nb,")
        raise RuntimeError("disk full")
    assert path.read_text() == "name,label\na,1\n"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]
    with atomic_write(path, "w") as f:
        f.write("new")
    assert path.read_text() == "new"


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "absent.npz")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"layout": np.array("coco17")}, r"bad\.npz: missing field 'keypoints'"),
        ({"keypoints": make_keypoints()}, r"bad\.npz: missing field 'layout'"),
        (
            {"keypoints": make_keypoints(), "layout": np.array("coco17"), "label": np.arange(3)},
            r"bad\.npz: field 'label' expected an int or str scalar, got shape \(3,\)",
        ),
        (
            {"keypoints": make_keypoints(), "layout": np.array("coco17"), "fps": np.array("x")},
            r"bad\.npz: field 'fps' expected a number scalar, got shape \(\) and dtype <U1",
        ),
        (
            {"keypoints": make_keypoints(), "layout": np.array("coco17"), "meta": np.array("[1]")},
            r"bad\.npz: field 'meta' expected a JSON object",
        ),
        (
            {"keypoints": make_keypoints()[0], "layout": np.array("coco17")},
            r"bad\.npz: clip\.keypoints: expected rank 3",
        ),
        (
            {"keypoints": make_keypoints(), "layout_json": np.array('{"name": "x"}')},
            r"bad\.npz: field 'layout_json' is not a valid layout",
        ),
    ],
)
def test_load_npz_bad_fields(tmp_path, fields, match):
    path = tmp_path / "bad.npz"
    with open(path, "wb") as f:
        np.savez(f, **fields)
    with pytest.raises(ValueError, match=match):
        load_npz(path)


@pytest.mark.parametrize("content", [b"not an archive", None])
def test_load_npz_of_other_file(tmp_path, content):
    path = tmp_path / "other.npz"
    if content is None:
        np.save(tmp_path / "other.npy", np.zeros(3))
        (tmp_path / "other.npy").rename(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=r"other\.npz: expected an \.npz archive"):
        load_npz(path)


# ------------------------------------------------------------------------------------------------
# mmaction2 / pyskl


def pyskl_annotation(name: str, persons: int = 2, frames: int = 7, label: int = 0) -> dict:
    rng = np.random.default_rng(len(name) + persons + frames)
    return {
        "frame_dir": name,
        "label": label,
        "img_shape": (480, 640),
        "original_shape": (480, 640),
        "total_frames": frames,
        "keypoint": rng.uniform(0, 640, size=(persons, frames, 17, 2)).astype(np.float32),
        "keypoint_score": rng.uniform(0, 1, size=(persons, frames, 17)).astype(np.float32),
    }


def test_pyskl_list_import_takes_first_person_and_round_trips(tmp_path):
    annotations = [pyskl_annotation("v_a", persons=2, label=3), pyskl_annotation("v_b", 1, 4, 1)]
    path = tmp_path / "ann.pkl"
    path.write_bytes(pickle.dumps(annotations))
    clips = load_pyskl(path)
    assert [c.source for c in clips] == ["v_a", "v_b"]
    assert [c.label for c in clips] == [3, 1]
    first = clips[0]
    assert first.keypoints.shape == (7, 17, 3)
    np.testing.assert_array_equal(first.keypoints[..., :2], annotations[0]["keypoint"][0])
    np.testing.assert_array_equal(first.keypoints[..., 2], annotations[0]["keypoint_score"][0])
    assert first.meta == {"img_shape": [480, 640], "original_shape": [480, 640]}

    save_pyskl(clips, tmp_path / "out.pkl")
    exported = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert isinstance(exported, list)
    assert exported[0]["keypoint"].shape == (1, 7, 17, 2)
    assert exported[0]["keypoint_score"].shape == (1, 7, 17)
    assert exported[0]["img_shape"] == (480, 640)
    assert exported[1]["total_frames"] == 4
    again = load_pyskl(tmp_path / "out.pkl")
    for a, b in zip(clips, again, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        assert (a.label, a.source, a.meta) == (b.label, b.source, b.meta)


def test_pyskl_dict_format_with_split(tmp_path):
    content = {
        "split": {"xsub_train": ["v_a", "v_b"], "xsub_val": ["v_c"], "xview_train": ["v_a"]},
        "annotations": [pyskl_annotation(n, label=i) for i, n in enumerate(["v_a", "v_b", "v_c"])],
    }
    path = tmp_path / "ann.pkl"
    path.write_bytes(pickle.dumps(content))
    clips = load_pyskl(path, layout="coco17")
    assert [c.meta["splits"] for c in clips] == [
        ["xsub_train", "xview_train"],
        ["xsub_train"],
        ["xsub_val"],
    ]

    save_pyskl(clips, tmp_path / "out.pkl", split=content["split"])
    exported = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert exported["split"] == content["split"]
    assert [a["frame_dir"] for a in exported["annotations"]] == ["v_a", "v_b", "v_c"]
    assert [c.meta["splits"] for c in load_pyskl(tmp_path / "out.pkl")] == [
        c.meta["splits"] for c in clips
    ]


def test_pyskl_3d_without_scores(tmp_path):
    keypoint = np.random.default_rng(0).normal(size=(2, 5, 25, 3)).astype(np.float32)
    annotation = {"frame_dir": "S001C001P001R001A001", "label": 0, "total_frames": 5}
    path = tmp_path / "ntu.pkl"
    path.write_bytes(pickle.dumps([{**annotation, "keypoint": keypoint}]))
    (clip,) = load_pyskl(path, layout="ntu25")
    assert clip.is_3d
    np.testing.assert_array_equal(clip.keypoints[..., :3], keypoint[0])
    assert (clip.keypoints[..., 3] == 1.0).all()


def test_pyskl_scores_are_clipped_to_unit_interval(tmp_path):
    annotation = pyskl_annotation("v_a", persons=1)
    annotation["keypoint_score"][0, 0, 0] = 1.03
    path = tmp_path / "ann.pkl"
    path.write_bytes(pickle.dumps([annotation]))
    assert load_pyskl(path)[0].keypoints[0, 0, 2] == 1.0


def _broken(**changes) -> dict:
    annotation = pyskl_annotation("v_bad")
    for key, value in changes.items():
        if value is None:
            del annotation[key]
        else:
            annotation[key] = value
    return annotation


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ({"split": {}}, r"ann\.pkl: expected a list of annotations or a dict with 'annotations'"),
        ("text", r"ann\.pkl: expected a list of annotations"),
        ([_broken(label=None)], r"ann\.pkl: annotations\[0\]: missing field\(s\) \['label'\]"),
        (
            [_broken(keypoint=np.zeros((7, 17, 2)))],
            r"annotations\[0\]: field 'keypoint' expected shape \(M, T, V, 2 or 3\)",
        ),
        ([_broken(keypoint=np.zeros((0, 7, 17, 2)))], "with M >= 1, got"),
        (
            [_broken(keypoint_score=np.zeros((2, 7, 16)))],
            r"field 'keypoint_score' expected shape \(2, 7, 17\), got \(2, 7, 16\)",
        ),
        ([_broken(total_frames=9)], "field 'total_frames' expected 7 .* got 9"),
        (
            [_broken(keypoint=np.zeros((2, 7, 13, 2)), keypoint_score=np.ones((2, 7, 13)))],
            r"annotations\[0\] \('v_bad'\): clip.keypoints: expected 17 joints",
        ),
        (
            [_broken(keypoint_score=np.full((2, 7, 17), np.nan))],
            r"\('v_bad'\): clip.keypoints: expected confidence in \[0, 1\]",
        ),
    ],
)
def test_load_pyskl_errors(tmp_path, content, match):
    path = tmp_path / "ann.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(ValueError, match=match):
        load_pyskl(path)


def test_save_pyskl_maps_class_names_and_rejects_bad_input(tmp_path):
    clips = [
        SkeletonClip(make_keypoints(), "coco17", label="squat", source="a"),
        SkeletonClip(make_keypoints(), "coco17", label="pullup"),
    ]
    save_pyskl(clips, tmp_path / "out.pkl", classes=["pullup", "squat"])
    exported = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert [(a["frame_dir"], a["label"]) for a in exported] == [("a", 1), ("clip_000001", 0)]

    with pytest.raises(ValueError, match=r"clips\[0\].label: expected an int class index"):
        save_pyskl(clips, tmp_path / "x.pkl")
    with pytest.raises(ValueError, match=r"clips\[0\].label: expected one of classes"):
        save_pyskl(clips, tmp_path / "x.pkl", classes=["pullup"])
    unlabeled = [SkeletonClip(make_keypoints(), "coco17")]
    with pytest.raises(ValueError, match=r"clips\[0\].label: expected a class index or name"):
        save_pyskl(unlabeled, tmp_path / "x.pkl")
    twice = [SkeletonClip(make_keypoints(), "coco17", label=0, source="a")] * 2
    with pytest.raises(ValueError, match=r"expected unique frame_dir .* got 'a' twice"):
        save_pyskl(twice, tmp_path / "x.pkl")
    with pytest.raises(ValueError, match=r"split\['val'\]: .* got unknown \['zzz'\]"):
        save_pyskl(clips, tmp_path / "x.pkl", {"val": ["a", "zzz"]}, classes=["pullup", "squat"])
    assert not (tmp_path / "x.pkl").exists()


def test_save_pyskl_writes_zero_for_missing_coordinates(tmp_path):
    kp = make_keypoints()
    kp[0, 0] = [np.nan, np.nan, 0.0]
    save_pyskl([SkeletonClip(kp, "coco17", label=0)], tmp_path / "out.pkl")
    exported = pickle.loads((tmp_path / "out.pkl").read_bytes())
    assert exported[0]["keypoint"].dtype == np.float32
    np.testing.assert_array_equal(exported[0]["keypoint"][0, 0, 0], [0.0, 0.0])


# ------------------------------------------------------------------------------------------------
# Penn Action


def test_load_penn_action_mat_of_real_files(penn_action_root):
    path = penn_action_root / "labels" / "0001.mat"
    clip = load_penn_action_mat(path)
    raw = scipy.io.loadmat(path)
    assert clip.keypoints.shape == (151, 13, 3)
    assert clip.layout.name == "penn13"
    np.testing.assert_array_equal(clip.keypoints[..., 0], raw["x"].astype(np.float32))
    visible = raw["visibility"] == 1
    annotated = (raw["x"] > 1) & (raw["y"] > 1) & (raw["x"] <= 480) & (raw["y"] <= 360)
    confidence = clip.keypoints[..., 2]
    assert (confidence[visible] == 1).all()
    assert (confidence[~visible & annotated] == 0.5).all()
    assert (confidence[~visible & ~annotated] == 0).all()
    assert load_penn_action_mat(path, occluded_confidence=0.0).keypoints[~visible, 2].max() == 0
    assert (clip.label, clip.source, clip.fps) == ("baseball_pitch", "0001", 30.0)
    assert clip.meta["split"] == "test"
    assert clip.meta["view"] == "back"
    assert clip.meta["dimensions"] == [360, 480, 151]
    assert np.asarray(clip.meta["bbox"]).shape == (151, 4)

    train = load_penn_action_mat(penn_action_root / "labels" / "0002.mat")
    assert train.meta["split"] == "train"
    assert train.label == "baseball_pitch"


def test_load_penn_action_mat_errors(tmp_path, penn_action_root):
    fields = scipy.io.loadmat(penn_action_root / "labels" / "0001.mat")
    fields = {k: v for k, v in fields.items() if not k.startswith("__")}

    scipy.io.savemat(tmp_path / "nox.mat", {k: v for k, v in fields.items() if k != "x"})
    with pytest.raises(ValueError, match=r"nox\.mat: missing field 'x'"):
        load_penn_action_mat(tmp_path / "nox.mat")

    scipy.io.savemat(tmp_path / "narrow.mat", {**fields, "x": fields["x"][:, :12]})
    with pytest.raises(ValueError, match=r"narrow\.mat: field 'x' expected shape \(T, 13\)"):
        load_penn_action_mat(tmp_path / "narrow.mat")

    scipy.io.savemat(tmp_path / "short.mat", {**fields, "visibility": fields["visibility"][:5]})
    with pytest.raises(ValueError, match=r"short\.mat: field 'visibility' expected shape"):
        load_penn_action_mat(tmp_path / "short.mat")

    scipy.io.savemat(tmp_path / "vis.mat", {**fields, "visibility": fields["visibility"] * 2})
    with pytest.raises(
        ValueError, match=r"vis\.mat: field 'visibility' expected values in \{0, 1\}"
    ):
        load_penn_action_mat(tmp_path / "vis.mat")

    (tmp_path / "text.mat").write_text("not matlab")
    with pytest.raises(ValueError, match=r"text\.mat: expected a MATLAB v5 \.mat file"):
        load_penn_action_mat(tmp_path / "text.mat")

    with pytest.raises(FileNotFoundError):
        load_penn_action_mat(tmp_path / "absent.mat")
