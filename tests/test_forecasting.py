"""Forecasters: the zero- and constant-velocity baselines, InfoGCN++'s forecast_future (both
rollouts) and an ensemble's."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_INFOGCN2

from skelgraph.models import (
    ConstantVelocity,
    Ensemble,
    Forecaster,
    InfoGCN2,
    ZeroVelocity,
    create,
)
from skelgraph.models.forecasting import BASELINES, last_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def moving_clip(B: int = 2, V: int = 13, T: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Joints on straight lines at constant velocities, confidence 1: ``x`` (B, V, T, 3) and the
    velocity (B, V, 2)."""
    generator = torch.Generator().manual_seed(0)
    start = torch.randn(B, V, 1, 2, generator=generator)
    velocity = torch.randn(B, V, 2, generator=generator) * 0.1
    t = torch.arange(T, dtype=torch.float32).view(1, 1, T, 1)
    coords = start + t * velocity.unsqueeze(2)
    return torch.cat([coords, torch.ones(B, V, T, 1)], dim=-1), velocity


def test_the_baselines_are_forecasters_by_name():
    assert set(BASELINES) == {"zero-velocity", "constant-velocity"}
    for cls in BASELINES.values():
        assert isinstance(cls(), Forecaster)
    assert isinstance(create("infogcn2", num_classes=3, layout="penn13"), Forecaster)
    assert not isinstance(create("stgcn", num_classes=3, layout="penn13"), Forecaster)


def test_baselines_are_exact_on_still_and_linearly_moving_poses():
    x, velocity = moving_clip()
    horizon = 4
    future = torch.arange(6, 6 + horizon, dtype=torch.float32).view(1, horizon, 1, 1)
    truth = x[:, :, :1, :2].transpose(1, 2) + future * velocity.unsqueeze(1)  # [B, H, V, 2]
    torch.testing.assert_close(ConstantVelocity().forecast_future(x, None, horizon), truth)
    still = x[:, :, :1].expand(-1, -1, 6, -1)  # the first pose held
    expected = still[:, :, 0, :2].unsqueeze(1).expand(-1, horizon, -1, -1)
    for baseline in (ZeroVelocity(), ConstantVelocity()):
        assert torch.equal(baseline.forecast_future(still, None, horizon), expected)
    # zero velocity repeats the last pose however the joints moved
    last = x[:, :, -1, :2].unsqueeze(1).expand(-1, horizon, -1, -1)
    assert torch.equal(ZeroVelocity().forecast_future(x, None, horizon), last)


def test_baselines_extrapolate_from_each_samples_last_real_frame():
    x, velocity = moving_clip(T=8)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    padded = x.clone()
    padded[0, :, 5:] = 99.0  # padding must never be read
    out = ConstantVelocity().forecast_future(padded, mask, 3)
    t = torch.arange(1, 4, dtype=torch.float32).view(3, 1, 1)
    torch.testing.assert_close(out[0], x[0, :, 4, :2] + t * velocity[0])
    torch.testing.assert_close(out[1], x[1, :, 7, :2] + t * velocity[1])
    # one real frame: no velocity to continue, the pose holds
    single = torch.zeros(2, 8, dtype=torch.bool)
    single[:, 0] = True
    held = ConstantVelocity().forecast_future(padded, single, 2)
    assert torch.equal(held, x[:, :, :1, :2].transpose(1, 2).expand(-1, 2, -1, -1))
    frames = last_frames(padded, mask, 3)
    assert torch.equal(frames[0], x[0, :, 2:5].transpose(0, 1))


@pytest.mark.parametrize("horizon", [0, -1, 2.5, True])
def test_a_bad_horizon_is_refused(horizon):
    x, _ = moving_clip()
    with pytest.raises(ValueError, match=r"ZeroVelocity\.forecast_future: horizon: expected"):
        ZeroVelocity().forecast_future(x, None, horizon)


@pytest.fixture
def infogcn2() -> InfoGCN2:
    torch.manual_seed(0)
    return create("infogcn2", num_classes=3, layout="penn13", **TINY_INFOGCN2).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(3, 13, 9, 3, generator=torch.Generator().manual_seed(1))
    x[..., -1] = 1.0
    mask = torch.ones(3, 9, dtype=torch.bool)
    mask[1, 6:] = False
    mask[2, 4:] = False
    return x, mask


@pytest.mark.parametrize("rollout", ["ode", "autoregressive"])
@pytest.mark.parametrize("horizon", [1, 3, 7, 12])
def test_infogcn2_forecasts_any_horizon(infogcn2, horizon, rollout):
    x, mask = padded_batch()
    with torch.no_grad():
        out = infogcn2.forecast_future(x, mask, horizon, rollout=rollout)
        trained = infogcn2(x, mask, steps="last").forecast[:, 0]  # [B, N, V, 2]
    assert out.shape == (3, horizon, 13, 2) and torch.isfinite(out).all()
    n = min(horizon, infogcn2.num_future)
    # within the trained steps both rollouts are the model's own forecast at the last real frame
    torch.testing.assert_close(out[:, :n], trained[:, :n], atol=1e-5, rtol=1e-5)


def test_infogcn2_ode_rollout_continues_the_trained_one(infogcn2):
    x, mask = padded_batch()
    with torch.no_grad():
        long = infogcn2.forecast_future(x, mask, 10)
        short = infogcn2.forecast_future(x, mask, 5)
        # a sample alone, cut at its last real frame, forecasts the same
        alone = infogcn2.forecast_future(x[2:, :, :4], None, 10)
        regrown = infogcn2.forecast_future(x, mask, 10, rollout="autoregressive")
    torch.testing.assert_close(long[:, :5], short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(long[2:], alone, atol=1e-5, rtol=1e-5)
    # beyond N steps the two rollouts part
    assert not torch.allclose(long[:, infogcn2.num_future :], regrown[:, infogcn2.num_future :])


def test_infogcn2_autoregressive_feeds_its_forecast_back(infogcn2):
    x, _ = padded_batch()
    N = infogcn2.num_future
    with torch.no_grad():
        out = infogcn2.forecast_future(x, None, 2 * N, rollout="autoregressive")
        # the second chunk is the forecast from the clip grown by the first one
        grown = torch.cat([x[..., :2].transpose(1, 2), out[:, :N]], dim=1)
        grown = torch.cat([grown, torch.ones(*grown.shape[:-1], 1)], dim=-1).transpose(1, 2)
        second = infogcn2.forecast_future(grown, None, N)
    torch.testing.assert_close(out[:, N:], second, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="rollout: expected one of"):
        infogcn2.forecast_future(x, None, 3, rollout="euler")


def test_infogcn2_autoregressive_rollout_has_gradients(infogcn2):
    x, mask = padded_batch()
    out = infogcn2.forecast_future(x, mask, 7, rollout="autoregressive")
    out.square().sum().backward()
    assert infogcn2.embedding.weight.grad is not None


def test_ensemble_averages_its_members_and_mirrors_back(infogcn2):
    x, mask = padded_batch()
    ensemble = Ensemble.from_models([infogcn2], mirror=True).eval()
    with torch.no_grad():
        out = ensemble.forecast_future(x, mask, 5)
        plain = infogcn2.forecast_future(x, mask, 5)
        mirrored = infogcn2.forecast_future(ensemble.flip(x), mask, 5)
    back = mirrored[:, :, ensemble.flip_index] * torch.tensor([-1.0, 1.0])
    torch.testing.assert_close(out, (plain + back) / 2, atol=1e-5, rtol=1e-5)
    weighted = Ensemble.from_models([infogcn2, infogcn2], weights=[1.0, 3.0]).eval()
    with torch.no_grad():
        torch.testing.assert_close(weighted.forecast_future(x, mask, 5), plain)
    mixed = Ensemble.from_models(
        [infogcn2, create("stgcn", num_classes=3, layout="penn13", channels=[8], strides=[1])]
    )
    with pytest.raises(TypeError, match=r"members\[1\] \(stgcn\) has no forecast_future"):
        mixed.forecast_future(x, mask, 5)
