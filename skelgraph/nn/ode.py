r"""Latent neural ODE of InfoGCN++: continuous time embedding, SA-GC dynamics and an rk4 rollout.

The latent state of every frame evolves as :math:`\frac{dZ}{d\tau} = f_\theta(Z, \tau)` and is
integrated with a fixed step: :func:`rollout` calls :func:`torchdiffeq.odeint`
(``method="rk4"`` by default), :func:`rk4_rollout` computes the same rk4 steps with fewer passes
over the state. torchdiffeq's ``rk4`` is Kutta's 3/8 rule: with step :math:`h` the stages are
evaluated at :math:`\tau`, :math:`\tau + h/3`, :math:`\tau + 2h/3` and :math:`\tau + h`,

.. math::
    k_1 &= f(Z_n, \tau_n), \quad
    k_2 = f(Z_n + \tfrac{h}{3} k_1, \tau_n + \tfrac{h}{3}), \quad
    k_3 = f(Z_n + h (k_2 - \tfrac{1}{3} k_1), \tau_n + \tfrac{2h}{3}), \\
    k_4 &= f(Z_n + h (k_1 - k_2 + k_3), \tau_n + h), \qquad
    Z_{n+1} = Z_n + \tfrac{h}{8} (k_1 + 3 k_2 + 3 k_3 + k_4),

so the time embedding must accept any real :math:`\tau` (the intermediate stages fall between
frames); :class:`SinusoidalTimeEmbedding` is a continuous function of :math:`\tau`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint

from skelgraph.nn.sagc import SAGC

__all__ = [
    "FIXED_STEP_METHODS",
    "RK4_STAGES",
    "ODEDynamics",
    "SinusoidalTimeEmbedding",
    "rk4_rollout",
    "rk4_stage_times",
    "rk4_step",
    "rollout",
]

#: The fixed-step methods of :func:`torchdiffeq.odeint`, the ones :func:`rollout` accepts.
FIXED_STEP_METHODS = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "explicit_adams",
    "implicit_adams",
    "fixed_adams",
)

#: Where the stages of an rk4 step from :math:`\tau` fall, in steps :math:`h`: stage :math:`i` is
#: evaluated at :math:`\tau + c_i h` (Kutta's 3/8 rule, see the module description).
RK4_STAGES = (0.0, 1 / 3, 2 / 3, 1.0)


class SinusoidalTimeEmbedding(nn.Module):
    r"""Transformer-style sinusoidal embedding of a continuous time :math:`\tau`:

    .. math::
        e(\tau)_{2i} = \sin(\tau \, \omega_i), \qquad e(\tau)_{2i+1} = \cos(\tau \, \omega_i),
        \qquad \omega_i = P^{-2i / C},

    with :math:`C` the number of channels and :math:`P` the maximal period (``max_period``). At
    integer :math:`\tau` this is the positional encoding of "Attention Is All You Need"; between
    integers it interpolates smoothly, so every rk4 stage gets its own embedding. Computed in
    float32 whatever the autocast state.

    Args:
        channels (int): embedding size :math:`C` (even).
        max_period (float, optional): :math:`P`. (default: :obj:`10000.0`)

    Shapes:
        - **input:** times :math:`(*)` (any shape, a 0-d tensor or a Python number)
        - **output:** :math:`(*, C)` float32
    """

    def __init__(self, channels: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(
                f"SinusoidalTimeEmbedding: channels: expected an even integer >= 2, got {channels}"
            )
        if max_period <= 1.0:
            raise ValueError(
                f"SinusoidalTimeEmbedding: max_period: expected a number > 1, got {max_period}"
            )
        self.channels = channels
        self.max_period = max_period
        exponent = torch.arange(0, channels, 2, dtype=torch.float32) / channels
        frequency = torch.exp(-math.log(max_period) * exponent)
        self.register_buffer("frequency", frequency, False)
        # cos(a) = sin(a + pi/2): every channel is one sine of tau * frequency + phase
        self.register_buffer("channel_frequency", frequency.repeat_interleave(2), False)
        self.register_buffer("phase", torch.tensor([0.0, math.pi / 2]).repeat(channels // 2), False)

    def forward(self, tau: Tensor | float) -> Tensor:
        device = self.phase.device
        if not isinstance(tau, Tensor) or tau.dtype != torch.float32 or tau.device != device:
            tau = torch.as_tensor(tau, dtype=torch.float32, device=device)
        return torch.addcmul(self.phase, tau.unsqueeze(-1), self.channel_frequency).sin_()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.channels}, max_period={self.max_period})"


class ODEDynamics(nn.Module):
    r"""The InfoGCN++ dynamics :math:`f_\theta(Z, \tau)`: a small stack of SA-GC layers acting on
    every frame's skeleton graph, with the time embedding added before each layer:

    .. math::
        H_0 = Z, \qquad H_{l} = \mathrm{SAGC}_l\big(H_{l-1} + e(t_0 + \tau)\big),
        \qquad f_\theta(Z, \tau) = H_L,

    where :math:`e` is a :class:`SinusoidalTimeEmbedding` and :math:`t_0` an optional start time
    of each trajectory (:obj:`None` means 0: the time is relative to the rollout start, as
    :class:`~skelgraph.models.InfoGCN2` uses it, so a rollout does not depend on the frame it
    starts from). Inner layers use the SA-GC residual,
    normalisation and ReLU; the last layer is linear in its values (no residual, normalisation,
    activation or bias), so the derivative can take any sign; a constant drift needs no bias, as
    the lowest frequencies of the embedding are constant over the few frames of a rollout. Every
    layer runs the fused all-pairs path (:meth:`~skelgraph.nn.sagc.SAGC.forward_dense`), batched
    over all leading dimensions (batch, start frame, ...); the dynamics never reads a value back
    from the device, so it can be integrated without stalls on accelerators.

    Args:
        channels (int): latent size :math:`D`.
        num_nodes (int): joints :math:`V` per frame.
        adjacency (Tensor, optional): initial topology :math:`\hat{A}` ``[V, V]`` of the SA-GC
            layers (e.g. :func:`~skelgraph.layouts.graph.adjacency`). (default: :obj:`None`)
        depth (int, optional): number of SA-GC layers :math:`L`. (default: :obj:`1`)
        heads (int, optional): SA-GC heads per layer. (default: :obj:`1`)
        attention_channels (int, optional): SA-GC query/key size per head. (default: SA-GC's)
        norm (str, optional): normalisation of the inner layers, as in
            :class:`~skelgraph.nn.sagc.SAGC`. (default: ``"layer"``)
        max_period (float, optional): of the time embedding. (default: :obj:`10000.0`)

    Shapes:
        - **input:** ``tau`` a 0-d tensor, ``z`` :math:`(*, V, D)`, ``t0`` broadcastable to
          :math:`(*)`
        - **output:** :math:`(*, V, D)`
    """

    def __init__(
        self,
        channels: int,
        num_nodes: int,
        adjacency: Tensor | None = None,
        *,
        depth: int = 1,
        heads: int = 1,
        attention_channels: int | None = None,
        norm: str | None = "layer",
        max_period: float = 10000.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"ODEDynamics: depth: expected an integer >= 1, got {depth}")
        self.channels = channels
        self.num_nodes = num_nodes
        self.time_embedding = SinusoidalTimeEmbedding(channels, max_period)
        self.layers = nn.ModuleList(
            SAGC(
                channels,
                channels,
                heads,
                num_nodes=num_nodes,
                adjacency=adjacency,
                attention_channels=attention_channels,
                bias=not last,
                residual=not last,
                norm=None if last else norm,
                activation=not last,
            )
            for last in (i == depth - 1 for i in range(depth))
        )

    def forward(self, tau: Tensor, z: Tensor, t0: Tensor | None = None) -> Tensor:
        r"""Evaluates :math:`f_\theta(Z, \tau)`; the argument order ``(tau, z)`` is torchdiffeq's.

        Args:
            tau (Tensor): integration time (0-d).
            z (Tensor): state :math:`(*, V, D)`.
            t0 (Tensor, optional): start times broadcastable to :math:`(*)`, added to ``tau``.
        """
        if z.dim() < 2 or z.shape[-2:] != (self.num_nodes, self.channels):
            raise ValueError(
                f"ODEDynamics: z: expected shape [*, {self.num_nodes}, {self.channels}], "
                f"got {list(z.shape)}"
            )
        time = tau if t0 is None else t0 + tau
        embedding = self.time_embedding(time).unsqueeze(-2)  # [*, 1, D] over the joints
        # as many dimensions as z: the broadcast add then stays on torch's fast path
        embedding = embedding.view((1,) * (z.dim() - embedding.dim()) + embedding.shape)
        lead = z.shape[:-2]
        h = z
        for layer in self.layers:
            h = (h + embedding).reshape(-1, self.num_nodes, 1, self.channels)
            h = layer.forward_dense(h).view(*lead, self.num_nodes, self.channels)
        return h


def rollout(
    func: Callable[[Tensor, Tensor], Tensor],
    z0: Tensor,
    steps: int,
    step_size: float = 1.0,
    method: str = "rk4",
) -> Tensor:
    r"""Integrates :math:`dZ/d\tau = f(\tau, Z)` from :math:`Z(0) = Z_0` with
    :func:`torchdiffeq.odeint` (fixed step ``step_size`` for the fixed-grid methods such as
    ``rk4``) and returns the states at :math:`\tau = h, 2h, \dots, N h`.

    Args:
        func (callable): the dynamics, called as ``func(tau, z)`` (e.g. :class:`ODEDynamics`, or
            a :func:`functools.partial` of it fixing ``t0``).
        z0 (Tensor): initial state of any shape; every element evolves in parallel, so a batch of
            trajectories (e.g. one starting from every frame) is one call.
        steps (int): number of future states :math:`N`.
        step_size (float, optional): :math:`h`, the output spacing and the solver step.
            (default: :obj:`1.0`)
        method (str, optional): one of :data:`FIXED_STEP_METHODS`. (default: ``"rk4"``)

    Returns:
        Tensor: :math:`(N, *)`, entry ``n - 1`` the state at :math:`\tau = n h`.
    """
    _check_rollout("rollout", steps, step_size)
    if method not in FIXED_STEP_METHODS:
        raise ValueError(f"rollout: method: expected one of {FIXED_STEP_METHODS}, got {method!r}")
    t = torch.arange(steps + 1, dtype=torch.float32, device=z0.device) * step_size
    states = odeint(func, z0, t, method=method, options={"step_size": step_size})
    return states[1:]


def rk4_stage_times(
    steps: int, step_size: float = 1.0, device: torch.device | str | None = None
) -> Tensor:
    r"""The times of every stage of ``steps`` rk4 steps of :math:`h` from :math:`\tau = 0`:
    :math:`(N, 4)` float32, entry ``[n, i]`` :math:`(n + c_i) h` (:data:`RK4_STAGES`)."""
    _check_rollout("rk4_stage_times", steps, step_size)
    h = step_size
    times = [[(n + c) * h for c in RK4_STAGES] for n in range(steps)]
    return torch.tensor(times, dtype=torch.float32, device=device)


def rk4_step(
    func: Callable[[Any, Tensor], Tensor],
    times: Sequence[Any],
    z: Tensor,
    combine: Callable[[Tensor, int, list[Tensor]], Tensor],
) -> Tensor:
    r"""One step of Kutta's 3/8 rule from :math:`Z_n`: the stage derivatives
    :math:`k_i = f(\tau_n + c_i h, Z^{(i)})` with :math:`Z^{(1)} = Z_n`, every later stage input
    :math:`Z^{(i + 1)} = Z_n + \sum_{j \le i} a_{ij} k_j` and the result
    :math:`Z_{n+1} = Z_n + \sum_j b_j k_j` (coefficients in the module description).

    How the linear combinations are computed is the caller's: :func:`rk4_rollout` sums
    elementwise in the fewest passes over the state (and stays differentiable), the frozen
    one-frame form of :mod:`skelgraph.streaming` takes one small matrix product into
    preallocated rows (fewer operations on a frame's small tensors).

    Args:
        func (callable): the derivative, ``func(time, z)``.
        times (sequence): the four stage times as ``func`` takes them (e.g. a row of
            :func:`rk4_stage_times`, or constants the caller made for each stage time).
        z (Tensor): :math:`Z_n`.
        combine (callable): ``combine(z, i, k)`` with :math:`Z_n` and the derivatives
            ``k`` :math:`[k_1 \dots k_{i+1}]` computed so far (``i`` from 0): the input of the
            next stage for ``i < 3``, :math:`Z_{n+1}` for ``i = 3``.

    Returns:
        Tensor: :math:`Z_{n+1}`.
    """
    k: list[Tensor] = []
    stage = z
    for i, time in enumerate(times):
        k.append(func(time, stage))
        stage = combine(z, i, k)
    return stage


def _combine_elementwise(h: float, z: Tensor, i: int, k: list[Tensor]) -> Tensor:
    """:func:`rk4_step`'s combinations of the 3/8 rule with step ``h``, in fused in-place
    updates: 10 passes over the state per step."""
    if i == 0:
        return torch.add(z, k[0], alpha=h / 3)
    if i == 1:
        return torch.add(z, k[1], alpha=h).add_(k[0], alpha=-h / 3)
    if i == 2:
        return torch.add(z, torch.sub(k[0], k[1]).add_(k[2]), alpha=h)
    return torch.add(z, torch.add(k[0], torch.add(k[1], k[2]), alpha=3).add_(k[3]), alpha=h / 8)


def rk4_rollout(
    func: Callable[[Tensor, Tensor], Tensor], z0: Tensor, steps: int, step_size: float = 1.0
) -> Tensor:
    r"""The same integration as ``rollout(func, z0, steps, step_size, method="rk4")`` (the 3/8
    rule of the module description, one step of :math:`h` per output), written with fused
    in-place updates.

    :func:`torchdiffeq.odeint` spends about 20 passes over the state per step on its own
    arithmetic and bookkeeping (a separate kernel for every scalar product and sum, plus an
    ``abs()`` of the whole state in every function evaluation to find its dtype); here a step
    (:func:`rk4_step`) takes 10, and the stage times are made once
    (:func:`rk4_stage_times`), so no value is read back from the device. The results agree with
    torchdiffeq's to float rounding. Arguments and result as in :func:`rollout`.
    """
    _check_rollout("rk4_rollout", steps, step_size)
    combine = partial(_combine_elementwise, step_size)
    states = []
    z = z0
    for times in rk4_stage_times(steps, step_size, z0.device):
        z = rk4_step(func, times, z, combine)
        states.append(z)
    return torch.stack(states)


def _check_rollout(name: str, steps: int, step_size: float) -> None:
    if steps < 1:
        raise ValueError(f"{name}: steps: expected an integer >= 1, got {steps}")
    if step_size <= 0:
        raise ValueError(f"{name}: step_size: expected a positive number, got {step_size}")
