r"""InfoGCN++ frozen for one frame at inference, and :func:`build_plan`, the frame plan of any
streaming model."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from skelgraph.models.base import StreamingModel
from skelgraph.models.ensemble import StreamingEnsemble
from skelgraph.models.infogcn2 import InfoGCN2, InfoGCN2State
from skelgraph.nn.temporal import KVCache
from skelgraph.streaming.ensemble import EnsemblePlan
from skelgraph.streaming.rk4 import RK4Frame
from skelgraph.streaming.sagc import SAGCFrame
from skelgraph.streaming.slab import Slab
from skelgraph.streaming.temporal import TemporalFrame

__all__ = ["RK4_SOLVERS", "FramePlan", "build_plan"]

#: The ODE solvers of :class:`~skelgraph.models.InfoGCN2` that a :class:`FramePlan` integrates
#: (:class:`~skelgraph.streaming.rk4.RK4Frame`; the others step with the model itself).
RK4_SOLVERS = ("fused_rk4", "rk4")


def build_plan(model: StreamingModel) -> StreamingModel:
    """The fastest form of ``model`` for stepping streams one frame at a time at inference: a
    :class:`FramePlan` for an :class:`~skelgraph.models.InfoGCN2` with an rk4 solver, an
    :class:`~skelgraph.streaming.ensemble.EnsemblePlan` of the members' plans for a
    :class:`~skelgraph.models.ensemble.StreamingEnsemble`, and ``model`` itself otherwise.

    Every plan has the model's ``init_state`` and ``step`` (and ``step_streams``, see
    :func:`~skelgraph.models.base.step_streams`) with the model's states, and gives the model's
    evaluation-mode outputs to float rounding. A plan is made from the weights (and on the
    device) as they are when it is built: build it after loading or moving the model, and again
    after the weights change.
    """
    if isinstance(model, StreamingEnsemble):
        return EnsemblePlan(model, [build_plan(member) for member in model.members])
    if isinstance(model, InfoGCN2) and model.ode_solver in RK4_SOLVERS:
        return FramePlan(model)
    return model


class FramePlan:
    r""":class:`~skelgraph.models.InfoGCN2` frozen for stepping streams at inference: every
    layer's constants made once (see :class:`~skelgraph.streaming.sagc.SAGCFrame`,
    :class:`~skelgraph.streaming.temporal.TemporalFrame`,
    :class:`~skelgraph.streaming.rk4.RK4Frame`), the embedding's joint table and the transposed
    weights of the decoder and the classifier (or of the information bottleneck's mean latent and
    its classifier), made from the weights as they are: build a new one after they change (or the
    model moves).

    :meth:`step` advances one stream like :meth:`InfoGCN2.step <skelgraph.models.InfoGCN2.step>`
    in evaluation mode (to float rounding); :meth:`step_streams` advances :math:`B` independent
    streams by one frame together, each with its own one-stream state (so each at its own
    frame): with an attention window their ring buffers are stacked along the nodes
    (:class:`~skelgraph.streaming.slab.Slab`) for one batched computation and each stream's new
    key and value written back to its own ring. The whole frame (embedding to logits) is traced
    once per number of rows with :func:`torch.jit.trace`, which runs the same operations without
    Python in between; a trace is used when it gives the eager result to 1e-5 on its first frame,
    and the eager form otherwise (or when tracing fails). Without a window the streams run one by
    one in eager form. :meth:`functional_step` is the same frame as a pure function of tensors
    (the rings given and returned), for :func:`torch.export.export` and ONNX.

    Args:
        model (InfoGCN2): the model, with an rk4 solver (:data:`RK4_SOLVERS`).

    Attributes:
        model (InfoGCN2): the model the plan was built from.
        traced (dict): per (rows computed, some rows left unchanged) the traced frame, or
            :obj:`False` where the eager form runs.
    """

    def __init__(self, model: InfoGCN2) -> None:
        if model.ode_solver not in RK4_SOLVERS:
            raise ValueError(
                f"FramePlan: model: expected an ode_solver in {RK4_SOLVERS}, "
                f"got {model.ode_solver!r}"
            )
        with torch.no_grad():
            self.joint_features = tuple(model.features.features) == ("joint",)
            self.embedding_t = model.embedding.weight.detach().t().contiguous()
            self.table = model.embedding_table().detach().squeeze(1)  # [V, D]
            self.encoder = [
                (SAGCFrame(block.spatial), TemporalFrame(block.temporal)) for block in model.encoder
            ]
            self.rollout = RK4Frame(model.dynamics, model.num_future, model.step_size)
            *convs, out = model.decoder
            self.decoder = [
                (
                    conv.lin.weight.detach().t().contiguous(),
                    conv.topology.detach(),
                    conv.bias.detach(),
                    conv.lin.out_features,
                )
                for conv in convs
            ]
            self.decoder_out = (
                out.weight.detach().t().contiguous(),
                out.bias.detach(),
                out.out_features,
            )
            self.head = [SAGCFrame(layer) for layer in model.head]
            # the per-joint classifier, or the bottleneck's maps in evaluation: the hidden
            # layer, the mean latent and the classifier that reads it
            linears = (
                [model.classifier]
                if model.bottleneck is None
                else [model.bottleneck.hidden, model.bottleneck.mu, model.bottleneck.classifier]
            )
            self.classifier = [
                (lin.weight.detach().t().contiguous(), lin.bias.detach()) for lin in linears
            ]
            windows = {temporal.window for _, temporal in self.encoder}
            self.window = windows.pop() if len(windows) == 1 else None
            V = model.layout.num_joints
            self.ring_biases = (
                None
                if self.window is None
                else [temporal.ring_bias(V) for _, temporal in self.encoder]
            )
            device = self.table.device
            self.slots = [torch.tensor([slot], device=device) for slot in range(self.window or 0)]
            # per slot, every layer's bias as the traced frame takes it (made once: no view
            # per frame)
            self.slot_biases = [
                [biases[slot].view(-1, 1, self.window) for biases in self.ring_biases or ()]
                for slot in range(self.window or 0)
            ]
        self.model = model
        self.features = model.features
        self.num_joints = V
        self.in_channels = model.in_channels
        # sizes as Python numbers, so that a trace records no shape arithmetic
        self.node_shape = (V, self.table.size(1))
        # (streams computed, some left unchanged) -> the traced frame, False when not usable
        self.traced: dict[tuple[int, bool], Any] = {}

    def init_state(self, batch_size: int = 1) -> InfoGCN2State:
        """The model's :meth:`~skelgraph.models.InfoGCN2.init_state`; :meth:`step` and
        :meth:`step_streams` take one-stream states (``batch_size`` 1)."""
        return self.model.init_state(batch_size)

    def step(self, x_t: Tensor, state: InfoGCN2State) -> tuple[Tensor, Tensor, InfoGCN2State]:
        r"""Advances one stream by one frame, as the model's
        :meth:`~skelgraph.models.InfoGCN2.step` in evaluation mode.

        Args:
            x_t (Tensor): the new frame's joints :math:`(1, V, C)`, confidence last.
            state (InfoGCN2State): a one-stream state, from :meth:`init_state` ``(1)`` or the
                previous step; updated in place.

        Returns:
            (Tensor, Tensor, InfoGCN2State): logits :math:`(1, K)`, forecast
            :math:`(1, N, V, C - 1)` and the state.
        """
        self._check("FramePlan.step", x_t, [state])
        logits, forecast = self._advance(x_t, [state])
        state.previous = x_t.clone()
        state.frames += 1
        return logits, forecast, state

    def step_streams(
        self, x_t: Tensor, states: Sequence[InfoGCN2State]
    ) -> tuple[Tensor, Tensor, list[InfoGCN2State]]:
        r"""Advances :math:`B` independent streams by one frame each, every stream at its own
        frame (e.g. the clients of a service): ``states[b]`` is stream :math:`b`'s one-stream
        state, updated in place. Equal to :meth:`step` on each stream alone (to float
        rounding); with an attention window the streams are computed together in one batched
        pass, which costs little more than one stream.

        Args:
            x_t (Tensor): the streams' new frames :math:`(B, V, C)`, confidence last.
            states (sequence of InfoGCN2State): :math:`B` one-stream states.

        Returns:
            (Tensor, Tensor, list[InfoGCN2State]): logits :math:`(B, K)`, forecasts
            :math:`(B, N, V, C - 1)` and the states.
        """
        self._check("FramePlan.step_streams", x_t, states)
        logits, forecast = self._advance(x_t, states)
        frames = x_t.clone()
        for b, state in enumerate(states):
            state.previous = frames[b : b + 1]
            state.frames += 1
        return logits, forecast, list(states)

    def functional_caches(self, batch_size: int = 1) -> list[Tensor]:
        r"""The caches :meth:`functional_step` takes before the first frame of ``batch_size``
        streams: every encoder layer's key and value ring, zeros of shape :math:`(B, V, H, W,
        D)` (:math:`H` heads of :math:`D` channels, :math:`W` the attention window), in layer
        order (key, value, key, value, ...).

        Raises:
            ValueError: when the model has no attention window (its caches grow).
        """
        self._check_window("functional_caches")
        caches = self.model.init_state(batch_size).caches
        return [
            ring.unflatten(0, (batch_size, self.num_joints))
            for cache in caches
            for ring in (cache.key, cache.value)
        ]

    def functional_step(
        self, x_t: Tensor, previous: Tensor, position: Tensor, caches: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        r"""The frame of :math:`B` streams as a pure function of tensors, the form
        :func:`torch.export.export` and ONNX take: the traced frame of :meth:`step_streams`
        (with the same outputs) on rings given and returned as tensors, every stream at its own
        position. Needs an attention window.

        Args:
            x_t (Tensor): the streams' new frames :math:`(B, V, C)`, confidence last.
            previous (Tensor): the frames before them :math:`(B, V, C)` (a stream's first frame
                itself at its start, so that its velocities are zero).
            position (Tensor): the frames each stream had before ``x_t``, :math:`(B,)` (long).
            caches (sequence of Tensor): the rings, as :meth:`functional_caches` makes them.

        Returns:
            (Tensor, Tensor, list[Tensor]): logits :math:`(B, K)`, forecasts
            :math:`(B, N, V, C - 1)` and the rings with the new frame's keys and values (new
            tensors: ``caches`` is left unchanged).
        """
        self._check_window("functional_step")
        if len(caches) != 2 * len(self.encoder):
            raise ValueError(
                f"FramePlan.functional_step: caches: expected a key and a value per encoder "
                f"layer ({2 * len(self.encoder)} tensors), got {len(caches)}"
            )
        W, V = self.window, self.num_joints
        features = x_t if self.joint_features else self.features.step(x_t, previous)
        slot = position.remainder(W)
        slots = slot.view(-1, 1).expand(-1, V).reshape(-1, 1, 1, 1)  # every node's
        # a stream at position t < W has written slots 0 … t only: the others take no attention
        unwritten = torch.arange(W, device=position.device) > position.view(-1, 1, 1, 1)
        tensors: list[Tensor] = []
        rings: list[Tensor] = []
        for layer, biases in enumerate(self.ring_biases):
            # copies, which the frame writes in place
            key, value = (ring.flatten(0, 1).clone() for ring in caches[2 * layer : 2 * layer + 2])
            bias = biases.index_select(0, slot).masked_fill(unwritten, float("-inf"))
            tensors += (key, value, bias.view(-1, 1, W))
            rings += (key, value)
        logits, forecast = self._frame(features, slots, *tensors)
        return logits, forecast, [ring.unflatten(0, (-1, V)) for ring in rings]

    def _check_window(self, name: str) -> None:
        """Raises :class:`ValueError` unless the rings have one window (fixed-size caches)."""
        if self.ring_biases is None:
            raise ValueError(
                f"FramePlan.{name}: expected a model with an attention_window (fixed-size "
                f"rings), got {type(self.model).__name__} without one (its caches grow)"
            )

    def _check(self, name: str, x_t: Tensor, states: Sequence[InfoGCN2State]) -> None:
        """Raises :class:`ValueError` unless ``x_t`` holds one frame per one-stream state."""
        shape = (len(states), self.num_joints, self.in_channels)
        if x_t.shape != shape:
            raise ValueError(
                f"{name}: x_t: expected shape {list(shape)} (one frame per state), "
                f"got {list(x_t.shape)}"
            )
        sizes = [state.batch_size for state in states]
        if any(size != 1 for size in sizes):
            raise ValueError(
                f"{name}: states: expected one-stream states (init_state(1)), "
                f"got batch sizes {sizes}"
            )

    def _advance(self, x_t: Tensor, states: Sequence[InfoGCN2State]) -> tuple[Tensor, Tensor]:
        """Logits :math:`(B, K)` and forecasts :math:`(B, N, V, C - 1)` of the frame ``x_t``
        :math:`(B, V, C)` of :math:`B` streams with one-stream ``states``; advances their
        caches."""
        B = len(states)
        features = x_t if self.joint_features else self.features.step(x_t, _previous(x_t, states))
        if self.ring_biases is None:
            results = [self._grown(features[b : b + 1], s.caches) for b, s in enumerate(states)]
            return torch.cat([r[0] for r in results]), torch.cat([r[1] for r in results])
        if B == 1:  # its own ring (a row of a slab is one too)
            return self._single(features, states[0].caches)
        return self._batched(features, states)

    def _single(self, features: Tensor, caches: list[KVCache]) -> tuple[Tensor, Tensor]:
        """One stream's frame with window rings: every node writes the same slot."""
        claims = [cache.claim() for cache in caches]
        slot = claims[0][0]
        tensors: list[Tensor] = []
        for cache, bias, (_, held) in zip(caches, self.slot_biases[slot], claims, strict=True):
            if held < self.window:  # slots not written yet take no attention
                bias = bias.clone()
                bias[..., held:] = float("-inf")
            tensors += (cache.key, cache.value, bias)
        return self._run((1, False), features, self.slots[slot], tensors)

    def _batched(self, features: Tensor, states: Sequence[InfoGCN2State]) -> tuple[Tensor, Tensor]:
        r"""The frame of :math:`B \geq 2` streams with window rings, in one pass over the rows
        of their slab."""
        B, device = len(states), features.device
        slab = Slab.common(states)
        if slab is None or slab.size > 2 * B:  # new company: move their rings together
            slab = Slab(states)
        size = slab.size
        order = [state.row for state in states]
        rows = None if order == list(range(size)) else torch.tensor(order, device=device)
        if rows is not None:  # to the slab's row order (its other streams: zeros, unused)
            padded = features.new_zeros((size, *features.shape[1:]))
            features = padded.index_copy_(0, rows, features)
        stepped = {state.row: state for state in states}
        idle = [(0, self.window)] * len(self.ring_biases)  # any slot, untouched
        claims = [
            [cache.claim() for cache in stepped[row].caches] if row in stepped else idle
            for row in range(size)
        ]
        slots = torch.tensor([claim[0][0] for claim in claims], device=device)
        slot_index = slots.repeat_interleave(self.num_joints).view(-1, 1, 1, 1)
        tensors: list[Tensor] = []
        for layer, ((key, value), biases) in enumerate(
            zip(slab.layers, self.ring_biases, strict=True)
        ):
            bias = biases.index_select(0, slots)  # [R, V·H, 1, W]
            for row, claim in enumerate(claims):
                held = claim[layer][1]
                if held < self.window:  # slots not written yet take no attention
                    bias[row, :, :, held:] = float("-inf")
            tensors += (key, value, bias.view(-1, 1, self.window))
        if rows is not None and size > B:
            keep = torch.ones(size, dtype=torch.bool, device=device).index_fill_(0, rows, False)
            tensors.append(keep.repeat_interleave(self.num_joints).view(-1, 1, 1, 1))
        logits, forecast = self._run((size, len(tensors) % 3 == 1), features, slot_index, tensors)
        if rows is not None:  # back to the order of the states
            logits, forecast = logits.index_select(0, rows), forecast.index_select(0, rows)
        return logits, forecast

    def _run(
        self, variant: tuple[int, bool], features: Tensor, slot: Tensor, tensors: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """:meth:`_frame`, traced once per ``variant`` (rows, some kept unchanged)."""
        traced = self.traced.get(variant)
        if traced is None:
            traced = self.traced[variant] = self._trace(features, slot, tensors)
        return (traced or self._frame)(features, slot, *tensors)

    def _grown(self, features: Tensor, caches: list[KVCache]) -> tuple[Tensor, Tensor]:
        """One stream's frame with growing caches (no window), in eager form."""
        h = torch.matmul(features, self.embedding_t).add_(self.table)  # [1, V, D]
        for (spatial, temporal), cache in zip(self.encoder, caches, strict=True):
            h = temporal(spatial(h[0]), cache).unsqueeze(0)
        return self._readout(h)

    def _frame(self, features: Tensor, slot: Tensor, *tensors: Tensor) -> tuple[Tensor, Tensor]:
        """The frame of :math:`R` streams with every layer's rings (key, value, each
        :math:`(R V, H, W, D)`, then the bias :math:`(R V H, 1, W)`), the ring slots (one,
        :math:`(1,)`, or every node's, :math:`(R V, 1, 1, 1)`) and, last, optionally the nodes
        whose rings stay unchanged (:math:`(R V, 1, 1, 1)`) given: only tensor operations, as
        :func:`torch.jit.trace` records them."""
        keep = tensors[-1] if len(tensors) % 3 == 1 else None
        h = torch.matmul(features, self.embedding_t).add_(self.table)  # [R, V, D]
        V, D = self.node_shape
        for i, (spatial, temporal) in enumerate(self.encoder):
            key, value, bias = tensors[3 * i : 3 * i + 3]
            h = temporal.ring(spatial(h).view(-1, D), key, value, bias, slot, keep)
            h = h.view(-1, V, D)
        return self._readout(h)

    def _trace(self, features: Tensor, slot: Tensor, tensors: list[Tensor]) -> Any:
        """:meth:`_frame` traced on this frame (on copies of the buffers), or :obj:`False` when
        tracing fails or the trace differs from the eager result by more than 1e-5."""
        copies = [t.clone() for t in tensors]
        expected = self._frame(features, slot, *[t.clone() for t in tensors])
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated, not gone
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.trace.* is deprecated")
                traced = torch.jit.trace(self._frame, (features, slot, *copies), check_trace=False)
            for _ in range(3):  # the executor optimises the graph during the first runs
                result = traced(features, slot, *[t.clone() for t in tensors])
        except (RuntimeError, TypeError, ValueError):
            return False
        close = all(
            torch.allclose(a, b, rtol=0.0, atol=1e-5) for a, b in zip(result, expected, strict=True)
        )
        return traced if close else False

    def _readout(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Logits :math:`(B, K)` and forecasts :math:`(B, N, V, C - 1)` from the encoder's
        output :math:`(B, V, D)`."""
        future = self.rollout(h)  # [N, B, V, D]
        N, (V, D) = self.rollout.steps, self.node_shape
        y = future.view(-1, D)
        for weight_t, topology, bias, width in self.decoder:
            y = torch.mm(y, weight_t).view(-1, V, width)
            y = torch.matmul(topology, y).add_(bias).relu_().view(-1, width)
        weight_t, bias, width = self.decoder_out
        forecast = torch.addmm(bias, y, weight_t).view(N, -1, V, width)
        h = torch.cat([h, *future.unbind(0)], dim=-1)
        for layer in self.head:
            h = layer(h)
        width = self.head[-1].out_channels
        if len(self.classifier) == 1:
            ((weight_t, bias),) = self.classifier
            joints = h.view(-1, V * width)  # mean_v W_v h_v = [h_1 … h_V] W / V
            return torch.addmm(bias, joints, weight_t, alpha=1 / V), forecast.transpose(0, 1)
        (hidden_t, hidden_b), (mu_t, mu_b), (weight_t, bias) = self.classifier
        hidden = torch.addmm(hidden_b, h.view(-1, V, width).mean(dim=1), hidden_t).relu_()
        logits = torch.addmm(bias, torch.addmm(mu_b, hidden, mu_t), weight_t)
        return logits, forecast.transpose(0, 1)


def _previous(x_t: Tensor, states: Sequence[InfoGCN2State]) -> Tensor | None:
    """The streams' previous frames :math:`(B, V, C)` (a stream's first frame stands in for its
    missing previous one, so that its velocities are zero), :obj:`None` when no stream has
    one."""
    if all(state.previous is None for state in states):
        return None
    return torch.cat(
        [
            x_t[b : b + 1] if state.previous is None else state.previous
            for b, state in enumerate(states)
        ]
    )
