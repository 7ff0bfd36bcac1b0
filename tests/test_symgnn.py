"""SymGNN: its joint- and part-scale operators, the difference operator, the GRU decoder, the
multi-objective loss, checkpoints, its configurations and the joint + bone streams."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from helpers import synthetic_folder

from skelgraph.cli import main
from skelgraph.data import make_loader
from skelgraph.features import difference
from skelgraph.layouts import Layout, get_layout
from skelgraph.layouts.graph import adjacency, normalize_adjacency, part_graph
from skelgraph.models import Ensemble, SymGNN, create
from skelgraph.models.base import Forecaster
from skelgraph.models.checkpoint import load_checkpoint, make_meta, save_checkpoint
from skelgraph.models.losses import mgda_weights, min_norm_weights, rollout_l1_loss
from skelgraph.nn import (
    ActionalGraphInference,
    JointGraphConv,
    MotionDecoder,
    PartGraphConv,
    PartPooling,
    structural_polynomial,
)
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import load_config
from skelgraph.train.evaluate import evaluate
from skelgraph.train.run import prepare
from skelgraph.train.streams import parse_streams

pytestmark = pytest.mark.usefixtures("one_thread")

V, K = 13, 4
#: a small SymGNN for penn13: two branches, a stem and two JGTC/PGTC pairs fused in between
SMALL = {
    "orders": [0, 1],
    "channels": [8, 8],
    "strides": [1, 2],
    "fusion": [0],
    "kernel_size": 3,
    "structural_order": 2,
    "agim_channels": 8,
    "agim_embed_channels": 4,
    "head_channels": 8,
    "decoder_channels": 8,
    "num_future": 3,
}


def small(**kwargs) -> SymGNN:
    torch.manual_seed(0)
    return create("symgnn", num_classes=K, layout="penn13", **{**SMALL, **kwargs})


def joints(batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, V, frames, 3, generator=generator)
    x[..., -1] = 1.0
    return x


def three_parts() -> Layout:
    """A 5-joint chain with overlapping parts and a joint (4) in none."""
    return Layout.from_dict(
        {
            "name": "chain5_parts",
            "joints": ["a", "b", "c", "d", "e"],
            "bones": [[1, 0], [2, 1], [3, 2], [4, 3]],
            "center": [0],
            "torso": [[0], [1]],
            "pairs": [],
            "parts": {"p": [0, 1], "q": [1, 2], "r": [3]},
        }
    )


# joint-scale operators ---------------------------------------------------------------------------


def test_actional_links_are_non_negative_and_row_normalised_per_link_type():
    torch.manual_seed(0)
    agim = ActionalGraphInference(5, 16, 8, link_types=3, iterations=2)
    x = torch.randn(2, V, 7, 5)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        links = agim(x, mask)
        agim.eval()  # (in training, batch norm's statistics see every frame)
        other = x.clone()
        other[1, :, 4:] = 50.0  # padded frames never count
        torch.testing.assert_close(agim(other, mask), agim(x, mask))
    assert links.shape == (2, 3, V, V)
    assert bool((links >= 0).all())
    torch.testing.assert_close(links.sum(dim=-1), torch.ones(2, 3, V))
    assert not torch.allclose(links[:, 0], links[:, 1])  # one graph per link type
    assert not torch.allclose(links, links.transpose(-1, -2))  # incoming differs from outgoing
    with pytest.raises(ValueError, match="link_types: expected an integer >= 1"):
        ActionalGraphInference(5, link_types=0)


def test_structural_polynomial_equals_the_matrix_powers():
    normalised = adjacency("penn13")
    polynomial = structural_polynomial(normalised, 4)
    for order in range(1, 5):
        torch.testing.assert_close(
            polynomial[order - 1], torch.linalg.matrix_power(normalised, order)
        )
    layer = JointGraphConv(3, 5, "penn13", order=4)
    torch.testing.assert_close(layer.structural_graphs(), polynomial)  # edge weights start at 1
    with pytest.raises(ValueError, match="order: expected an integer >= 1"):
        structural_polynomial(normalised, 0)


def test_joint_graph_conv_is_structural_plus_lambda_actional():
    torch.manual_seed(0)
    layer = JointGraphConv(3, 5, "penn13", order=2, link_types=2, lambda_act=0.3)
    with torch.no_grad():
        layer.edge_weights.uniform_(0.5, 1.5)
        layer.bias.normal_()
    x = torch.randn(2, 3, 4, V)
    actional = torch.rand(2, 2, V, V).softmax(dim=-1)
    weight = layer.conv.weight.view(4, 5, 3)  # W_1, W_2 (structural), then W_act^1, W_act^2
    graphs = layer.structural_graphs()
    expected = sum(
        torch.einsum("ij,bctj,oc->boti", graphs[k], x, weight[k]) for k in range(2)
    ) + 0.3 * sum(
        torch.einsum("bij,bctj,oc->boti", actional[:, c], x, weight[2 + c]) for c in range(2)
    )
    expected = expected + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer.forward_dense(x, actional), expected)
    with pytest.raises(ValueError, match=r"actional: expected the actional graphs of shape"):
        layer.forward_dense(x, None)


# part-scale operators ----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", [get_layout("penn13"), three_parts()], ids=["penn13", "custom"])
def test_joint_to_part_pooling_and_part_to_joint_matching_follow_the_parts(layout):
    pooling = PartPooling(layout)
    parts = list(layout.parts.values())
    assert (pooling.num_joints, pooling.num_parts) == (layout.num_joints, len(parts))
    x = torch.randn(2, 3, 4, layout.num_joints)
    pooled = pooling.joint_to_part(x)
    for p, members in enumerate(parts):
        torch.testing.assert_close(pooled[..., p], x[..., list(members)].mean(dim=-1))
    y = torch.randn(2, 3, 4, len(parts))
    matched = pooling.part_to_joint(y)
    for v in range(layout.num_joints):
        owners = [p for p, members in enumerate(parts) if v in members]
        expected = y[..., owners].mean(dim=-1) if owners else torch.zeros_like(y[..., 0])
        torch.testing.assert_close(matched[..., v], expected)


def test_part_graph_conv_uses_the_normalised_part_graph():
    layout = three_parts()
    layer = PartGraphConv(2, 3, layout)
    _, links = part_graph(layout)
    expected = normalize_adjacency(links + torch.eye(3), "sym")
    torch.testing.assert_close(layer.graph()[0], expected)
    assert links[0, 1] == 1 and links[1, 2] == 1 and links[0, 2] == 0  # shared joint, bone
    x = torch.randn(2, 2, 5, 3)
    out = torch.einsum("ij,bctj,oc->boti", expected, x, layer.conv.weight[:, :, 0, 0])
    torch.testing.assert_close(layer.forward_dense(x), out)


def test_a_layout_without_parts_is_refused_by_name():
    bare = Layout.from_dict({**three_parts().to_dict(), "name": "no_parts", "parts": {}})
    with pytest.raises(ValueError, match=r"layout 'no_parts': parts: expected at least one body"):
        create("symgnn", num_classes=2, layout=bare, **SMALL)
    model = create("symgnn", num_classes=2, layout=three_parts(), **SMALL)  # any parts will do
    out = model(torch.randn(2, 5, 6, 3))
    assert out.logits.shape == (2, 1, 2) and out.forecast.shape == (2, 1, 3, 5, 2)


# the difference operator -------------------------------------------------------------------------


def test_difference_operator_is_exact_on_a_polynomial_trajectory():
    t = torch.arange(9, dtype=torch.float64)
    a, b, c = 0.5, -2.0, 3.0
    x = (a * t**2 + b * t + c).view(1, 1, -1, 1).expand(2, 3, -1, 2)
    torch.testing.assert_close(difference(x, 0), x)
    first = difference(x, 1)[0, 0, :, 0]
    torch.testing.assert_close(first[1:], a * (2 * t[1:] - 1) + b)
    assert first[0] == 0
    second = difference(x, 2)[0, 0, :, 0]
    torch.testing.assert_close(second[2:], torch.full((7,), 2 * a, dtype=torch.float64))
    assert bool((second[:2] == 0).all())
    assert bool((difference(x, 3) == 0).all())
    with pytest.raises(ValueError, match="order: expected an integer >= 0"):
        difference(x, -1)


# the model and its heads -------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 7])
def test_gru_decoder_predicts_every_frame_of_the_horizon(steps):
    torch.manual_seed(0)
    decoder = MotionDecoder(2, K, 16, "penn13", order=2)
    state, pose = torch.randn(3, V, 16), torch.randn(3, V, 2)
    label = torch.rand(3, K).softmax(dim=-1)
    actional = torch.rand(3, 1, V, V).softmax(dim=-1)
    out = decoder(
        state, pose, torch.zeros_like(pose), torch.zeros_like(pose), label, actional, steps
    )
    assert out.shape == (3, steps, V, 2)
    # the first frame is the last pose plus the displacement its state gives
    assert not torch.allclose(out[:, 0], pose)


def test_outputs_in_training_and_evaluation():
    model = small()
    x = joints(3, 12)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 8:] = False
    mask[2, 2:] = False  # fewer real frames than num_future: the first frame is observed
    out = model(x, mask)
    assert out.logits.shape == (3, 1, K) and out.forecast.shape == (3, 1, 3, V, 2)
    assert out.steps.tolist() == [[8], [4], [0]]  # last real frame - num_future
    assert out.extras["shared"].shape == (3, V, 16)
    model.eval()
    with torch.no_grad():
        out = model(x, mask)
        assert out.forecast.shape == (3, 2, 3, V, 2)
        assert out.steps.tolist() == [[8, 11], [4, 7], [0, 1]]
        torch.testing.assert_close(out.video_logits(), model.clip_logits(x, mask))
        for horizon in (1, 13):
            future = model.forecast_future(x, mask, horizon)
            assert future.shape == (3, horizon, V, 2)
        torch.testing.assert_close(model.forecast_future(x, mask, 3), out.forecast[:, 1])
    assert isinstance(model, Forecaster)
    with pytest.raises(ValueError, match="horizon: expected an integer >= 1"):
        model.forecast_future(x, mask, 0)
    with pytest.raises(ValueError, match=r"x: expected shape \[B, 13, T, 3\]"):
        model(torch.zeros(1, 13, 5, 4))


@pytest.mark.parametrize("training", [True, False])
def test_the_forecast_sees_only_the_observed_frames(training):
    model = small()
    model.train(training)
    x = joints(2, 12)
    later = x.clone()
    later[:, :, 9:] = torch.randn_like(later[:, :, 9:]) * 5  # frames after o = 11 - 3 = 8
    with torch.no_grad():
        a, b = model(x), model(later)
    torch.testing.assert_close(a.forecast[:, 0], b.forecast[:, 0])
    if training:  # recognition from the observed frames too
        torch.testing.assert_close(a.logits, b.logits)
    else:  # recognition and the true future from every real frame
        assert not torch.allclose(a.logits, b.logits)
        assert not torch.allclose(a.forecast[:, 1], b.forecast[:, 1])


def test_padded_frames_never_count():
    model = small().eval()
    x = joints(2, 10)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    other = x.clone()
    other[1, :, 6:] = 100.0
    y = torch.tensor([0, 3])
    with torch.no_grad():
        a, b = model(x, mask), model(other, mask)
        torch.testing.assert_close(a.logits, b.logits)
        torch.testing.assert_close(a.forecast, b.forecast)
        torch.testing.assert_close(model.loss(a, x, y, mask), model.loss(b, other, y, mask))
        torch.testing.assert_close(
            model.forecast_future(x, mask, 4), model.forecast_future(other, mask, 4)
        )


# the objective -----------------------------------------------------------------------------------


def test_mgda_picks_the_min_norm_combination_of_two_gradients():
    g1, g2 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    weights = min_norm_weights(g1, g2)
    torch.testing.assert_close(weights, torch.tensor([0.2, 0.8]))  # (g2 - g1)·g2 / |g1 - g2|²
    grid = torch.linspace(0, 1, 10001)
    norms = (grid[:, None] * g1 + (1 - grid[:, None]) * g2).norm(dim=1)
    assert abs(grid[norms.argmin()].item() - weights[0].item()) < 1e-3
    # the smaller of two parallel gradients is the min-norm point; equal gradients split evenly
    torch.testing.assert_close(min_norm_weights(g2, 3 * g2), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(min_norm_weights(g1, g1), torch.tensor([0.5, 0.5]))
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        weights = min_norm_weights(*torch.randn(2, 6, generator=generator))
        assert bool((weights >= 0).all()) and abs(weights.sum().item() - 1.0) < 1e-6
    # through autograd: gradients of two losses with respect to a shared representation
    shared = torch.tensor([1.0, 1.0], requires_grad=True)
    losses = [(g1 * shared).sum(), (g2 * shared).sum()]  # 2 and 1, gradients g1 and g2
    torch.testing.assert_close(mgda_weights(losses, shared, "none"), torch.tensor([0.2, 0.8]))
    # normalised: by the norms two gradients weigh the same; by the losses g1 / 2 = (1, 0) and
    # g2 / 1 = (0, 1); by both, (1/2, 0) and (0, 1): the larger loss gets the larger weight
    torch.testing.assert_close(mgda_weights(losses, shared, "l2"), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(mgda_weights(losses, shared, "loss"), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(mgda_weights(losses, shared, "loss+"), torch.tensor([0.8, 0.2]))
    with pytest.raises(ValueError, match="normalization: expected one of"):
        mgda_weights(losses, shared, "max")


def test_loss_terms_task_weights_and_gradients():
    model = small()
    x, y = joints(3, 12), torch.tensor([0, 1, 3])
    terms = model.loss(model(x), x, y)
    assert set(terms) == {"loss", "cls", "pred", "w_cls", "w_pred"}
    w = torch.stack([terms["w_cls"], terms["w_pred"]])
    assert bool((w >= 0).all()) and abs(w.sum().item() - 1.0) < 1e-6
    torch.testing.assert_close(terms["loss"], w[0] * terms["cls"] + w[1] * terms["pred"])
    torch.testing.assert_close(model.task_weights, w)  # kept for losses without gradients
    terms["loss"].backward()
    for name in (
        "agim.embed_in.weight",
        "branches.1.part_blocks.0.gcn.edge_weights",
        "classifier.weight",
        "decoder.cell.weight_ih",
        "prediction.lin1.weight",
    ):
        assert model.get_parameter(name).grad is not None, name
    # the prediction loss trains neither the classifier nor the recognition MLP
    model.zero_grad()
    model.loss(model(x), x, y)["pred"].backward()
    assert model.classifier.weight.grad is None or not model.classifier.weight.grad.any()

    fixed = small(task_weighting="fixed", recognition_weight=0.8)
    terms = fixed.loss(fixed(x), x, y)
    torch.testing.assert_close(terms["loss"], 0.8 * terms["cls"] + 0.2 * terms["pred"])
    for name, value, message in [
        ("task_weighting", "pareto", "task_weighting: expected one of"),
        ("recognition_weight", 1.5, r"recognition_weight: expected a value in \[0, 1\]"),
        ("orders", [0, 0], "orders: expected distinct"),
        ("fusion", [1], r"fusion: expected block indices in \[0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            small(**{name: value})


def test_mgda_weights_survive_torch_compile():
    """The heads run eagerly, so the losses' gradients with respect to the shared representation
    exist in a compiled model too."""
    model = small()
    x, y = joints(3, 12), torch.tensor([0, 1, 3])
    eager = model.loss(model(x), x, y)
    model.compile(backend="aot_eager")
    compiled = model.loss(model(x), x, y)
    for name in ("w_cls", "loss"):
        torch.testing.assert_close(compiled[name], eager[name])
    shared = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match=r"losses\[1\] does not depend on shared"):
        mgda_weights([shared.sum(), torch.ones((), requires_grad=True) * 2], shared)


def test_attention_maps_name_the_actional_and_structural_graphs():
    model = small(link_types=2).eval()
    with torch.no_grad():
        maps = model.attention(joints(2, 9))
    torch.testing.assert_close(maps.attention["agim"].sum(dim=-1), torch.ones(2, 1, 2, V))
    graphs = maps.graphs["branches.0.stem.gcn"]
    assert graphs.shape == (2, 1, 4, V, V)  # two structural graphs, two actional ones
    torch.testing.assert_close(graphs[:, 0, 2:], 0.5 * maps.attention["agim"][:, 0])
    assert "decoder.graph" in maps.graphs and maps.topology["decoder.graph"].shape == (2, V, V)
    torch.testing.assert_close(maps.output.logits, model(joints(2, 9)).logits)


def test_prediction_loss_is_the_l1_error_of_visible_real_targets():
    x = joints(1, 6)
    x[0, 2, 4, -1] = 0.0  # an invisible target joint
    steps = torch.tensor([[2]])
    target = x[0, :, 3:6, :2].transpose(0, 1)  # frames 3, 4, 5
    forecast = (target + 0.5).unsqueeze(0).unsqueeze(0)  # [1, 1, 3, V, 2]
    forecast[0, 0, 1, 2] = 100.0  # the invisible joint's error does not count
    torch.testing.assert_close(rollout_l1_loss(forecast, x, steps), torch.tensor(0.5))
    mask = torch.tensor([[True] * 5 + [False]])  # frame 5 padded
    forecast[0, 0, 2] = 9.0
    torch.testing.assert_close(rollout_l1_loss(forecast, x, steps, mask), torch.tensor(0.5))


# checkpoints, configurations, streams ------------------------------------------------------------


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = small(features=["bone"], lambda_act=0.25, link_types=2).eval()
    meta = make_meta(
        model="symgnn",
        model_args=model.config,
        classes=["a", "b", "c", "d"],
        layout="penn13",
        in_channels=3,
        window=12,
        preprocess=PreprocessConfig().to_dict(),
    )
    save_checkpoint(tmp_path / "model.pt", model, meta)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert state["meta"]["model_args"]["lambda_act"] == 0.25
    assert "task_weights" not in state["state_dict"]
    loaded, loaded_meta = load_checkpoint(tmp_path / "model.pt")
    assert loaded_meta["model"] == "symgnn" and not loaded.training
    x = joints(2, 9)
    with torch.no_grad():
        a, b = loaded(x), model(x)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.forecast, b.forecast)
        assert torch.equal(loaded.forecast_future(x, None, 5), model.forecast_future(x, None, 5))


def test_configurations_load():
    paper = load_config("symgnn_paper")
    model = create(paper.model.name, num_classes=60, layout="ntu25", **paper.model.args)
    branches = model.branches
    assert len(branches) == 3 and model.orders == (0, 1, 2)
    assert [b.out_channels for b in branches[0].joint_blocks] == [64] * 3 + [128] * 3 + [256] * 3
    assert [b.stride for b in branches[0].part_blocks] == [1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert branches[0].fusion == (2, 5) and model.num_future == 10
    assert paper.data.sampling == "window"  # a predicted step is a native frame
    penn = load_config("penn_action_symgnn")
    assert penn.data.sampling == "window" and penn.data.window > penn.model.args["num_future"]
    create(penn.model.name, num_classes=15, layout="penn13", **penn.model.args)
    assert [s.name for s in parse_streams(["symgnn"])] == ["joint", "bone"]


def test_joint_and_bone_streams_train_fuse_evaluate_and_forecast(tmp_path):
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    work = tmp_path / "work"
    overrides = [
        "model.args.orders=[0, 1]",
        "model.args.channels=[8, 8]",
        "model.args.strides=[1, 2]",
        "model.args.fusion=[0]",
        "model.args.agim_channels=8",
        "model.args.head_channels=8",
        "model.args.decoder_channels=8",
        "model.args.num_future=2",
        "epochs=1",
        "batch_size=4",
        "data.window=8",
        "precision=fp32",
        "optim.warmup_epochs=0",
    ]
    args = ["--config", "penn_action_symgnn", "--data", str(data), "--work-dir", str(work)]
    options = ["--cache-dir", str(tmp_path / "cache"), "--quiet", "--no-early"]
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["train", *args, *options, "--streams", "symgnn", *overrides])
    assert rc == 0
    log = (work / "joint" / "log.jsonl").read_text().splitlines()
    assert '"w_cls"' in log[0] and '"forecast_mse"' in log[0]  # validation measures forecasts
    model, _ = load_checkpoint(work / "ensemble.pt")
    assert isinstance(model, Ensemble)
    assert [m.config["features"] for m in model.members] == [["joint"], ["bone"]]
    x = joints(2, 8)
    with torch.no_grad():
        out = model(x)
        first = model.members[0](x)
        torch.testing.assert_close(out.forecast, first.forecast)
        assert torch.equal(out.steps, first.steps)
        forecasts = [m.forecast_future(x, None, 4) for m in model.members]
        weights = model.weights or [1.0] * len(forecasts)
        mean = sum(w * f for w, f in zip(weights, forecasts, strict=True)) / sum(weights)
        torch.testing.assert_close(model.forecast_future(x, None, 4), mean)
    metrics = (work / "test" / "metrics.json").read_text()
    assert '"forecast_mse"' in metrics


# training on Penn Action -------------------------------------------------------------------------


def test_overfits_32_penn_action_clips(penn32, tmp_path):
    config = load_config(
        "penn_action_symgnn",
        [
            "model.args.orders=[0, 1]",
            "model.args.channels=[16, 16]",
            "model.args.strides=[1, 2]",
            "model.args.fusion=[0]",
            "model.args.dropout=0",
            "model.args.num_future=4",
            "epochs=20",
            "batch_size=16",
            "data.window=24",
            "data.stride=24",
            "data.val_fraction=0",
            "data.rotation=false",
            "data.scale=false",
            "data.mirror=false",
            "optim.lr=0.01",
            "optim.weight_decay=0",
            "optim.warmup_epochs=1",
            "optim.lr_steps=[16]",
            "precision=fp32",
        ],
    )
    trainer, data = prepare(config, penn32, tmp_path, cache_dir=tmp_path / "cache", progress=False)
    history = trainer.fit()["history"]
    first, last = history[0]["train"], history[-1]["train"]
    assert {"cls", "pred", "w_cls", "w_pred"} <= set(first)
    assert last["cls"] < 0.5 * first["cls"] and last["pred"] < first["pred"]
    metrics = evaluate(trainer.module, make_loader(data.base, 16, shuffle=False))
    assert metrics["num_samples"] == 32
    assert metrics["top1"] > 0.9
