from __future__ import annotations

import numpy as np
import pytest

from skelgraph import SkeletonClip
from skelgraph.data import (
    SkeletonFolder,
    example_clips,
    example_datasets,
    make_loader,
    write_skeleton_folder,
)
from skelgraph.io import load_penn_action_mat
from skelgraph.models import available_pretrained, load_pretrained, pretrained_path
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.evaluate import predict

PENN_CLASSES = [
    "baseball_pitch",
    "baseball_swing",
    "bench_press",
    "bowl",
    "clean_and_jerk",
    "golf_swing",
    "jump_rope",
    "jumping_jacks",
    "pullup",
    "pushup",
    "situp",
    "squat",
    "strum_guitar",
    "tennis_forehand",
    "tennis_serve",
]


# pretrained checkpoints ---------------------------------------------------------------------------


def test_unknown_pretrained_name_names_the_file_and_the_known_names():
    with pytest.raises(FileNotFoundError, match=r"'no-such-model'.*no-such-model\.pt.*known names"):
        pretrained_path("no-such-model")
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_pretrained("no-such-model")


def test_available_pretrained_are_packaged_files():
    for name in available_pretrained():
        path = pretrained_path(name)
        assert path.is_file() and path.parent.name == "pretrained" and path.stem == name


@pytest.mark.skipif(
    "penn-action" not in available_pretrained(), reason="no packaged penn-action checkpoint yet"
)
def test_penn_action_checkpoint_recognises_the_example_clips(tmp_path):
    model, meta = load_pretrained("penn-action")
    assert not model.training
    assert meta["classes"] == PENN_CLASSES and meta["layout"]["name"] == "penn13"
    clips = [SkeletonClip.load(p) for p in example_clips("penn_action")]
    write_skeleton_folder(tmp_path, [(c, str(c.label), "test") for c in clips], progress=False)
    inference = meta["inference"]
    dataset = SkeletonFolder(
        tmp_path,
        classes=meta["classes"],
        window=meta["window"],
        sampling=inference["sampling"],
        stride=inference["stride"],
        p_interval=inference["p_interval"],
        preprocess=PreprocessConfig(**meta["preprocess"]),
    )
    preds = predict(model, make_loader(dataset, 16), reduce=inference["reduce"], progress=False)
    assert (preds.logits.argmax(1) == preds.labels).sum() >= 10  # of the 15 test clips


# example clips ------------------------------------------------------------------------------------


def test_example_clips_one_per_penn_action_class():
    assert "penn_action" in example_datasets()
    paths = example_clips()
    assert paths == sorted(paths) == example_clips("penn_action")
    assert [p.stem for p in paths] == PENN_CLASSES
    assert sum(p.stat().st_size for p in paths) < 400_000
    for path in paths:
        clip = SkeletonClip.load(path)
        assert clip.layout.name == "penn13" and clip.num_joints == 13
        assert clip.label == path.stem and clip.meta["split"] == "test"
        assert clip.keypoints.shape[-1] == 3 and clip.num_frames >= 16 and clip.fps == 30.0
    assert (paths[0].parent.parent / "CREDITS.md").is_file()


def test_unknown_example_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"expected one of \['penn_action'\], got 'ntu'"):
        example_clips("ntu")


def test_example_clips_are_the_first_test_clip_of_each_class(penn_action_root):
    first: dict[str, SkeletonClip] = {}
    for path in sorted((penn_action_root / "labels").glob("*.mat")):  # by clip id
        clip = load_penn_action_mat(path)
        if clip.meta["split"] == "test":
            first.setdefault(str(clip.label), clip)
    assert sorted(first) == PENN_CLASSES
    for path in example_clips():
        clip, source = SkeletonClip.load(path), first[path.stem]
        assert clip.source == source.source and clip.label == source.label
        np.testing.assert_array_equal(clip.keypoints, source.keypoints)
        assert clip.meta == {k: v for k, v in source.meta.items() if k != "bbox"}
