from __future__ import annotations

import numpy as np
import pytest
import torch

from skelgraph.layouts.graph import adjacency
from skelgraph.models import create
from skelgraph.models.ensemble import Ensemble
from skelgraph.nn.ode import ODEDynamics, rk4_rollout
from skelgraph.nn.sagc import SAGC
from skelgraph.nn.temporal import CausalTemporalAttention
from skelgraph.streaming import (
    EnsemblePlan,
    FramePlan,
    RK4Frame,
    SAGCFrame,
    TemporalFrame,
    build_plan,
)

SMALL = {"channels": 16, "depth": 2, "head_channels": 16, "decoder_channels": 8}
V = 17


@pytest.mark.parametrize(
    ("c_in", "c_out", "heads", "residual", "norm", "activation"),
    [
        (16, 16, 3, True, "layer", True),  # identity residual, several heads
        (16, 24, 1, True, "layer", True),  # residual projection, one head
        (24, 16, 2, True, None, False),
        (16, 16, 1, False, None, False),  # linear in its values, as the dynamics' last layer
    ],
)
def test_sagc_frame_equals_the_layer(c_in, c_out, heads, residual, norm, activation) -> None:
    torch.manual_seed(0)
    layer = SAGC(c_in, c_out, heads, adjacency=adjacency("coco17"), residual=residual,
                 norm=norm, activation=activation, attention_channels=4).eval()  # fmt: skip
    frame = SAGCFrame(layer)
    x = torch.randn(3, V, c_in)
    with torch.no_grad():
        expected = layer.forward_dense(x.unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(frame(x), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(frame(x[1]), expected[1], atol=1e-5, rtol=0)
    out = torch.empty(3, V, c_out)
    frame(x, out=out)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    if not residual:  # a constant input shift folded into the product's bias
        shift = torch.randn(c_in)
        with torch.no_grad():
            shifted = layer.forward_dense((x + shift).unsqueeze(2)).squeeze(2)
        torch.testing.assert_close(frame(x, frame.shifted_bias(shift)), shifted, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="num_nodes set"):
        SAGCFrame(SAGC(c_in, c_out, heads))


def test_temporal_frame_equals_the_step_on_growing_caches() -> None:
    torch.manual_seed(0)
    layer = CausalTemporalAttention(16, heads=4).eval()
    frame = TemporalFrame(layer)
    reference, cache = layer.init_cache(V, max_len=4), layer.init_cache(V, max_len=4)
    x = torch.randn(V, 20, 16)
    with torch.no_grad():
        for t in range(20):  # the buffers double twice
            expected, _ = layer.step(x[:, t], reference)
            torch.testing.assert_close(frame(x[:, t], cache), expected, atol=1e-5, rtol=0)
    assert cache.length == 20 and cache.capacity == 32


def test_temporal_frame_ring_equals_the_step() -> None:
    torch.manual_seed(0)
    W = 3
    layer = CausalTemporalAttention(16, heads=4, window=W).eval()
    frame = TemporalFrame(layer)
    biases = frame.ring_bias(V)
    assert biases.shape == (W, V * 4, 1, W)
    reference, cache = layer.init_cache(V), layer.init_cache(V)
    x = torch.randn(V, 10, 16)
    with torch.no_grad():
        for t in range(10):  # the ring wraps around
            expected, _ = layer.step(x[:, t], reference)
            slot, held = cache.claim()
            bias = biases[slot].view(-1, 1, W).clone()
            bias[..., held:] = float("-inf")  # slots not written yet
            out = frame.ring(x[:, t], cache.key, cache.value, bias, torch.tensor([slot]))
            torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(cache.key, reference.key)


@pytest.mark.parametrize(("depth", "step_size"), [(1, 1.0), (2, 0.5)])
def test_rk4_frame_equals_the_rollout(depth: int, step_size: float) -> None:
    torch.manual_seed(0)
    dynamics = ODEDynamics(16, V, adjacency("coco17"), depth=depth).eval()
    frame = RK4Frame(dynamics, 3, step_size)
    z = torch.randn(2, V, 16)
    with torch.no_grad():
        expected = rk4_rollout(dynamics, z, 3, step_size)
    torch.testing.assert_close(frame(z), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(frame(z[0]), expected[:, 0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="steps"):
        RK4Frame(dynamics, 0)


def test_build_plan_picks_the_frozen_form() -> None:
    torch.manual_seed(0)
    model = create("infogcn2", num_classes=4, attention_window=8, **SMALL).eval()
    plan = build_plan(model)
    assert isinstance(plan, FramePlan) and plan.model is model
    euler = create("infogcn2", num_classes=4, ode_solver="euler", **SMALL).eval()
    assert build_plan(euler) is euler  # no frozen form: the model steps itself
    with pytest.raises(ValueError, match="ode_solver"):
        FramePlan(euler)
    ensemble = Ensemble.from_models([model, euler], mirror=True).eval()
    ensemble_plan = build_plan(ensemble)
    assert isinstance(ensemble_plan, EnsemblePlan) and ensemble_plan.model is ensemble
    assert isinstance(ensemble_plan.members[0], FramePlan)
    assert ensemble_plan.members[1] is ensemble.members[1]
    with pytest.raises(ValueError, match=r"expected one-stream states .* got batch sizes \[2\]"):
        plan.step(torch.zeros(1, V, 3), plan.init_state(2))
    with pytest.raises(ValueError, match=r"x_t: expected shape \[1, 17, 3\]"):
        plan.step(torch.zeros(1, V, 2), plan.init_state(1))


@pytest.mark.slow
def test_ensemble_plan_equals_the_ensemble() -> None:
    """An ensemble's plan (mirror views, its members' frame plans) steps one stream and several
    streams as the ensemble's reference step does."""
    torch.manual_seed(0)
    members = [
        create("infogcn2", num_classes=4, attention_window=4, **SMALL),
        create("infogcn2", num_classes=4, features=["joint", "velocity"], **SMALL),
    ]
    ensemble = Ensemble.from_models(members, mirror=True).eval()
    plan = build_plan(ensemble)
    x = torch.randn(2, V, 8, 3)
    reference = [ensemble.init_state(1) for _ in range(2)]
    single, streams = plan.init_state(1), [plan.init_state(1) for _ in range(2)]
    with torch.inference_mode():
        for t in range(8):
            expected = [ensemble.step(x[b : b + 1, :, t], reference[b]) for b in range(2)]
            logits, forecast, single = plan.step(x[:1, :, t], single)
            torch.testing.assert_close(logits, expected[0][0], atol=1e-5, rtol=0)
            torch.testing.assert_close(forecast, expected[0][1], atol=1e-5, rtol=0)
            logits, forecast, streams = plan.step_streams(x[:, :, t], streams)
            torch.testing.assert_close(logits, torch.cat([e[0] for e in expected]), atol=1e-5,
                                       rtol=0)  # fmt: skip
            torch.testing.assert_close(forecast, torch.cat([e[1] for e in expected]), atol=1e-5,
                                       rtol=0)  # fmt: skip


@pytest.mark.parametrize("window", [8, None])
def test_inference_step_equals_the_reference_step(window: int | None) -> None:
    """A frame plan's step (frozen single-stream form, traced with a window) gives the reference
    step's logits and forecasts, across the window boundary; a plan rebuilt after a weight change
    sees it."""
    torch.manual_seed(0)
    model = create(
        "infogcn2",
        num_classes=4,
        features=["joint", "bone", "velocity"],
        attention_window=window,
        sagc_heads=2,
        **SMALL,
    ).eval()
    x = torch.randn(1, 17, 20, 3)
    plan = build_plan(model)
    fast, reference = model.init_state(1), model.init_state(1)
    with torch.inference_mode():
        for t in range(20):
            if t == 12:  # in place, as an optimiser step or load_state_dict does
                model.head[1].lin.weight.mul_(0.5)
                plan = build_plan(model)
            logits, forecast, fast = plan.step(x[:, :, t], fast)
            with torch.enable_grad():
                expected_logits, expected_forecast, reference = model.step(x[:, :, t], reference)
            torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
            torch.testing.assert_close(forecast, expected_forecast, rtol=0, atol=1e-5)
    assert fast.frames == reference.frames == 20
    traced = plan.traced
    assert list(traced) == ([(1, False)] if window is not None else []) and all(traced.values())


@pytest.mark.parametrize(
    ("window", "features", "heads"),
    [
        (8, ["joint", "bone", "velocity"], 2),
        (8, ["joint"], 1),
        (None, ["joint", "velocity"], 3),
        (8, ["joint", "distance"], 1),
    ],
)
def test_step_streams_equals_each_stream_alone(
    window: int | None, features: list[str], heads: int
) -> None:
    """A frame plan's step_streams advances streams at different frames (across the window
    boundary) together, any subset of them per call, as each one's own reference step would."""
    torch.manual_seed(0)
    model = create(
        "infogcn2",
        num_classes=4,
        features=features,
        attention_window=window,
        sagc_heads=heads,
        head_heads=heads,
        **SMALL,
    ).eval()
    x = torch.randn(3, 17, 30, 3)
    plan = build_plan(model)
    starts = [0, 5, 11]  # frames each stream saw alone before
    fast, reference = (
        [model.init_state(1) for _ in range(3)],
        [model.init_state(1) for _ in range(3)],
    )
    with torch.inference_mode():
        for b, start in enumerate(starts):
            for t in range(start):
                plan.step(x[b : b + 1, :, t], fast[b])
                with torch.enable_grad():
                    model.step(x[b : b + 1, :, t], reference[b])
        seen = list(starts)
        for t in range(14):
            streams = [2, 0] if t % 3 == 0 else [0, 1, 2]
            frames = torch.stack([x[b, :, seen[b]] for b in streams])
            logits, forecast, states = plan.step_streams(frames, [fast[b] for b in streams])
            assert states == [fast[b] for b in streams]
            for j, b in enumerate(streams):
                with torch.enable_grad():
                    expected_logits, expected_forecast, _ = model.step(
                        frames[j : j + 1], reference[b]
                    )
                torch.testing.assert_close(logits[j : j + 1], expected_logits, rtol=0, atol=1e-5)
                torch.testing.assert_close(
                    forecast[j : j + 1], expected_forecast, rtol=0, atol=1e-5
                )
                seen[b] += 1
    assert [s.frames for s in fast] == seen == [r.frames for r in reference]
    assert max(seen) > 8  # past the window
    with pytest.raises(ValueError, match=r"x_t: expected shape \[2, 17, 3\]"):
        plan.step_streams(torch.zeros(3, 17, 3), fast[:2])
    with pytest.raises(ValueError, match=r"expected one-stream states .* got batch sizes \[2\]"):
        plan.step_streams(torch.zeros(1, 17, 3), [model.init_state(2)])


def test_step_streams_any_company_of_streams() -> None:
    """Random companies of four streams (any subset, in any order, streams restarting) stepped
    together give each stream's reference step: the rings move into shared slabs and back, and
    rows of a slab not stepped keep their rings."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = create(
        "infogcn2", num_classes=4, features=["joint", "velocity"], attention_window=8, **SMALL
    ).eval()
    plan = build_plan(model)
    fast = [model.init_state(1) for _ in range(4)]
    reference = [model.init_state(1) for _ in range(4)]
    with torch.inference_mode():
        for _ in range(300):
            if rng.random() < 0.05:  # a stream starts over
                i = int(rng.integers(4))
                fast[i], reference[i] = model.init_state(1), model.init_state(1)
            chosen = rng.permutation(4)[: rng.integers(1, 5)].tolist()
            x = torch.randn(len(chosen), 17, 3)
            logits, forecast, _ = plan.step_streams(x, [fast[i] for i in chosen])
            for j, i in enumerate(chosen):
                with torch.enable_grad():
                    expected_logits, expected_forecast, _ = model.step(x[j : j + 1], reference[i])
                torch.testing.assert_close(logits[j : j + 1], expected_logits, rtol=0, atol=1e-5)
                torch.testing.assert_close(
                    forecast[j : j + 1], expected_forecast, rtol=0, atol=1e-5
                )
    assert any(variant[1] for variant in plan.traced)  # rows left unchanged


def test_functional_step_equals_the_plan_for_streams_at_their_own_frames() -> None:
    """The pure form of a frame (the rings in and out as tensors, one position per stream) gives
    the plan's outputs for two streams three frames apart, beyond the window, and leaves the
    given rings unchanged."""
    torch.manual_seed(0)
    model = create(
        "infogcn2", num_classes=4, features=["joint", "velocity"], attention_window=4, **SMALL
    ).eval()
    plan = build_plan(model)
    x = torch.randn(2, 12, V, 3)
    states = [plan.init_state(1) for _ in range(2)]
    rings = plan.functional_caches(2)
    assert [tuple(r.shape) for r in rings] == [(2, V, 4, 4, 4)] * 4  # key, value per layer
    with torch.inference_mode():
        for t in range(12):
            position = torch.tensor([t, max(t - 3, 0)])
            frames = torch.stack([x[0, t], x[1, position[1]]])
            previous = torch.stack([x[0, max(t - 1, 0)], x[1, max(int(position[1]) - 1, 0)]])
            if t < 3:  # the second stream starts three frames late
                frames, previous, position = frames[:1], previous[:1], position[:1]
                expected = plan.step(frames, states[0])[:2]
                given = [r[:1].clone() for r in rings]
                logits, forecast, new = plan.functional_step(frames, previous, position, given)
                assert all(torch.equal(a, b[:1]) for a, b in zip(given, rings, strict=True))
                rings = [torch.cat([n, r[1:]]) for n, r in zip(new, rings, strict=True)]
            else:
                expected = plan.step_streams(frames, states)[:2]
                logits, forecast, rings = plan.functional_step(frames, previous, position, rings)
            torch.testing.assert_close(logits, expected[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(forecast, expected[1], atol=1e-5, rtol=0)


def test_functional_step_of_an_ensemble_and_what_has_none() -> None:
    torch.manual_seed(0)
    members = [
        create("infogcn2", num_classes=4, attention_window=4, **SMALL),
        create("infogcn2", num_classes=4, features=["joint", "velocity"], attention_window=4,
               **SMALL),
    ]  # fmt: skip
    ensemble = Ensemble.from_models(members, mirror=True).eval()
    plan = build_plan(ensemble)
    rings = plan.functional_caches(1)
    assert len(rings) == 2 * 2 * 4  # members × views × (key, value per layer)
    state = ensemble.init_state(1)
    x = torch.randn(6, 1, V, 3)
    with torch.inference_mode():
        for t in range(6):
            expected = ensemble.step(x[t], state)[:2]
            position = torch.tensor([t])
            logits, forecast, rings = plan.functional_step(x[t], x[max(t - 1, 0)], position, rings)
            torch.testing.assert_close(logits, expected[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(forecast, expected[1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="expected 16 tensors"):
        plan.functional_step(x[0], x[0], torch.tensor([0]), rings[:4])
    growing = build_plan(create("infogcn2", num_classes=4, **SMALL).eval())
    with pytest.raises(ValueError, match="attention_window"):
        growing.functional_caches(1)
    euler = create("infogcn2", num_classes=4, ode_solver="euler", attention_window=4, **SMALL)
    mixed = build_plan(Ensemble.from_models([members[0], euler]).eval())
    with pytest.raises(ValueError, match=r"members\[1\]: .* InfoGCN2"):
        mixed.functional_caches(1)
