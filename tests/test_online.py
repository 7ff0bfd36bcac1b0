from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skelgraph.layouts import get_layout, map_keypoints
from skelgraph.models import create
from skelgraph.models.checkpoint import make_meta, save_checkpoint
from skelgraph.online import OnlineRecognizer, Prediction
from skelgraph.preprocess import CausalPreprocessor, PreprocessConfig, preprocess
from skelgraph.streaming import build_plan

CLASSES = ["bowl", "clap", "jump", "squat"]
SMALL = {"channels": 16, "depth": 2, "head_channels": 16, "decoder_channels": 8}
COCO, PENN = get_layout("coco17"), get_layout("penn13")


def meta_for(name: str, model, window: int = 64) -> dict:
    return make_meta(
        model=name,
        model_args=model.config,
        classes=CLASSES,
        layout=model.layout,
        in_channels=3,
        window=window,
        preprocess=PreprocessConfig().to_dict(),
    )


def coco_clip(num_frames: int, seed: int = 0) -> np.ndarray:
    """A person-sized coco17 clip in pixels: jittered joints, some of them missing (NaN, 0)."""
    rng = np.random.default_rng(seed)
    kp = np.empty((num_frames, 17, 3), np.float32)
    kp[..., :2] = rng.normal(0.0, 40.0, (num_frames, 17, 2)) + np.array([320.0, 240.0])
    kp[..., 2] = rng.uniform(0.0, 1.0, (num_frames, 17))
    missing = kp[..., 2] < 0.1
    kp[missing, :2] = np.nan
    kp[missing, 2] = 0.0
    kp[:5, [11, 12], 2] = 0.05  # no pelvis at the start
    return kp


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained penn13 InfoGCN++ with joint, bone and velocity features, window 64."""
    torch.manual_seed(0)
    model = create(
        "infogcn2",
        num_classes=len(CLASSES),
        layout="penn13",
        features=["joint", "bone", "velocity"],
        attention_window=64,
        **SMALL,
    )
    path = tmp_path_factory.mktemp("online") / "infogcn2.pt"
    save_checkpoint(path, model, meta_for("infogcn2", model))
    return path


def test_online_equals_offline_per_step_logits(checkpoint: Path) -> None:
    """150 frames (beyond the 64-frame attention window), coco17 input for a penn13 model."""
    recognizer = OnlineRecognizer.from_checkpoint(checkpoint, input_layout="coco17")
    assert recognizer.streaming and recognizer.layout == PENN and recognizer.input_layout == COCO
    kp = coco_clip(150)
    predictions = recognizer.run(kp)
    assert [p.frame for p in predictions] == list(range(150))

    causal = PreprocessConfig(causal=True)
    x = preprocess(map_keypoints(kp, COCO, PENN), PENN, causal)
    with torch.no_grad():
        out = recognizer.model(torch.from_numpy(x).permute(1, 0, 2).unsqueeze(0))
    expected = torch.log_softmax(out.logits[0], dim=-1).numpy()
    online = np.log(np.stack([p.probabilities for p in predictions]))
    np.testing.assert_allclose(online, expected, atol=1e-4)  # logits up to their log-sum-exp
    for p in predictions:
        assert p.probabilities.dtype == np.float32 and p.probabilities.shape == (4,)
        assert p.label == CLASSES[int(np.argmax(p.probabilities))]
        assert p.score == pytest.approx(float(p.probabilities.max()))

    # the forecast in pixels and coco17 order: de-normalised with the frame's origin and scale
    online_pre = CausalPreprocessor(PENN, causal)
    for t, frame in enumerate(map_keypoints(kp, COCO, PENN)):
        online_pre.update(frame)
        if t not in (40, 149):
            continue
        forecast = predictions[t].forecast
        assert forecast.shape == (3, 17, 2) and np.isfinite(forecast).all()
        pixels = out.forecast[0, t].numpy() * online_pre.scale + online_pre.origin
        for name in ("left_shoulder", "right_ankle"):
            np.testing.assert_allclose(
                forecast[:, COCO.index(name)], pixels[:, PENN.index(name)], rtol=1e-4, atol=1e-3
            )
        np.testing.assert_allclose(forecast[:, COCO.index("nose")], pixels[:, PENN.index("head")])
        for name in ("left_eye", "right_ear"):  # not in penn13: the nearest forecast joint
            np.testing.assert_array_equal(forecast[:, COCO.index(name)], forecast[:, 0])
    assert recognizer.forecast_joints.tolist() == [True] + [False] * 4 + [True] * 12


def test_reset_starts_a_new_stream(checkpoint: Path) -> None:
    recognizer = OnlineRecognizer.from_checkpoint(checkpoint, input_layout="coco17")
    kp = coco_clip(12, seed=3)
    first = recognizer.run(kp)
    recognizer.update(kp[0])
    recognizer.reset()
    again = recognizer.run(kp)
    assert again[0].frame == 0
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.probabilities, b.probabilities)


def test_smoothing_changes_the_label_not_the_probabilities(checkpoint: Path) -> None:
    kp = coco_clip(20, seed=1)
    raw = OnlineRecognizer.from_checkpoint(checkpoint, input_layout="coco17").run(kp)
    smooth = OnlineRecognizer.from_checkpoint(checkpoint, input_layout="coco17", smoothing=0.8)
    shown = None
    for r, s in zip(raw, smooth.run(kp), strict=True):
        np.testing.assert_array_equal(s.probabilities, r.probabilities)
        shown = r.probabilities if shown is None else 0.8 * shown + 0.2 * r.probabilities
        assert s.label == CLASSES[int(np.argmax(shown))]
        assert s.score == pytest.approx(float(shown.max()), rel=1e-6)
    with pytest.raises(ValueError, match=r"smoothing: expected a value in \[0, 1\), got 1.0"):
        OnlineRecognizer.from_checkpoint(checkpoint, smoothing=1.0)


def test_generic_fallback_recomputes_the_window() -> None:
    torch.manual_seed(0)
    model = create("stgcn", num_classes=len(CLASSES), layout="coco17", channels=[8], strides=[1])
    recognizer = OnlineRecognizer(model, meta_for("stgcn", model, window=6))
    assert not recognizer.streaming
    kp = coco_clip(10, seed=2)
    predictions = recognizer.run(kp)
    x = torch.from_numpy(preprocess(kp, COCO, PreprocessConfig(causal=True))).permute(1, 0, 2)
    for t, p in enumerate(predictions):
        with torch.no_grad():
            logits = model(x[:, max(0, t - 5) : t + 1].unsqueeze(0)).logits[0, -1]
        np.testing.assert_allclose(p.probabilities, torch.softmax(logits, -1).numpy(), atol=1e-6)
        assert p.forecast is None


def test_streaming_model_can_recompute_the_window(checkpoint: Path) -> None:
    cached = OnlineRecognizer.from_checkpoint(checkpoint)
    recompute = OnlineRecognizer(cached.model, cached.meta, streaming=False)
    kp = map_keypoints(coco_clip(70, seed=4), COCO, PENN)
    a, b = cached.run(kp), recompute.run(kp)
    for t in (0, 30, 63):  # within the window both see the whole clip
        np.testing.assert_allclose(a[t].probabilities, b[t].probabilities, atol=1e-5)
        np.testing.assert_allclose(a[t].forecast, b[t].forecast, rtol=1e-4, atol=1e-3)
    stgcn = create("stgcn", num_classes=len(CLASSES), layout="penn13", channels=[8], strides=[1])
    with pytest.raises(ValueError, match="streaming: STGCN has no init_state/step"):
        OnlineRecognizer(stgcn, meta_for("stgcn", stgcn), streaming=True)
    with pytest.raises(ValueError, match=r"meta\['classes'\]: expected 4 names .* got 2"):
        OnlineRecognizer(cached.model, {**cached.meta, "classes": ["a", "b"]})


def test_bad_input_shapes_name_the_expected_shape(checkpoint: Path) -> None:
    recognizer = OnlineRecognizer.from_checkpoint(checkpoint, input_layout="coco17")
    with pytest.raises(ValueError, match=r"keypoints: expected shape \(17, 3\) .* got \(13, 3\)"):
        recognizer.update(np.zeros((13, 3)))
    with pytest.raises(ValueError, match=r"keypoints: expected shape \(17, 3\) .* got \(17, 4\)"):
        recognizer.update(np.zeros((17, 4)))
    with pytest.raises(ValueError, match=r"expected shape \(T, 17, 3\) .* got \(17, 3\)"):
        recognizer.run(np.zeros((17, 3)))
    penn = OnlineRecognizer.from_checkpoint(checkpoint)  # default: the model's layout
    with pytest.raises(ValueError, match=r"expected shape \(13, 3\) \(joints of layout 'penn13'"):
        penn.update(np.zeros((17, 3)))


def test_from_checkpoint_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such checkpoint file, and not a pretrained"):
        OnlineRecognizer.from_checkpoint(tmp_path / "missing.pt")


def test_prediction_to_dict_is_json() -> None:
    prediction = Prediction(
        frame=3,
        probabilities=np.array([0.25, 0.75], np.float32),
        label="clap",
        score=0.75,
        forecast=np.zeros((2, 17, 2), np.float32),
        classes=("bowl", "clap"),
    )
    data = json.loads(json.dumps(prediction.to_dict(classes=True)))
    assert data["frame"] == 3 and data["label"] == "clap" and data["score"] == 0.75
    assert data["probabilities"] == [0.25, 0.75] and data["classes"] == ["bowl", "clap"]
    assert np.asarray(data["forecast"]).shape == (2, 17, 2)
    assert "classes" not in prediction.to_dict()
    prediction.forecast = None
    assert prediction.to_dict()["forecast"] is None


@pytest.mark.parametrize("mirror", [False, True])
def test_update_many_equals_update_one_stream_at_a_time(checkpoint: Path, mirror: bool) -> None:
    """Recognisers sharing a model (an ensemble with mirror TTA too, and one recomputing the
    window) advanced together by update_many, a random subset per call, predict what each one
    alone predicts."""
    from skelgraph.models.checkpoint import load_checkpoint
    from skelgraph.models.ensemble import Ensemble

    model, meta = (
        Ensemble.from_checkpoints([checkpoint, checkpoint], mirror=True)
        if mirror
        else load_checkpoint(checkpoint)
    )
    plan = build_plan(model)
    together = [OnlineRecognizer(model, meta, input_layout="coco17", plan=plan) for _ in range(3)]
    together.append(OnlineRecognizer(model, meta, input_layout="coco17", streaming=False))
    alone = [OnlineRecognizer(model, meta, input_layout="coco17") for _ in range(3)]
    alone.append(OnlineRecognizer(model, meta, input_layout="coco17", streaming=False))
    clips = [coco_clip(80, seed) for seed in range(4)]
    seen = [0, 0, 0, 0]
    rng = np.random.default_rng(0)
    for _ in range(150):
        chosen = [i for i in range(4) if rng.random() < 0.6 and seen[i] < 80]
        if not chosen:
            continue
        predictions = OnlineRecognizer.update_many(
            [together[i] for i in chosen], [clips[i][seen[i]] for i in chosen]
        )
        for i, prediction in zip(chosen, predictions, strict=True):
            expected = alone[i].update(clips[i][seen[i]])
            assert prediction.frame == expected.frame == seen[i]
            np.testing.assert_allclose(prediction.probabilities, expected.probabilities, atol=1e-5)
            np.testing.assert_allclose(prediction.forecast, expected.forecast, atol=1e-3)
            seen[i] += 1
    assert min(seen) > 64  # past the attention window
    with pytest.raises(ValueError, match=r"keypoints: expected shape \(17, 3\)"):
        OnlineRecognizer.update_many(together[:2], [clips[0][0], np.zeros((13, 3))])
    assert [r._frame for r in together] == seen  # a refused batch changes no recogniser
    with pytest.raises(ValueError, match="a recogniser appears twice"):
        OnlineRecognizer.update_many([together[0]] * 2, [clips[0][0]] * 2)
