"""The offline InfoGCN model, its checkpoints, its Penn Action configuration and the six-stream
recipe of ``skelgraph train --streams``."""

from __future__ import annotations

import contextlib
import io
import time

import pytest
import torch
from helpers import CLASSES, synthetic_folder, write_model_checkpoint
from test_recognize import write_clip

from skelgraph.cli import main
from skelgraph.data import make_loader
from skelgraph.models import InfoGCN, create
from skelgraph.models.checkpoint import load_checkpoint, make_meta, save_checkpoint
from skelgraph.models.ensemble import Ensemble
from skelgraph.nn import SAGC, MultiScaleTemporalConv
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import load_config
from skelgraph.train.evaluate import evaluate
from skelgraph.train.run import prepare
from skelgraph.train.streams import RECIPES, Stream, parse_streams

pytestmark = pytest.mark.usefixtures("one_thread")

#: a small InfoGCN: four blocks (widths multiples of the four temporal branches)
SMALL = {"channels": [8, 8, 16, 16], "strides": [1, 2, 1, 2]}


def small(**kwargs) -> InfoGCN:
    torch.manual_seed(0)
    return create("infogcn", num_classes=4, layout="penn13", **{**SMALL, **kwargs})


# the model ---------------------------------------------------------------------------------------


def test_the_papers_model_has_its_layer_plan_and_size():
    model = create("infogcn", num_classes=60, layout="ntu25")
    blocks = model.backbone.blocks
    assert [b.out_channels for b in blocks] == [64, 64, 64, 128, 128, 128, 256, 256, 256]
    assert [b.stride for b in blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert all(isinstance(b.gcn.sagc, SAGC) and b.gcn.sagc.heads == 3 for b in blocks)
    assert all(isinstance(b.tcn, MultiScaleTemporalConv) for b in blocks)
    assert blocks[0].tcn.dilations == (1, 2) and blocks[0].tcn.kernel_size == 5
    # the identity topology the reference code starts from
    torch.testing.assert_close(blocks[0].gcn.sagc.topology, torch.eye(25).expand(3, 25, 25))
    assert model.bottleneck.latent_channels == 256 and model.bottleneck.noise_ratio == 0.5
    torch.testing.assert_close(model.bottleneck.prior_means.norm(dim=1), torch.full((60,), 3.0))
    params = sum(p.numel() for p in model.parameters())
    assert 1.4e6 < params < 1.6e6  # the paper: 1.5 M


def test_clip_scores_latent_and_terms():
    model = small(features=["bone", "relative2_velocity"])
    x = torch.randn(3, 13, 12, 3)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[2, 9:] = False
    out = model(x, mask)
    assert out.logits.shape == (3, 1, 4) and out.extras["z"].shape == (3, 1, 16)
    assert out.video_logits().shape == (3, 4)
    terms = model.loss(out, x, torch.tensor([0, 1, 1]), mask)
    assert set(terms) == {"loss", "cls", "z_norm", "z_prior"}
    expected = terms["cls"] + 1e-4 * terms["z_norm"] + 0.1 * terms["z_prior"]
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    assert model.bottleneck.mu.weight.grad is not None

    model.eval()
    with torch.no_grad():
        first, second = model(x, mask), model(x, mask)
    assert torch.equal(first.logits, second.logits)  # the mean latent: no sampling


def test_without_the_bottleneck_a_linear_classifier_and_the_cross_entropy():
    model = small(information_bottleneck=False, label_smoothing=0.0)
    assert model.bottleneck is None
    x = torch.randn(2, 13, 8, 3)
    out = model(x)
    assert out.extras == {}
    terms = model.loss(out, x, torch.tensor([2, 3]))
    assert set(terms) == {"loss", "cls"}
    torch.testing.assert_close(
        terms["cls"], torch.nn.functional.cross_entropy(out.logits[:, 0], torch.tensor([2, 3]))
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"channels\[1\]: expected a positive multiple of .* 4"):
        small(channels=[8, 10])
    with pytest.raises(ValueError, match=r"channels\[-1\]: expected at least num_classes = 4"):
        small(channels=[3], strides=[1], dilations=[1])
    with pytest.raises(ValueError, match="expected shape"):
        small()(torch.randn(1, 17, 8, 3))


def test_attention_maps():
    model = small()
    maps = model.attention(torch.randn(2, 13, 8, 3))
    assert maps.graphs["backbone.blocks.0.gcn"].shape == (2, 8, 3, 13, 13)
    assert maps.graphs["backbone.blocks.1.gcn"].shape == (2, 8, 3, 13, 13)  # before its stride
    assert maps.graphs["backbone.blocks.2.gcn"].shape == (2, 4, 3, 13, 13)
    assert maps.topology["backbone.blocks.0.gcn"].shape == (3, 13, 13)
    assert maps.output.logits.shape == (2, 1, 4)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = small(features=["relative2"], prior_gain=2.0, prior_seed=5).eval()
    meta = make_meta(
        model="infogcn",
        model_args=model.config,
        classes=[*CLASSES, "bowl"],
        layout="penn13",
        in_channels=3,
        window=16,
        preprocess=PreprocessConfig().to_dict(),
    )
    save_checkpoint(tmp_path / "model.pt", model, meta)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state["meta"]["model_args"]["prior_gain"] == 2.0
    priors = state["state_dict"]["bottleneck.prior_means"]
    torch.testing.assert_close(priors.norm(dim=1), torch.full((4,), 2.0))
    loaded, loaded_meta = load_checkpoint(tmp_path / "model.pt")
    assert loaded_meta["model"] == "infogcn" and not loaded.training
    assert torch.equal(loaded.bottleneck.prior_means, priors)
    x = torch.randn(2, 13, 8, 3)
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, model(x).logits)


# training on Penn Action -------------------------------------------------------------------------


def test_penn_action_configuration_loads():
    config = load_config("penn_action_infogcn")
    assert config.model.name == "infogcn" and config.data.window == 32
    assert config.data.preprocess.get("causal", False) is False  # offline, like ST-GCN
    model = create(config.model.name, num_classes=15, layout="penn13", **config.model.args)
    widths = [b.out_channels for b in model.backbone.blocks]
    assert widths == [32, 32, 32, 64, 64, 64, 128, 128, 128]
    paper = load_config("infogcn_paper")
    assert paper.model.args["channels"][-1] == 256 and paper.optim.lr_steps == [90, 100]


def test_overfits_32_penn_action_clips(penn32, tmp_path):
    start = time.perf_counter()
    config = load_config(
        "penn_action_infogcn",
        [
            "model.args.channels=[16, 16, 32, 32]",
            "model.args.strides=[1, 2, 1, 2]",
            "epochs=24",
            "batch_size=16",
            "data.window=16",
            "data.val_fraction=0",
            "data.rotation=false",
            "data.scale=false",
            "data.mirror=false",
            "data.p_interval_train=[1.0]",
            "data.p_interval_val=[1.0]",
            "optim.optimizer=adamw",
            "optim.lr=0.01",
            "optim.weight_decay=0",
            "optim.warmup_epochs=1",
            "optim.lr_steps=[20]",
            "precision=fp32",
        ],
    )
    trainer, data = prepare(config, penn32, tmp_path, cache_dir=tmp_path / "cache", progress=False)
    history = trainer.fit()["history"]
    assert {"cls", "z_norm", "z_prior"} <= set(history[0]["train"])
    assert history[-1]["train"]["loss"] < 0.5 * history[0]["train"]["loss"]
    metrics = evaluate(trainer.module, make_loader(data.base, 16, shuffle=False))
    assert metrics["num_samples"] == 32
    assert metrics["top1"] > 0.9
    assert time.perf_counter() - start < 60


# the six streams ---------------------------------------------------------------------------------


def test_infogcn_recipe_and_stream_specs():
    streams = parse_streams(["infogcn"])
    assert [s.name for s in streams] == [
        "joint",
        "bone",
        "relative2",
        "velocity",
        "bone_velocity",
        "relative2_velocity",
    ]
    assert [s.weight for s in streams] == [1.5, 1.5, 1.5, 1.0, 1.0, 1.0]
    assert parse_streams(["joint+velocity:2", "bone"]) == [
        Stream(("joint", "velocity"), 2.0),
        Stream(("bone",), 1.0),
    ]
    assert Stream(("joint", "bone")).override == "model.args.features=[joint, bone]"
    for spec, message in [
        ("speed", "'speed'"),
        ("joint:0", "positive weight"),
        ("joint:x", "positive weight"),
        ("relative1", "k >= 2"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_streams([spec])
    with pytest.raises(ValueError, match=r"\['joint'\] more than once"):
        parse_streams(["infogcn", "joint"])
    assert sorted(RECIPES) == ["infogcn", "symgnn"]


def test_six_stream_recipe_trains_fuses_and_evaluates(tmp_path):
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    work = tmp_path / "work"
    overrides = [
        "model.args.channels=[8, 8]",
        "model.args.strides=[1, 2]",
        "epochs=1",
        "batch_size=4",
        "data.window=8",
        "precision=fp32",
        "optim.warmup_epochs=0",
    ]
    args = ["--config", "penn_action_infogcn", "--data", str(data), "--work-dir", str(work)]
    options = ["--cache-dir", str(tmp_path / "cache"), "--quiet", "--no-early"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["train", *args, *options, "--streams", "infogcn", *overrides])
    assert rc == 0
    names = [s.name for s in RECIPES["infogcn"]]
    for name in names:
        assert (work / name / "best.pt").is_file()
        stream = torch.load(work / name / "best.pt", weights_only=True)["meta"]
        assert stream["model_args"]["features"] == [name]
    state = torch.load(work / "ensemble.pt", weights_only=True)
    assert state["meta"]["model"] == "ensemble"
    assert state["meta"]["model_args"]["weights"] == [1.5, 1.5, 1.5, 1.0, 1.0, 1.0]
    assert (work / "test/metrics.json").is_file()
    assert "ensemble.pt (6 streams: joint ×1.5" in out.getvalue()

    model, _ = load_checkpoint(work / "ensemble.pt")
    assert isinstance(model, Ensemble) and model.weights == [1.5, 1.5, 1.5, 1.0, 1.0, 1.0]
    assert [m.config["features"] for m in model.members] == [[n] for n in names]


def test_streams_are_checked_before_training(tmp_path, capsys):
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    base = ["train", "--data", str(data), "--work-dir", str(tmp_path / "work")]
    assert main([*base, "--config", "penn_action_infogcn", "--streams", "bone,joint:-1"]) == 1
    assert "positive weight" in capsys.readouterr().err
    assert main([*base, "--config", "penn_action_agcn2s", "--streams", "infogcn"]) == 1
    assert "model 'agcn2s' takes no input features" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


# recognition -------------------------------------------------------------------------------------


def test_recognize_says_it_classifies_whole_windows(tmp_path, capsys):
    checkpoint = write_model_checkpoint(
        tmp_path / "infogcn.pt", "infogcn", ["bowl", "jump", "squat", "pitch"], **SMALL
    )
    clip = write_clip(tmp_path / "clip.npz", frames=20)
    assert main(["recognize", str(clip), "--checkpoint", str(checkpoint), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "model infogcn is an offline model: it classifies whole windows" in out
    assert "last 16 frames" in out
