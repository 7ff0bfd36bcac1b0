from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from skelgraph.layouts.graph import adjacency
from skelgraph.nn.ode import (
    ODEDynamics,
    SinusoidalTimeEmbedding,
    rk4_rollout,
    rk4_stage_times,
    rk4_step,
    rollout,
)

V, D = 17, 16


def transformer_encoding(position: int, channels: int) -> torch.Tensor:
    """The positional encoding of "Attention Is All You Need", written out element by element."""
    out = torch.empty(channels)
    for i in range(channels // 2):
        angle = position / 10000 ** (2 * i / channels)
        out[2 * i], out[2 * i + 1] = math.sin(angle), math.cos(angle)
    return out


def dynamics(depth: int = 1, heads: int = 1) -> ODEDynamics:
    torch.manual_seed(0)
    return ODEDynamics(D, V, adjacency("coco17"), depth=depth, heads=heads).eval()


def hand_rk4(func, z0: torch.Tensor, steps: int, h: float) -> torch.Tensor:
    """Kutta's 3/8 rule, torchdiffeq's ``rk4``, one step of ``h`` per output."""
    z, out = z0, []
    for n in range(steps):
        t = torch.tensor(n * h)
        k1 = func(t, z)
        k2 = func(t + h / 3, z + h * k1 / 3)
        k3 = func(t + 2 * h / 3, z + h * (k2 - k1 / 3))
        k4 = func(t + h, z + h * (k1 - k2 + k3))
        z = z + h * (k1 + 3 * k2 + 3 * k3 + k4) / 8
        out.append(z)
    return torch.stack(out)


def test_time_embedding_matches_positional_encoding_at_integers():
    embedding = SinusoidalTimeEmbedding(8)
    out = embedding(torch.arange(5.0))
    assert out.shape == (5, 8)
    for t in range(5):
        torch.testing.assert_close(out[t], transformer_encoding(t, 8))


def test_time_embedding_is_continuous_between_frames():
    embedding = SinusoidalTimeEmbedding(8)
    half = embedding(torch.tensor(2.5))
    assert not torch.allclose(half, embedding(torch.tensor(2.0)))
    assert not torch.allclose(half, embedding(torch.tensor(3.0)))
    near = embedding(torch.tensor(2.5 + 1e-4))
    torch.testing.assert_close(half, near, atol=1e-3, rtol=0)


def test_time_embedding_shapes_and_errors():
    embedding = SinusoidalTimeEmbedding(6)
    assert embedding(1.5).shape == (6,)
    assert embedding(torch.zeros(2, 3)).shape == (2, 3, 6)
    with pytest.raises(ValueError, match="even"):
        SinusoidalTimeEmbedding(5)


def test_dynamics_shape_and_absolute_time():
    func = dynamics(depth=2, heads=2)
    z = torch.randn(2, 5, V, D)
    with torch.no_grad():
        out = func(torch.tensor(0.0), z)
        shifted = func(torch.tensor(0.0), z, t0=torch.arange(5.0))
        same = func(torch.tensor(1.0), z, t0=torch.arange(5.0) - 1)
    assert out.shape == z.shape
    torch.testing.assert_close(out[:, 0], shifted[:, 0])  # t0 = 0 for the first frame
    assert not torch.allclose(out[:, 1:], shifted[:, 1:])
    torch.testing.assert_close(shifted, same, atol=1e-5, rtol=1e-5)


def test_dynamics_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"expected shape \[\*, 17, 16\]"):
        dynamics()(torch.tensor(0.0), torch.randn(2, 3, V, D + 1))


@pytest.mark.parametrize("step_size", [1.0, 0.5])
def test_rollouts_equal_hand_written_rk4(step_size):
    func = partial(dynamics(depth=2), t0=torch.arange(4.0))
    z0 = torch.randn(2, 4, V, D)
    with torch.no_grad():
        expected = hand_rk4(func, z0, 3, step_size)
        odeint_states = rollout(func, z0, 3, step_size)
        fused_states = rk4_rollout(func, z0, 3, step_size)
    assert odeint_states.shape == fused_states.shape == (3, *z0.shape)
    torch.testing.assert_close(odeint_states, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fused_states, expected, atol=1e-5, rtol=1e-5)


def test_rk4_stages_see_their_own_times():
    times: list[float] = []
    func = dynamics()

    def recording(tau: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        times.append(float(tau))
        return func(tau, z)

    with torch.no_grad():
        rollout(recording, torch.randn(1, 2, V, D), 2)
        odeint_times = sorted(set(times))
        times.clear()
        rk4_rollout(recording, torch.randn(1, 2, V, D), 2)
    expected = [0, 1 / 3, 2 / 3, 1, 4 / 3, 5 / 3, 2]
    assert odeint_times == pytest.approx(expected, abs=1e-6)
    assert sorted(set(times)) == pytest.approx(expected, abs=1e-6)


def test_rk4_stage_times_and_step():
    times = rk4_stage_times(2, 0.5)
    assert times.dtype == torch.float32
    expected = torch.tensor([[0, 1 / 6, 1 / 3, 0.5], [0.5, 2 / 3, 5 / 6, 1]])
    torch.testing.assert_close(times, expected)
    # one step with the combinations written out: z + sum_j a_ij k_j of the 3/8 rule
    rule = [[1 / 3], [-1 / 3, 1], [1, -1, 1], [1 / 8, 3 / 8, 3 / 8, 1 / 8]]
    func, z0, h = dynamics(), torch.randn(2, V, D), 0.5

    def combine(z, i, k):
        return z + h * sum(a * k_j for a, k_j in zip(rule[i], k, strict=True))

    with torch.no_grad():
        step = rk4_step(func, times[0], z0, combine)
        torch.testing.assert_close(step, hand_rk4(func, z0, 1, h)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="steps"):
        rk4_stage_times(0)


def test_rk4_rollout_backward_matches_odeint():
    func = dynamics()
    z0 = torch.randn(1, 3, V, D, requires_grad=True)
    (grad_odeint,) = torch.autograd.grad(rollout(func, z0, 2).square().sum(), z0)
    (grad_fused,) = torch.autograd.grad(rk4_rollout(func, z0, 2).square().sum(), z0)
    torch.testing.assert_close(grad_fused, grad_odeint, atol=1e-4, rtol=1e-4)


def test_rollout_of_linear_system_matches_exponential():
    # dz/dt = -z: rk4 with h = 0.1 is accurate to ~1e-7 per unit time.
    z0 = torch.ones(3)
    states = rk4_rollout(lambda t, z: -z, z0, 10, 0.1)
    torch.testing.assert_close(states[-1], torch.full((3,), math.exp(-1.0)), atol=1e-6, rtol=0)


def test_rollout_argument_errors():
    with pytest.raises(ValueError, match="steps"):
        rollout(lambda t, z: z, torch.zeros(1), 0)
    with pytest.raises(ValueError, match="step_size"):
        rk4_rollout(lambda t, z: z, torch.zeros(1), 2, step_size=0.0)
    with pytest.raises(ValueError, match="method"):
        rollout(lambda t, z: z, torch.zeros(1), 2, method="dopri5")


@pytest.mark.parametrize("method", ["euler", "midpoint"])
def test_rollout_other_fixed_step_methods(method):
    states = rollout(lambda t, z: -z, torch.ones(2), 4, 0.25, method=method)
    assert states.shape == (4, 2)
    assert (states[1:] < states[:-1]).all()
