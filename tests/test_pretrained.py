from __future__ import annotations

import numpy as np
import pytest

from skelgraph import SkeletonClip
from skelgraph.data import (
    example_clips,
    example_datasets,
    make_loader,
    write_skeleton_folder,
)
from skelgraph.io import load_penn_action_mat
from skelgraph.layouts import MappingWarning, map_keypoints
from skelgraph.models import available_pretrained, load_pretrained, pretrained_path
from skelgraph.online import OnlineRecognizer
from skelgraph.train.checkpoint_data import checkpoint_folder
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


@pytest.mark.parametrize(("name", "most_missed"), [("penn-action", 0), ("penn-action-fast", 1)])
def test_penn_action_checkpoint_recognises_the_example_clips(tmp_path, name, most_missed):
    """The ensemble gets every example clip; the single-stream model (93.4 % on the test split)
    misses at most one (it takes the bowling clip for a baseball pitch)."""
    model, meta = load_pretrained(name)
    assert not model.training
    assert meta["classes"] == PENN_CLASSES and meta["layout"]["name"] == "penn13"
    clips = [SkeletonClip.load(p) for p in example_clips("penn_action")]
    write_skeleton_folder(tmp_path, [(c, str(c.label), "test") for c in clips], progress=False)
    dataset = checkpoint_folder(tmp_path, meta)
    preds = predict(
        model, make_loader(dataset, 16), reduce=meta["inference"]["reduce"], progress=False
    )
    names = [meta["classes"][i] for i in preds.logits.argmax(1).tolist()]
    truth = [meta["classes"][i] for i in preds.labels.tolist()]
    assert len(names) == 15
    assert sum(a != b for a, b in zip(names, truth, strict=True)) <= most_missed


def test_penn_action_online_from_yolo_joints():
    """The example clips streamed frame by frame as coco17 joints (what YOLO pose gives) get the
    same probabilities as the penn13 joints, and (almost) all end on their class."""
    from_yolo = OnlineRecognizer.from_checkpoint("penn-action", input_layout="coco17")
    from_penn = OnlineRecognizer.from_checkpoint("penn-action")
    right = 0
    for path in example_clips("penn_action"):
        clip = SkeletonClip.load(path)
        from_yolo.reset()
        from_penn.reset()
        with pytest.warns(MappingWarning):  # penn13 has no eyes and ears
            yolo = from_yolo.run(map_keypoints(clip.keypoints, "penn13", "coco17"))
        penn = from_penn.run(clip.keypoints)
        assert len(yolo) == clip.num_frames
        assert yolo[-1].forecast is not None and yolo[-1].forecast.shape[1:] == (17, 2)
        for a, b in zip(yolo, penn, strict=True):
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        right += yolo[-1].label == clip.label
    # at the clips' own 30 fps; the long clean_and_jerk clip (171 frames) ends on "pullup"
    assert right >= 14


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


def test_example_clips_are_early_test_clips_of_their_class(penn_action_root):
    """Each example is one of the first five official test clips of its class, as annotated."""
    early: dict[str, list[SkeletonClip]] = {}
    for path in sorted((penn_action_root / "labels").glob("*.mat")):  # by clip id
        clip = load_penn_action_mat(path)
        if clip.meta["split"] == "test" and len(early.setdefault(str(clip.label), [])) < 5:
            early[str(clip.label)].append(clip)
    assert sorted(early) == PENN_CLASSES
    for path in example_clips():
        clip = SkeletonClip.load(path)
        (source,) = [c for c in early[path.stem] if c.source == clip.source]
        assert clip.label == source.label
        np.testing.assert_array_equal(clip.keypoints, source.keypoints)
        assert clip.meta == {k: v for k, v in source.meta.items() if k != "bbox"}
