from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skelgraph import SkeletonClip
from skelgraph.cli import main
from skelgraph.data import example_clips, write_skeleton_folder
from skelgraph.layouts import get_layout
from skelgraph.models import Ensemble, InfoGCN2, create, registered_name
from skelgraph.models.checkpoint import load_checkpoint, make_meta, save_checkpoint
from skelgraph.models.ensemble import StreamingEnsemble, fuse_checkpoints, mirrored
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.checkpoint_data import evaluation_config
from skelgraph.train.evaluate import ClipPredictions, fuse_predictions, split_predictor
from skelgraph.train.metrics import classification_metrics
from skelgraph.train.report import describe_model

K, V = 4, 13
SMALL = {"channels": 16, "depth": 1, "head_channels": 16, "decoder_channels": 8}
TINY_STGCN = {"channels": [8, 8], "strides": [1, 2]}


def infogcn2(seed: int, **kwargs) -> InfoGCN2:
    torch.manual_seed(seed)
    return create("infogcn2", num_classes=K, layout="penn13", **{**SMALL, **kwargs}).eval()


def stgcn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create("stgcn", num_classes=K, layout="penn13", **TINY_STGCN).eval()


def joints(batch: int = 2, frames: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, V, frames, 3, generator=generator)
    x[..., -1] = torch.rand(batch, V, frames, generator=generator)
    return x


def flip_by_hand(x: torch.Tensor) -> torch.Tensor:
    """Mirror image written out: joint j takes its partner's values, x coordinate negated."""
    layout = get_layout("penn13")
    out = x.clone()
    for left, right in layout.pairs:
        out[:, left], out[:, right] = x[:, right], x[:, left]
    out[..., 0] = -out[..., 0]
    return out


# fusion -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [infogcn2, stgcn])
def test_logits_are_log_of_averaged_probabilities(make):
    models = [make(0), make(1)]
    ensemble = Ensemble.from_models(models).eval()
    x = joints()
    with torch.no_grad():
        out = ensemble(x)
        expected = sum(m(x).logits.softmax(-1) for m in models) / 2
    torch.testing.assert_close(out.logits.exp(), expected)
    assert out.logits.shape == models[0](x).logits.shape
    assert ensemble.member_names == [registered_name(models[0])] * 2


def test_mirror_tta_averages_the_model_on_the_flipped_input():
    model = infogcn2(0)
    x = joints()
    tta = mirrored(model).eval()
    with torch.no_grad():
        expected = (model(x).logits.softmax(-1) + model(flip_by_hand(x)).logits.softmax(-1)) / 2
        out = tta(x)
        torch.testing.assert_close(out.logits.exp(), expected)
        torch.testing.assert_close(out.forecast, model(x).forecast)  # the unmirrored view's
    torch.testing.assert_close(tta.flip(tta.flip(x)), x)
    assert tta.mirror and tta.config["mirror"] and describe_model(tta)["tta"] == "mirror"
    assert not describe_model(tta)["ensemble"]
    # an ensemble gets mirror TTA by a copy, not a nested ensemble
    pair = Ensemble.from_models([model, infogcn2(1)])
    assert len(mirrored(pair).members) == 2 and not pair.mirror


def test_weights_average_the_probabilities_per_member_and_view():
    models = [stgcn(0), stgcn(1)]
    x = joints()
    ensemble = Ensemble.from_models(models, weights=[3, 1]).eval()
    tta = Ensemble.from_models(models, mirror=True, weights=[3, 1]).eval()
    with torch.no_grad():
        p0, p1 = (m(x).logits.softmax(-1) for m in models)
        torch.testing.assert_close(ensemble(x).logits.exp(), (3 * p0 + p1) / 4)
        f0, f1 = (m(flip_by_hand(x)).logits.softmax(-1) for m in models)
        torch.testing.assert_close(tta(x).logits.exp(), (3 * (p0 + f0) + p1 + f1) / 8)
    assert ensemble.weights == [3.0, 1.0] and ensemble.config["weights"] == [3.0, 1.0]
    assert Ensemble.from_models(models).config["weights"] is None
    for bad in ([1.0], [1.0, 0.0], [1.0, float("nan")]):
        with pytest.raises(ValueError, match=r"weights \(one per member\): expected 2 positive"):
            Ensemble.from_models(models, weights=bad)


def test_weighted_score_fusion():
    logits = [np.log([[0.5, 0.5]]), np.log([[0.9, 0.1]])]
    predictions = [
        ClipPredictions(np.arange(1), np.zeros(1, int), l.astype(np.float32), {}, None)
        for l in logits
    ]
    fused = fuse_predictions(predictions, [1.0, 3.0])
    # (1 * 0.5 + 3 * 0.9) / 4 = 0.8 and (1 * 0.5 + 3 * 0.1) / 4 = 0.2
    np.testing.assert_allclose(np.exp(fused.logits), [[0.8, 0.2]], rtol=1e-6)


def test_members_must_agree_on_the_time_length():
    ensemble = Ensemble.from_models([infogcn2(0), stgcn(1)])
    with pytest.raises(ValueError, match=r"time length.*members\[1\] \(stgcn\)"):
        ensemble(joints())


def test_member_arguments_must_match_the_ensemble():
    with pytest.raises(ValueError, match=r"members\[0\]\.args\.num_classes: expected 4"):
        create("ensemble", num_classes=4, members=[{"name": "stgcn", "args": {"num_classes": 3}}])
    with pytest.raises(ValueError, match="members: expected a non-empty list"):
        create("ensemble", num_classes=4, members=[])
    with pytest.raises(ValueError, match="expected one of"):
        create("ensemble", num_classes=4, members=[{"name": "resnet", "args": {}}])


def test_loss_is_the_sum_of_member_losses_and_trains():
    models = [infogcn2(0), infogcn2(1, features=["bone"])]
    ensemble = Ensemble.from_models(models).train()
    x, y = joints(), torch.tensor([0, 3])
    out = ensemble(x)
    losses = ensemble.loss(out, x, y)
    for model in models:
        model.train()
    expected = sum(m.loss(m(x), x, y)["loss"] for m in models)
    torch.testing.assert_close(losses["loss"], expected)
    assert set(losses) == {"loss", "cls", "loss_0", "loss_1"}
    losses["loss"].backward()
    assert all(p.grad is not None for p in ensemble.members[1].parameters() if p.requires_grad)


def test_config_rebuilds_the_ensemble():
    ensemble = Ensemble.from_models([infogcn2(0)], mirror=True)
    rebuilt = create("ensemble", **ensemble.config)
    rebuilt.load_state_dict(ensemble.state_dict())
    assert rebuilt.config == ensemble.config
    x = joints()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x).logits, ensemble.eval()(x).logits)


# checkpoints and the command line ---------------------------------------------------------------


def example_folder(root: Path) -> tuple[Path, list[str]]:
    """A skeleton folder of the shipped Penn Action example clips (every one a test clip)."""
    clips = [SkeletonClip.load(p) for p in example_clips("penn_action")[:K]]
    items = [(c, str(c.label), "test") for c in clips]
    write_skeleton_folder(root / "data", items, progress=False)
    return root / "data", [str(c.label) for c in clips]


def write_member(path: Path, model: torch.nn.Module, classes: list[str], **changes) -> Path:
    meta = make_meta(
        model=registered_name(model),
        model_args=model.config,
        classes=changes.pop("classes", classes),
        layout=model.layout,
        in_channels=3,
        window=changes.pop("window", 16),
        preprocess=changes.pop("preprocess", PreprocessConfig()).to_dict(),
        inference={"sampling": "clip", "stride": None, "p_interval": [0.95], "reduce": "mean"},
    )
    save_checkpoint(path, model, meta)
    return path


def test_from_checkpoints_round_trip_and_skelgraph_test(tmp_path):
    data, classes = example_folder(tmp_path)
    models = [infogcn2(0), infogcn2(1, features=["joint", "velocity"])]
    paths = [write_member(tmp_path / f"m{i}.pt", m, classes) for i, m in enumerate(models)]
    _, meta = Ensemble.from_checkpoints(paths, mirror=True)
    assert meta["model"] == "ensemble" and meta["inference"]["tta"] == "mirror"
    assert meta["ensemble"]["models"] == ["infogcn2", "infogcn2"]
    assert meta["classes"] == classes and meta["window"] == 16

    fused = tmp_path / "fused.pt"
    assert main(["ensemble", str(fused), *map(str, paths), "--mirror"]) == 0
    loaded, loaded_meta = load_checkpoint(fused)
    assert isinstance(loaded, Ensemble) and loaded.mirror
    assert loaded_meta["model_args"] == meta["model_args"]
    x = joints(frames=8)
    with torch.no_grad():
        expected = Ensemble.from_models(models, mirror=True).eval()(x).logits
        torch.testing.assert_close(loaded(x).logits, expected)

    out = tmp_path / "report"
    argv = ["test", "--checkpoint", str(fused), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--no-early", "--device", "cpu", "--precision", "fp32"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["model"] == "ensemble" and report["ensemble"] is True
    assert report["members"] == ["infogcn2", "infogcn2"] and report["tta"] == "mirror"
    assert report["num_samples"] == K and report["checkpoint"] == str(fused)

    # one plain checkpoint with mirror TTA at test time
    out = tmp_path / "single"
    argv = ["test", "--checkpoint", str(paths[0]), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--no-early", "--device", "cpu", "--tta", "mirror"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["model"] == "ensemble" and report["ensemble"] is False
    assert report["members"] == ["infogcn2"] and report["tta"] == "mirror"


def test_fuse_predictions_averages_the_class_probabilities():
    ids, labels = np.arange(3), np.array([0, 1, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1]])
    q = np.array([[0.1, 0.2, 0.7], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    # logits up to a per-clip constant: only the probabilities count
    a = ClipPredictions(ids, labels, np.log(p).astype(np.float32) + 3.0, {"loss": 1.0}, None)
    b = ClipPredictions(ids, labels, np.log(q).astype(np.float32), {}, None)
    fused = fuse_predictions([a, b])
    np.testing.assert_allclose(np.exp(fused.logits), (p + q) / 2, rtol=1e-5)
    assert fused.losses == {} and (fused.labels == labels).all()
    assert fuse_predictions([a]) is a

    other_clips = ClipPredictions(ids + 1, labels, b.logits, {}, None)
    other_labels = ClipPredictions(ids, labels[::-1], b.logits, {}, None)
    other_classes = ClipPredictions(ids, labels, b.logits[:, :2], {}, None)
    with pytest.raises(ValueError, match=r"predictions\[1\]: expected the clips"):
        fuse_predictions([a, other_clips])
    with pytest.raises(ValueError, match=r"labels differ from predictions\[0\]'s on 2 clips"):
        fuse_predictions([a, other_labels])
    with pytest.raises(ValueError, match=r"logits: expected shape \[3, 3\], got \[3, 2\]"):
        fuse_predictions([a, other_classes])
    with pytest.raises(ValueError, match="at least one"):
        fuse_predictions([])


def test_skelgraph_test_fuses_scores_of_models_with_their_own_samples(tmp_path, capsys):
    data, classes = example_folder(tmp_path)
    causal = PreprocessConfig(causal=True)
    paths = [
        write_member(tmp_path / "infogcn2.pt", infogcn2(0), classes, window=24, preprocess=causal),
        write_member(tmp_path / "stgcn.pt", stgcn(1), classes),
    ]
    out, cache = tmp_path / "fused", tmp_path / "cache"
    argv = ["test", "--checkpoint", *map(str, paths), "--data", str(data), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--precision", "fp32", "--cache-dir", str(cache)]) == 0
    assert "score_fusion: infogcn2, stgcn" in capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["checkpoint"] == list(map(str, paths)) and report["ensemble"] is True
    assert report["fused_models"] == ["infogcn2", "stgcn"] and report["tta"] is None
    assert len(report["early_recognition"]["accuracy"]) == 10

    # each checkpoint samples the clips with its own window and preprocessing
    predictions, configs = [], []
    for path in paths:
        model, meta = load_checkpoint(path)
        config = evaluation_config(meta, batch_size=8, precision="fp32", device="cpu")
        configs.append(config)
        predict_at = split_predictor(model, data, config, classes, split="test", progress=False)
        predictions.append(predict_at(1.0))
    fused = fuse_predictions(predictions)
    expected = classification_metrics(fused.logits, fused.labels)
    assert report["confusion"] == expected["confusion"].tolist()
    assert report["top5"] == pytest.approx(expected["top5"])
    model, _ = load_checkpoint(paths[0])
    with_other_samples = split_predictor(
        model, data, configs[1], classes, split="test", progress=False
    )
    assert not np.allclose(with_other_samples(1.0).logits, predictions[0].logits, atol=1e-3)

    other = write_member(tmp_path / "classes.pt", stgcn(2), classes[::-1])
    assert main(["test", "--checkpoint", str(paths[0]), str(other), "--data", str(data)]) == 1
    assert f"checkpoint {other}: meta field 'classes'" in capsys.readouterr().err


def test_from_checkpoints_names_the_mismatching_file_and_field(tmp_path, capsys):
    classes = ["a", "b", "c", "d"]
    first = write_member(tmp_path / "first.pt", infogcn2(0), classes)
    other_classes = write_member(tmp_path / "classes.pt", infogcn2(1), classes[::-1])
    other_window = write_member(tmp_path / "window.pt", infogcn2(1), classes, window=32)
    coco = create("infogcn2", num_classes=K, layout="coco17", **SMALL)
    other_layout = write_member(tmp_path / "layout.pt", coco, classes)
    for path, field in (
        (other_classes, "classes"),
        (other_window, "window"),
        (other_layout, "layout"),
    ):
        with pytest.raises(ValueError, match=rf"checkpoint {path}: meta field '{field}'"):
            Ensemble.from_checkpoints([first, path])
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        Ensemble.from_checkpoints([first, tmp_path / "missing.pt"])
    with pytest.raises(ValueError, match="non-empty list"):
        Ensemble.from_checkpoints(str(first))

    out = tmp_path / "out.pt"
    assert main(["ensemble", str(out), str(first), str(other_window)]) == 1
    assert "meta field 'window'" in capsys.readouterr().err and not out.exists()
    assert main(["ensemble", str(out), str(first), str(first), "--weights", "1.5"]) == 1
    assert "--weights: expected one per checkpoint (2), got 1" in capsys.readouterr().err
    assert main(["ensemble", str(out), str(first), str(first), "--weights", "1", "-2"]) == 1
    assert "expected 2 positive numbers" in capsys.readouterr().err and not out.exists()
    fuse_checkpoints(out, [first], mirror=True)
    assert load_checkpoint(out)[1]["inference"]["tta"] == "mirror"


def test_weights_are_saved_in_the_fused_checkpoint(tmp_path, capsys):
    classes = ["a", "b", "c", "d"]
    members = [stgcn(0), stgcn(1)]
    paths = [write_member(tmp_path / f"m{i}.pt", m, classes) for i, m in enumerate(members)]
    out = tmp_path / "fused.pt"
    args = ["ensemble", str(out), *map(str, paths), "--weights", "1.5", "1"]
    assert main(args) == 0
    assert "weights [1.5, 1.0]" in capsys.readouterr().out
    state = torch.load(out, weights_only=True)
    assert state["meta"]["model_args"]["weights"] == [1.5, 1.0]
    model, _ = load_checkpoint(out)
    x = joints()
    with torch.no_grad():
        p0, p1 = (m(x).logits.softmax(-1) for m in members)
        torch.testing.assert_close(model(x).logits.exp(), (1.5 * p0 + p1) / 2.5)


def test_from_models_checks_the_shared_arguments():
    with pytest.raises(ValueError, match=r"models\[1\]\.layout: expected 'penn13'"):
        Ensemble.from_models([infogcn2(0), create("stgcn", num_classes=K, **TINY_STGCN)])


# streaming ---------------------------------------------------------------------------------------


def test_streaming_needs_every_member_to_stream():
    ensemble = Ensemble.from_models([stgcn(0)])
    assert not hasattr(ensemble, "step") and not hasattr(ensemble, "init_state")
    assert not isinstance(ensemble, StreamingEnsemble)


def test_step_equals_forward():
    models = [infogcn2(0), infogcn2(1, features=["joint", "velocity"])]
    ensemble = Ensemble.from_models(models, mirror=True, weights=[2, 1]).eval()
    assert isinstance(ensemble, StreamingEnsemble)
    x = joints(frames=7)
    with torch.inference_mode():
        out = ensemble(x)
        state = ensemble.init_state(x.size(0))
        streams = [ensemble.init_state(1) for _ in range(x.size(0))]
        for t in range(x.size(2)):
            logits, forecast, state = ensemble.step(x[:, :, t], state)
            torch.testing.assert_close(logits, out.logits[:, t], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(forecast, out.forecast[:, t], atol=1e-4, rtol=1e-4)
            logits, _, streams = ensemble.step_streams(x[:, :, t], streams)
            torch.testing.assert_close(logits, out.logits[:, t], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match=r"x_t: expected shape \[B, 13, 3\]"):
        ensemble.step(x[:, :, 0, :2], ensemble.init_state(2))


def test_mirror_matches_the_layout_permutation():
    layout = get_layout("penn13")
    ensemble = Ensemble.from_models([stgcn(0)], mirror=True)
    x = joints()
    perm = torch.as_tensor(np.asarray(layout.flip_permutation()))
    torch.testing.assert_close(ensemble.flip(x), flip_by_hand(x))
    torch.testing.assert_close(ensemble.flip(x)[:, :, :, 1:], x[:, perm][:, :, :, 1:])


def test_skelgraph_test_takes_packaged_checkpoints_by_name(tmp_path, capsys):
    data, _ = example_folder(tmp_path)
    out = tmp_path / "eval"
    argv = ["test", "--checkpoint", "penn-action-fast", "--data", str(data), "--out", str(out)]
    assert main([*argv, "--no-early", "--device", "cpu", "--precision", "fp32", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["num_samples"] == K
    assert main(["test", "--checkpoint", "penn-action-nope", "--data", str(data)]) == 1
    assert "available" in capsys.readouterr().err
