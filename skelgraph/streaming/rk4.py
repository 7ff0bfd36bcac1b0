r"""The rk4 rollout of the InfoGCN++ dynamics frozen for one frame at inference."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from skelgraph.nn.ode import ODEDynamics, rk4_stage_times, rk4_step
from skelgraph.streaming.sagc import SAGCFrame

__all__ = ["RK4Frame"]


class RK4Frame:
    r""":func:`~skelgraph.nn.ode.rk4_rollout` of an :class:`~skelgraph.nn.ode.ODEDynamics` (start
    time 0) frozen for inference on one frame :math:`(V, D)`, or on one frame of :math:`B` graphs
    :math:`(B, V, D)`.

    The rk4 stage times are the same for every frame, so their time embeddings are constants:
    each layer is an :class:`~skelgraph.streaming.sagc.SAGCFrame`, and for a layer without
    residual (the dynamics' last one) the embedding enters its product as a precomputed
    per-stage bias instead of an addition. Every step is :func:`~skelgraph.nn.ode.rk4_step`: the
    four stage derivatives of a step go to the rows of one matrix :math:`K`, and every
    combination of the 3/8 rule (a stage's input, the step's result) is one product
    :math:`z + c^\top K`. Equal to :func:`~skelgraph.nn.ode.rk4_rollout` to float rounding. The
    constants are detached: build a new one after the weights change.

    Args:
        dynamics (ODEDynamics): the dynamics.
        steps (int): number of future states :math:`N`.
        step_size (float, optional): :math:`h`. (default: :obj:`1.0`)

    Shapes:
        - **input:** :math:`([B,] V, D)`
        - **output:** :math:`(N, [B,] V, D)`
    """

    def __init__(self, dynamics: ODEDynamics, steps: int, step_size: float = 1.0) -> None:
        h = step_size
        with torch.no_grad():
            weight = dynamics.time_embedding.phase
            times = rk4_stage_times(steps, h, weight.device)
            embeddings = dynamics.time_embedding(times).to(weight.dtype)  # [N, 4, D]
            self.layers = [SAGCFrame(layer) for layer in dynamics.layers]
            self.node_shape = (self.layers[0].num_nodes, self.layers[-1].out_channels)
            last = self.layers[-1]
            # with a residual the shift also enters the residual: it is added explicitly then
            folded = None if last.residual else last.shifted_bias(embeddings)
            # what the derivative takes as the time of step n, stage i: (i, the embedding, the
            # last layer's folded bias or None); lists, so that a trace records no indexing
            self.stages = [
                [
                    (i, embedding, None if folded is None else folded[n, i])
                    for i, embedding in enumerate(step.unbind(0))
                ]
                for n, step in enumerate(embeddings)
            ]
            # rows: the input of stages 2, 3, 4, then the step's result, as c^T [k1 k2 k3 k4]
            coefficients = weight.new_tensor(
                [
                    [h / 3, 0.0, 0.0, 0.0],
                    [-h / 3, h, 0.0, 0.0],
                    [h, -h, h, 0.0],
                    [h / 8, 3 * h / 8, 3 * h / 8, h / 8],
                ]
            )
            # row i uses the i + 1 derivatives computed so far (the others are not written yet)
            self.coefficients = [row[: i + 1].unsqueeze(0) for i, row in enumerate(coefficients)]
        self.steps = steps

    def __call__(self, z0: Tensor) -> Tensor:
        # the 3/8 rule combines every entry alike: all graphs' states are one row of B·V·D
        # (sizes left to the views and *_like allocations, so that a trace records no arithmetic)
        z = z0.reshape(1, -1)
        states = torch.empty_like(z.expand(self.steps, -1))
        batch = (-1,) if z0.dim() == 3 else ()
        for n, stages in enumerate(self.stages):
            k = torch.empty_like(z.expand(4, -1))
            # the derivatives' rows of k (selected, not unbound: torch.export fixes the batch
            # size of writes into the views of an unbind)
            stacked = k.view((4, *batch, *self.node_shape))
            rows = tuple(stacked[i] for i in range(4))
            derivative = partial(self._derivative, rows)
            z = rk4_step(derivative, stages, z, partial(self._combine, k, states[n : n + 1]))
        return states.view((self.steps, *batch, *self.node_shape))

    def _derivative(
        self, rows: tuple[Tensor, ...], stage: tuple[int, Tensor, Tensor | None], z: Tensor
    ) -> Tensor:
        r""":math:`f(z, \tau)` at ``stage`` (index, embedding, folded bias), written to its row of
        ``rows``."""
        i, embedding, folded = stage
        out = rows[i]
        h = z.view_as(out)
        for layer in self.layers[:-1]:
            h = layer(h + embedding)
        last = self.layers[-1]
        if folded is None:
            last(h + embedding, out=out)
        else:
            last(h, folded, out=out)
        return out

    def _combine(self, k: Tensor, result: Tensor, z: Tensor, i: int, _: list[Tensor]) -> Tensor:
        """:func:`~skelgraph.nn.ode.rk4_step`'s combination ``i`` as one product with the
        derivatives already in the rows of ``k``; the step's result goes to ``result``."""
        return torch.addmm(z, self.coefficients[i], k[: i + 1], out=result if i == 3 else None)
