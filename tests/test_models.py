from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_configs import CASES, REFERENCE, recorded_config

from skelgraph.layouts import get_layout
from skelgraph.layouts.graph import parents as bone_parents
from skelgraph.models import (
    STGCN,
    AGCN2s,
    InfoGCN2,
    ModelOutput,
    SkeletonModel,
    available_models,
    create,
    register_model,
)
from skelgraph.models.agcn import bone_features
from skelgraph.models.base import StreamingModel
from skelgraph.models.ensemble import Ensemble
from skelgraph.models.infogcn2 import parameter_breakdown
from skelgraph.nn.ode import rollout

V, K = 17, 5
SMALL = {"channels": 16, "depth": 2, "mlp_ratio": 2.0, "head_channels": 16, "decoder_channels": 8}


def joints(batch: int, frames: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, V, frames, channels, generator=generator)
    x[..., -1] = torch.rand(batch, V, frames, generator=generator)
    return x


def small_infogcn2(**kwargs) -> InfoGCN2:
    torch.manual_seed(0)
    return create("infogcn2", num_classes=K, **{**SMALL, **kwargs})


# registry -------------------------------------------------------------------------------------


def test_registry_lists_and_creates_models():
    assert available_models() == [
        "agcn2s",
        "ensemble",
        "infogcn",
        "infogcn2",
        "posec3d",
        "stgcn",
        "symgnn",
    ]
    model = create("agcn2s", num_classes=3, channels=[8, 8], strides=[1, 2])
    assert isinstance(model, AGCN2s)
    assert model.config["layout"] == "coco17"


def test_registry_unknown_name_lists_known_ones():
    with pytest.raises(
        ValueError,
        match=r"expected one of \['agcn2s', 'ensemble', 'infogcn', 'infogcn2', 'posec3d', "
        r"'stgcn', 'symgnn'\]",
    ):
        create("resnet", num_classes=3)


def test_register_model_rejects_taken_names_and_other_classes():
    with pytest.raises(ValueError, match="already taken"):

        @register_model("stgcn")
        class Other(SkeletonModel):
            pass

    with pytest.raises(TypeError, match="SkeletonModel"):
        register_model("plain")(torch.nn.Linear)


def test_config_rebuilds_the_same_model():
    model = small_infogcn2(layout="penn13", reduce="mean")
    rebuilt = create("infogcn2", **model.config)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 13, 6, 3)
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt(x).logits, model(x).logits)


def test_custom_layout_is_stored_as_dict():
    layout = get_layout("penn13").to_dict() | {"name": "my_penn"}
    model = create("stgcn", num_classes=2, layout=layout, channels=[8], strides=[1])
    assert model.config["layout"] == layout
    assert model.layout.name == "my_penn"


@pytest.mark.parametrize("case", sorted(CASES))
def test_models_record_their_arguments_as_before(case):
    """``config`` (stored in checkpoints as ``model_args``) is what the models recorded when the
    reference was made: the same values, types and order."""
    reference = json.loads(REFERENCE.read_text(encoding="utf-8"))
    assert json.dumps(recorded_config(case)) == json.dumps(reference[case])


def test_config_is_recorded_by_the_outermost_init():
    class Wider(STGCN):
        def __init__(self, num_classes: int, *, width: int = 8, **kwargs) -> None:
            super().__init__(num_classes, channels=(width, width), strides=[1, 2], **kwargs)

    model = Wider(3, width=np.int64(4), dropout=0.5)
    assert model.config == {"num_classes": 3, "width": 4, "dropout": 0.5}
    assert model.backbone.out_channels == 4
    with pytest.raises(TypeError, match=r"\*args cannot be recorded"):

        class Positional(SkeletonModel):
            def __init__(self, *sizes: int) -> None:
                super().__init__()


# InfoGCN++ ------------------------------------------------------------------------------------


def test_infogcn2_default_parameter_count_matches_reference():
    model = create("infogcn2", num_classes=14)
    counts = parameter_breakdown(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert 0.9 * 535_000 <= counts["total"] <= 1.1 * 535_000


def test_infogcn2_output_shapes():
    model = small_infogcn2()
    out = model(joints(2, 7))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 7, K)
    assert out.forecast.shape == (2, 7, 3, V, 2)
    assert out.latents.shape == (2, V, 7, 16)
    assert out.latent_pred.shape == (2, 7, 3, V, 16)
    assert out.video_logits().shape == (2, K)


def test_infogcn2_default_configuration_runs():
    model = create("infogcn2", num_classes=14).eval()
    with torch.inference_mode():
        out = model(joints(1, 64))
    assert out.logits.shape == (1, 64, 14)
    assert out.forecast.shape == (1, 64, 3, V, 2)


def test_infogcn2_rollout_is_the_ode_solution_from_every_frame():
    model = small_infogcn2(num_future=2, step_size=0.5).eval()
    with torch.no_grad():
        out = model(joints(2, 5))
        z = out.latents.transpose(1, 2)  # time relative to each rollout's start
        expected = rollout(model.dynamics, z, 2, 0.5).permute(1, 2, 0, 3, 4)
    torch.testing.assert_close(out.latent_pred, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("features", "window", "solver"),
    [
        (["joint", "bone", "velocity"], 6, "fused_rk4"),
        (["joint", "bone_velocity", "relative2"], None, "rk4"),
    ],
)
def test_infogcn2_step_matches_forward(features, window, solver):
    # 20 frames: beyond the attention window, where the temporal caches wrap around
    model = small_infogcn2(features=features, attention_window=window, ode_solver=solver).eval()
    assert isinstance(model, StreamingModel)
    x = joints(2, 20)
    with torch.no_grad():
        out = model(x)
        state = model.init_state(2)
        steps = [model.step(x[:, :, t], state) for t in range(20)]
    logits = torch.stack([s[0] for s in steps], dim=1)
    forecast = torch.stack([s[1] for s in steps], dim=1)
    assert state.frames == 20 and steps[-1][2] is state
    torch.testing.assert_close(logits, out.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(forecast, out.forecast, atol=1e-4, rtol=1e-4)


def test_infogcn2_step_errors():
    model = small_infogcn2()
    state = model.init_state(2)
    with pytest.raises(ValueError, match=r"x_t: expected shape \[2, 17, 3\], got \[1, 17, 3\]"):
        model.step(torch.zeros(1, V, 3), state)
    with pytest.raises(ValueError, match="batch_size"):
        model.init_state(0)
    with pytest.raises(ValueError, match="attention_window"):
        small_infogcn2(attention_window=0)
    assert not isinstance(create("stgcn", num_classes=K), StreamingModel)


def test_infogcn2_knows_no_absolute_time():
    """With an attention window the outputs depend on the last frames only, not on where the
    clip starts: a prefix changes nothing once its frames are out of reach (2 blocks of window 3
    reach 2 · 2 frames back, the velocity one more)."""
    model = small_infogcn2(features=["joint", "velocity"], attention_window=3).eval()
    x, prefix = joints(1, 12), joints(1, 7, seed=1)
    with torch.no_grad():
        alone = model(x)
        later = model(torch.cat([prefix, x], dim=2))
    torch.testing.assert_close(later.logits[:, 7 + 5 :], alone.logits[:, 5:])
    torch.testing.assert_close(later.forecast[:, 7 + 5 :], alone.forecast[:, 5:])
    assert not torch.allclose(later.logits[:, 7 + 3], alone.logits[:, 3])


def test_infogcn2_torchdiffeq_solver_option_gives_the_same_outputs():
    fused = small_infogcn2().eval()
    odeint = small_infogcn2(ode_solver="rk4").eval()
    x = joints(2, 6)
    with torch.no_grad():
        a, b = fused(x), odeint(x)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.forecast, b.forecast, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("training", [False, True])
def test_infogcn2_per_step_outputs_are_causal(training):
    model = small_infogcn2()
    model.train(training)
    x = joints(2, 10)
    changed = x.clone()
    changed[:, :, 6:] = torch.randn_like(changed[:, :, 6:]) * 5
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a.logits[:, :6], b.logits[:, :6])
    torch.testing.assert_close(a.latents[:, :, :6], b.latents[:, :, :6])
    torch.testing.assert_close(a.forecast[:, :6], b.forecast[:, :6])
    assert not torch.allclose(a.logits[:, 6:], b.logits[:, 6:])


def test_infogcn2_padded_frames_are_ignored():
    model = small_infogcn2().eval()
    x = joints(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    y = torch.tensor([1, 3])
    other = x.clone()
    other[1, :, 5:] = 100.0
    with torch.no_grad():
        a, b = model(x, mask), model(other, mask)
        loss_a, loss_b = model.loss(a, x, y, mask), model.loss(b, other, y, mask)
    for name in ("loss", "cls", "pred", "feat"):
        torch.testing.assert_close(loss_a[name], loss_b[name])
    for reduce in ("last", "mean"):
        torch.testing.assert_close(a.video_logits(reduce), b.video_logits(reduce))
    torch.testing.assert_close(a.video_logits("last")[1], a.logits[1, 4])
    torch.testing.assert_close(a.video_logits("mean")[1], a.logits[1, :5].mean(0))
    # a mask of all real frames is the same as no mask
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.ones_like(mask)).logits, model(x).logits)


def test_infogcn2_loss_terms_and_gradients():
    model = small_infogcn2()
    x, y = joints(3, 6), torch.tensor([0, 2, 4])
    terms = model.loss(model(x), x, y)
    assert set(terms) == {"loss", "cls", "pred", "feat"}
    expected = terms["cls"] + 0.1 * terms["pred"] + 0.1 * terms["feat"]
    torch.testing.assert_close(terms["loss"], expected)
    terms["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_infogcn2_bf16_autocast_matches_fp32():
    # bfloat16 keeps 8 significant bits (relative error 2^-9 per rounding): after the ~30 layers
    # of the default model the outputs agree to about 1-2 % (relative L2 error).
    torch.manual_seed(0)
    model = create("infogcn2", num_classes=14).eval()
    x = joints(4, 16)
    with torch.inference_mode():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x)
    pairs = [
        (full.logits, half.logits),
        (full.forecast, half.forecast),
        (full.latents, half.latents),
        (full.latent_pred, half.latent_pred),
    ]
    for a, b in pairs:
        assert b.shape == a.shape
        assert (a - b.float()).norm() <= 0.05 * a.norm()
    probs_full = full.video_logits().softmax(-1)
    probs_half = half.video_logits().float().softmax(-1)
    assert (probs_full - probs_half).abs().max() < 0.02


def test_infogcn2_input_errors_name_the_problem():
    model = small_infogcn2()
    with pytest.raises(ValueError, match=r"x: expected shape \[B, 17, T, 3\]"):
        model(torch.zeros(1, 13, 4, 3))
    with pytest.raises(ValueError, match="mask: expected a bool tensor"):
        model(joints(1, 4), torch.ones(1, 4))
    with pytest.raises(ValueError, match="reduce"):
        small_infogcn2(reduce="max")
    with pytest.raises(ValueError, match="ode_solver"):
        small_infogcn2(ode_solver="dopri5")


def test_reduce_option_sets_the_default_clip_prediction():
    x = joints(2, 5)
    for reduce in ("last", "mean"):
        model = small_infogcn2(reduce=reduce).eval()
        with torch.no_grad():
            out = model(x)
        expected = out.logits[:, -1] if reduce == "last" else out.logits.mean(dim=1)
        torch.testing.assert_close(out.video_logits(), expected)


def test_infogcn2_computes_only_the_steps_asked_for():
    model = small_infogcn2().eval()
    x = joints(3, 9)
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        full = model(x, mask)
        last = model(x, mask, steps="last")
        some = model(x, mask, steps=[2, 6, 8])
    assert last.logits.shape == (3, 1, K)
    assert last.steps.tolist() == [[8], [4], [8]]
    rows = torch.arange(3).unsqueeze(1)
    torch.testing.assert_close(last.logits, full.logits[rows, last.steps])
    torch.testing.assert_close(last.forecast, full.forecast[rows, last.steps])
    torch.testing.assert_close(last.latent_pred, full.latent_pred[rows, last.steps])
    assert last.latents.shape == (3, V, 1, full.latents.size(-1))
    torch.testing.assert_close(last.latents[:, :, 0], full.latents[rows[:, 0], :, last.steps[:, 0]])
    torch.testing.assert_close(last.video_logits(), full.video_logits("last", mask))
    assert some.forecast.shape == (3, 3, 3, V, 2)
    torch.testing.assert_close(some.logits, full.logits[:, [2, 6, 8]])
    torch.testing.assert_close(some.forecast, full.forecast[:, [2, 6, 8]])
    torch.testing.assert_close(some.latents, full.latents[:, :, [2, 6, 8]])
    for bad in ("first", [3, 3], [9], [[1, 2]]):
        with pytest.raises(ValueError, match="steps"):
            model(x, mask, steps=bad)


@pytest.mark.parametrize("reduce", ["last", "mean"])
def test_clip_logits_equal_the_reduced_forward(reduce):
    model = small_infogcn2(reduce=reduce).eval()
    members = [small_infogcn2(reduce=reduce), small_infogcn2(reduce=reduce)]
    ensemble = Ensemble.from_models(members, mirror=True).eval()
    stgcn = create("stgcn", num_classes=K, layout="coco17").eval()
    x = joints(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 6:] = False
    with torch.no_grad():
        for m in (model, ensemble, stgcn):
            torch.testing.assert_close(m.clip_logits(x, mask), m(x, mask).video_logits(None, mask))


def test_video_logits_of_clip_level_output():
    logits = torch.randn(3, 1, 4)
    out = ModelOutput(logits=logits)
    torch.testing.assert_close(out.video_logits("mean"), logits[:, 0])
    with pytest.raises(ValueError, match="reduce"):
        out.video_logits("max")


# baselines ------------------------------------------------------------------------------------


def test_stgcn_classic_configuration_shapes_and_backward():
    model = create("stgcn", num_classes=K)
    assert [b.out_channels for b in model.backbone.blocks] == [64] * 4 + [128] * 3 + [256] * 3
    assert [b.stride for b in model.backbone.blocks] == [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert all(b.gcn.edge_importance is not None for b in model.backbone.blocks)
    x, y = joints(2, 12), torch.tensor([0, 4])
    out = model(x)
    assert out.logits.shape == (2, 1, K) and out.forecast is None
    terms = model.loss(out, x, y)
    assert set(terms) == {"loss", "cls"}
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_stgcn_pooling_ignores_padded_frames():
    model = create("stgcn", num_classes=K, channels=[8, 8], strides=[1, 2]).eval()
    x = joints(1, 16)
    mask = torch.zeros(1, 16, dtype=torch.bool)
    mask[:, :12] = True
    pooled = model.backbone(x, mask)
    features = model.backbone.data_bn(x.transpose(2, 3).reshape(1, V * 3, 16))
    h = features.view(1, V, 3, 16).permute(0, 2, 3, 1)
    for block in model.backbone.blocks:
        h = block.forward_dense(h)
    torch.testing.assert_close(pooled, h[:, :, :6].mean(dim=(2, 3)))


def test_agcn2s_streams_fusion_and_backward():
    model = create("agcn2s", num_classes=K, channels=[16, 16, 32], strides=[1, 2, 1])
    x, y = joints(2, 8), torch.tensor([1, 2])
    out = model(x)
    assert out.logits.shape == (2, 1, K)
    torch.testing.assert_close(out.logits, out.extras["joint_logits"] + out.extras["bone_logits"])
    terms = model.loss(out, x, y)
    assert set(terms) == {"loss", "cls", "cls_joint", "cls_bone"}
    torch.testing.assert_close(terms["loss"], terms["cls_joint"] + terms["cls_bone"])
    terms["loss"].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_bone_features_subtract_the_parent_and_keep_confidence():
    layout = get_layout("coco17")
    parents = bone_parents(layout)
    assert parents[layout.index("left_wrist")] == layout.index("left_elbow")
    assert parents[layout.index("left_hip")] == -1  # no bone lists it as the child
    x = joints(1, 3)
    bones = bone_features(x, parents)
    wrist, elbow = layout.index("left_wrist"), layout.index("left_elbow")
    torch.testing.assert_close(bones[:, wrist, :, :2], x[:, wrist, :, :2] - x[:, elbow, :, :2])
    torch.testing.assert_close(bones[..., 2], x[..., 2])
    assert not bones[:, layout.index("left_hip"), :, :2].any()
