r"""InfoGCN++ (`Chi et al., 2023 <https://arxiv.org/abs/2310.10547>`_) as described in the
real-time pipeline blog (§3.2.2, §4): an online skeleton action recogniser that also forecasts.

Data flow for joints :math:`X \in \mathbb{R}^{B \times V \times T \times C}` (confidence last):

1. **Embedding**: :math:`H_0 = F(X) W_e + b + E_{\mathrm{joint}}`, a linear map of every
   joint's input features (:class:`~skelgraph.features.InputFeatures`) plus a learned joint
   embedding. There is no embedding of the absolute frame index: the model sees time only as the
   relative position bias of the temporal attention, so its outputs do not depend on where a clip
   or a stream starts.
2. **Encoder**: ``depth`` blocks of an SA-GC layer (spatial mixing within each frame,
   :class:`~skelgraph.nn.sagc.SAGC`) followed by causal multi-head self-attention along time for
   every joint (:class:`~skelgraph.nn.temporal.CausalTemporalAttention`, with its MLP, ALiBi
   relative position bias and an optional window of ``attention_window`` frames). This is the
   blog's "SA-GC, then temporal attention" arrangement rather than the reference code's SA-GC that
   produces the attention's q/k/v: with 64 channels the latter is an SA-GC of width
   :math:`64 \to 192` with a :math:`64 \to 192` residual projection in every block (about 54 k
   parameters and 55 k multiply-adds per joint and frame), where an SA-GC :math:`64 \to 64` plus the
   attention's own q/k/v projection cost 29 k and 32 k; and the two library layers compose
   unchanged (the temporal layer keeps its streaming cache). Output: latents
   :math:`Z \in \mathbb{R}^{B \times V \times T \times D}`, :math:`Z_t` depending on frames
   :math:`\le t` only.
3. **Neural ODE**: :math:`\hat{Z}^{(t)}_{t+1..t+N}` from every frame :math:`t` at once: one rollout
   of the state :math:`(B, T, V, D)` under :class:`~skelgraph.nn.ode.ODEDynamics` (time
   :math:`\tau` relative to the rollout start, the same for every frame), ``num_future`` rk4
   steps of ``step_size``. ``ode_solver="fused_rk4"`` integrates with
   :func:`~skelgraph.nn.ode.rk4_rollout` (torchdiffeq's ``rk4`` without its per-step
   overheads), any other value is a :func:`torchdiffeq.odeint` method used through
   :func:`~skelgraph.nn.ode.rollout` (``"rk4"`` gives the same numbers).
4. **Future-motion decoder**: :math:`\hat{X}^{(t)}_{t+n} = \mathrm{Linear}(\mathrm{GCN}(\mathrm{GCN}
   (\hat{Z}^{(t)}_{t+n})))`, coordinates only (:math:`C - 1` channels; the confidence is not
   reconstructed). :class:`GraphConv` learns its topology, initialised to the normalised bones.
5. **Classification head**: per frame, :math:`[Z_t \,\Vert\, \hat{Z}^{(t)}_{t+1} \Vert \dots \Vert
   \hat{Z}^{(t)}_{t+N}]` (the present and its rollout stacked along the channels, as the reference
   code does) :math:`\to` SA-GC :math:`\to` SA-GC :math:`\to` per-joint linear map :math:`\to`
   mean over joints, giving logits for every frame :math:`(B, T, K)`. Every joint has its own
   linear map :math:`W_v` (:math:`\ell_t = \frac{1}{V} \sum_v W_v h_{t,v} + b`), which is one
   product with the concatenated joint features.

Every layer acts within a frame or causally along time and the normalisations are per joint and
frame (layer norm), so the logits, forecasts and latents at frame :math:`t` never depend on later
frames, in training and in evaluation mode, and padded frames (mask :obj:`False`) never influence
real frames: the temporal attention skips them and the losses and clip-level prediction exclude
them.

**Streaming**: :meth:`InfoGCN2.step` takes one frame and returns that frame's logits and forecast
exactly as :meth:`InfoGCN2.forward` gives them for the whole clip (to float rounding), from a
state made by :meth:`InfoGCN2.init_state`: the previous frame (for velocity features) and every
temporal layer's key/value cache. With ``attention_window`` :math:`W` each cache is a ring of
:math:`W` frames, so a frame costs the same however long the stream; stacked layers still reach
further back (up to ``depth`` :math:`(W - 1)` frames) exactly as the full pass does. Training on
windows of at most :math:`W` frames is unaffected by the window.

Parameters at the default configuration (``coco17``, :math:`C = 3`, 14 classes): 520,305, 3 %
below the reference implementation's 535 k, split as

=========================================================  =========
embedding (linear 3 → 64, joint embedding)                     1,344
encoder, 4 × (SA-GC 16,467 + temporal attention 33,472)      199,756
relative position bias (fixed ALiBi slopes, a buffer)              0
ODE dynamics (one SA-GC layer, one head, no bias)              5,425
motion decoder (graph convolutions 64 → 32 → 32, linear → 2)   3,780
head SA-GC 256 → 288 (one head, residual projection)         152,721
head SA-GC 288 → 288 (one head)                               88,721
per-joint classifier (17 × 288 → 14)                          68,558
=========================================================  =========

The budget is spent where it costs least time on a CPU: the temporal MLP keeps the reference's
width (128 = 2 D); the dynamics (evaluated 4 N = 12 times per forward pass) and the decoder (run
on all N rollouts, 32 channels are plenty for 2 coordinates) stay small; the head is wide but has
a single SA-GC head; the per-joint classifier costs parameters but almost no time. The
relative position bias replaced the sinusoidal embedding of the absolute frame index (neither
has parameters); its slopes are stored with the weights, so a checkpoint of the earlier
absolute-time model does not load. See :func:`parameter_breakdown`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skelgraph.features import InputFeatures
from skelgraph.layouts import Layout
from skelgraph.layouts.graph import adjacency
from skelgraph.models.base import (
    REDUCTIONS,
    ModelOutput,
    SkeletonModel,
    check_input,
    resolve_layout,
    step_each,
)
from skelgraph.models.losses import infogcn2_loss
from skelgraph.models.registry import register_model
from skelgraph.nn.ode import FIXED_STEP_METHODS, ODEDynamics, RK4Frame, rk4_rollout, rollout
from skelgraph.nn.sagc import SAGC, SAGCFrame
from skelgraph.nn.stgcn import reset_children
from skelgraph.nn.temporal import CausalTemporalAttention, KVCache, TemporalFrame

__all__ = ["GraphConv", "InfoGCN2", "InfoGCN2State", "parameter_breakdown"]

_VERSION = attrgetter("_version")  # a tensor's in-place modification counter


class GraphConv(nn.Module):
    r"""Graph convolution with a learned topology and ReLU, on every frame:
    :math:`H' = \mathrm{ReLU}(\hat{A} H W + b)`.

    Args:
        in_channels (int): :math:`C_{in}`.
        out_channels (int): :math:`C_{out}`.
        topology (Tensor): initial :math:`\hat{A}` ``[V, V]`` (e.g. the normalised bones);
            ``A[i, j]`` weighs the message from joint ``j`` to joint ``i``.

    Shapes:
        - **input:** :math:`(*, V, C_{in})`
        - **output:** :math:`(*, V, C_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, topology: Tensor) -> None:
        super().__init__()
        self.lin = nn.Linear(in_channels, out_channels, bias=False)
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.register_buffer("initial_topology", topology.clone(), persistent=False)
        self.topology = nn.Parameter(topology.clone())
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialises the weight (PyTorch's linear default), zeroes the bias and restores the
        initial topology."""
        self.lin.reset_parameters()
        nn.init.zeros_(self.bias)
        with torch.no_grad():
            self.topology.copy_(self.initial_topology)

    def forward(self, x: Tensor) -> Tensor:
        h = self.lin(x)
        frames = h.reshape(-1, *h.shape[-2:])
        # One batched product with the (stride-0) expanded topology: no copy of either operand.
        out = torch.bmm(self.topology.expand(frames.size(0), -1, -1), frames)
        # In place (a bias inside the product would cost a full copy), and on the product itself
        # rather than a view of it, which would make autograd copy the gradient back and forth.
        return out.add_(self.bias).relu_().view(h.shape)


class EncoderBlock(nn.Module):
    r"""SA-GC within every frame, then causal temporal attention (and MLP) along every joint.

    Shapes:
        - **input:** :math:`(B, V, T, D)`, node mask :math:`(B \cdot V, T)` or :obj:`None`
        - **output:** :math:`(B, V, T, D)`
    """

    def __init__(self, spatial: SAGC, temporal: CausalTemporalAttention) -> None:
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal

    def forward(self, h: Tensor, node_mask: Tensor | None) -> Tensor:
        B, V, T, D = h.shape
        h = self.spatial.forward_dense(h)
        return self.temporal(h.view(B * V, T, D), node_mask).view(B, V, T, D)

    def step(self, h: Tensor, cache: KVCache) -> Tensor:
        """One frame :math:`(B, V, D) \\to (B, V, D)`, using and updating the temporal cache."""
        B, V, D = h.shape
        h = self.spatial.forward_dense(h.unsqueeze(2))
        return self.temporal.step(h.view(B * V, D), cache)[0].view(B, V, D)


class _FramePlan:
    """:class:`InfoGCN2` frozen for :meth:`InfoGCN2.step` at inference: every layer's constants
    made once (see :class:`~skelgraph.nn.sagc.SAGCFrame`,
    :class:`~skelgraph.nn.temporal.TemporalFrame`, :class:`~skelgraph.nn.ode.RK4Frame`), the
    embedding's joint table and the transposed weights of the decoder and the classifier.

    It advances :math:`B` independent streams by one frame together, each with its own
    one-stream state (so each at its own frame): with an attention window their ring buffers
    are stacked along the nodes for one batched computation and each stream's new key and value
    written back to its own ring. The whole frame (embedding to logits) is traced once per
    :math:`B` with :func:`torch.jit.trace`, which runs the same operations without Python in
    between; a trace is used when it gives the eager result to 1e-5 on its first frame, and the
    eager form otherwise (or when tracing fails). Without a window the streams run one by one
    in eager form."""

    def __init__(self, model: InfoGCN2) -> None:
        with torch.no_grad():
            self.joint_features = tuple(model.features.features) == ("joint",)
            self.embedding_t = model.embedding.weight.detach().t().contiguous()
            self.table = model._table().detach().squeeze(1)  # [V, D]
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
            self.classifier = (
                model.classifier.weight.detach().t().contiguous(),
                model.classifier.bias.detach(),
            )
            windows = {block.temporal.window for block in model.encoder}
            self.window = windows.pop() if len(windows) == 1 else None
            V = model.layout.num_joints
            self.ring_biases = (
                None
                if self.window is None
                else [
                    _ring_biases(block.temporal.slopes, V, self.window) for block in model.encoder
                ]
            )
            device = self.table.device
            self.slots = [torch.tensor([slot], device=device) for slot in range(self.window or 0)]
            # per slot, every layer's bias as the traced frame takes it (made once: no view
            # per frame)
            self.slot_biases = [
                [biases[slot].view(-1, 1, self.window) for biases in self.ring_biases or ()]
                for slot in range(self.window or 0)
            ]
        self.features = model.features
        self.num_joints = V
        # sizes as Python numbers, so that a trace records no shape arithmetic
        self.node_shape = (V, self.table.size(1))
        # (streams computed, some left unchanged) -> the traced frame, False when not usable
        self.traced: dict[tuple[int, bool], Any] = {}

    def __call__(self, x_t: Tensor, states: Sequence[InfoGCN2State]) -> tuple[Tensor, Tensor]:
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
        for cache, bias, (_, held, _) in zip(caches, self.slot_biases[slot], claims, strict=True):
            if held < self.window:  # slots not written yet take no attention
                bias = bias.clone()
                bias[..., held:] = float("-inf")
            tensors += (cache.key, cache.value, bias)
        return self._run((1, False), features, self.slots[slot], tensors)

    def _batched(self, features: Tensor, states: Sequence[InfoGCN2State]) -> tuple[Tensor, Tensor]:
        r"""The frame of :math:`B \geq 2` streams with window rings, in one pass over the rows
        of their slab."""
        B, device = len(states), features.device
        slab = _Slab.common(states)
        if slab is None or slab.size > 2 * B:  # new company: move their rings together
            slab = _Slab(states)
        size = slab.size
        order = [state.row for state in states]
        rows = None if order == list(range(size)) else torch.tensor(order, device=device)
        if rows is not None:  # to the slab's row order (its other streams: zeros, unused)
            padded = features.new_zeros((size, *features.shape[1:]))
            features = padded.index_copy_(0, rows, features)
        stepped = {state.row: state for state in states}
        idle = [(0, self.window, 0)] * len(self.ring_biases)  # any slot, untouched
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
        weight_t, bias = self.classifier
        joints = h.view(-1, V * self.head[-1].out_channels)  # mean_v W_v h_v = [h_1 … h_V] W / V
        logits = torch.addmm(bias, joints, weight_t, alpha=1 / V)
        return logits, forecast.transpose(0, 1)


class _Slab:
    r"""The window rings of :math:`R` streams stacked along the nodes: per encoder layer one key
    and one value tensor :math:`(R V, H, W, D)`, whose row :math:`r` (nodes
    :math:`r V \dots (r + 1) V - 1`) is the :class:`~skelgraph.nn.temporal.KVCache` of the
    stream in row :math:`r`. A batched step over exactly these streams then attends with one
    product per layer, reading every ring in place.

    Making one moves the given streams' rings into it (each state's caches become views of its
    row). A later step of some of its streams computes all rows and leaves the others' rings
    unchanged (cheaper than moving rings around while streams come and go); a stream stepped
    alone uses its row directly."""

    def __init__(self, states: Sequence[InfoGCN2State]) -> None:
        self.layers = []
        for layer in range(len(states[0].caches)):
            caches = [state.caches[layer] for state in states]
            key = torch.cat([cache.key for cache in caches])
            value = torch.cat([cache.value for cache in caches])
            self.layers.append((key, value))
            rows = zip(key.chunk(len(states)), value.chunk(len(states)), strict=True)
            for cache, (row_key, row_value) in zip(caches, rows, strict=True):
                cache.key, cache.value = row_key, row_value
        for row, state in enumerate(states):
            state.slab, state.row = self, row
        self.size = len(states)

    @staticmethod
    def common(states: Sequence[InfoGCN2State]) -> _Slab | None:
        """The slab holding all of ``states``, else :obj:`None`."""
        slab = states[0].slab
        return slab if slab is not None and all(s.slab is slab for s in states) else None


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


def _ring_biases(slopes: Tensor, num_nodes: int, window: int) -> Tensor:
    r"""The position bias :math:`(W, N H, 1, W)` of a ring of :math:`W` slots for every slot of
    the new frame: entry ``[s, n·H + h, 0, j]`` is :math:`-m_h ((s - j) \bmod W)`."""
    slots = torch.arange(window, device=slopes.device)
    distance = (slots[:, None] - slots[None, :]).remainder(window).float()  # [slot, j]
    bias = -(slopes[None, :, None] * distance[:, None, :])  # [W, H, W]
    return bias.repeat(1, num_nodes, 1).unsqueeze(2).contiguous()


@dataclass
class InfoGCN2State:
    r"""What :meth:`InfoGCN2.step` carries from one frame to the next.

    Attributes:
        batch_size (int): streams :math:`B` advanced together.
        caches (list[KVCache]): the key/value cache of every encoder block's temporal layer,
            over :math:`B \cdot V` nodes.
        previous (Tensor, optional): the joints of the last frame :math:`(B, V, C)`
            (:obj:`None` before the first frame), for the velocity features.
        frames (int): frames processed so far.
    """

    batch_size: int
    caches: list[KVCache]
    previous: Tensor | None = None
    frames: int = 0
    slab: _Slab | None = field(default=None, repr=False, compare=False)
    row: int = field(default=0, repr=False, compare=False)


@register_model("infogcn2")
class InfoGCN2(SkeletonModel):
    r"""InfoGCN++: SA-GC + causal temporal attention encoder, neural-ODE rollout, future-motion
    decoder and per-step classification head (see the module description).

    Args:
        num_classes (int): classes :math:`K`.
        layout (str or Layout or dict): joint layout. (default: ``"coco17"``)
        in_channels (int): channels :math:`C` per joint, confidence last. (default: :obj:`3`)
        features (sequence of str): input features computed from the joints by
            :class:`~skelgraph.features.InputFeatures`, e.g. ``["joint", "bone", "velocity"]``.
            (default: ``["joint"]``)
        channels (int): latent size :math:`D`. (default: :obj:`64`)
        depth (int): encoder blocks. (default: :obj:`4`)
        sagc_heads (int): SA-GC heads of the encoder. (default: :obj:`3`)
        temporal_heads (int): temporal attention heads. (default: :obj:`4`)
        mlp_ratio (float): hidden width of the temporal blocks' MLP over :math:`D`.
            (default: :obj:`2.0`)
        num_future (int): rollout steps :math:`N`. (default: :obj:`3`)
        step_size (float): rk4 step and frame spacing of the rollout. (default: :obj:`1.0`)
        ode_depth (int): SA-GC layers of the dynamics. (default: :obj:`1`)
        ode_heads (int): SA-GC heads of the dynamics. (default: :obj:`1`)
        ode_solver (str): ``"fused_rk4"`` or a fixed-step :func:`torchdiffeq.odeint` method
            (:data:`~skelgraph.nn.ode.FIXED_STEP_METHODS`). (default: ``"fused_rk4"``)
        head_channels (int): width of the classification head's SA-GC layers.
            (default: :obj:`288`)
        head_heads (int): SA-GC heads of the classification head. (default: :obj:`1`)
        decoder_channels (int): width of the motion decoder's graph convolutions.
            (default: :obj:`32`)
        dropout (float): dropout of the temporal blocks. (default: :obj:`0.0`)
        attention_window (int, optional): frames each temporal attention layer looks back over,
            the current one included (:class:`~skelgraph.nn.temporal.CausalTemporalAttention`'s
            ``window``); :obj:`None` for all earlier frames. Set it to the training window to
            stream with constant cost per frame. (default: :obj:`None`)
        reduce (str): how :meth:`ModelOutput.video_logits` turns the per-step logits into clip
            scores by default: ``"last"`` real step or ``"mean"`` over the real steps.
            (default: ``"last"``)
        lambda_pred (float): :math:`\lambda_1` of the loss. (default: :obj:`0.1`)
        lambda_feat (float): :math:`\lambda_2` of the loss. (default: :obj:`0.1`)
        label_smoothing (float): of the classification loss. (default: :obj:`0.1`)
        detach_feature_target (bool): stop-gradient on the feature-consistency target.
            (default: :obj:`True`)

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** :class:`ModelOutput` with ``logits`` :math:`(B, T, K)`, ``forecast``
          :math:`(B, T, N, V, C - 1)`, ``latents`` :math:`(B, V, T, D)`, ``latent_pred``
          :math:`(B, T, N, V, D)`
    """

    def __init__(
        self,
        num_classes: int,
        layout: str | Layout | Mapping[str, Any] = "coco17",
        in_channels: int = 3,
        *,
        features: Sequence[str] = ("joint",),
        channels: int = 64,
        depth: int = 4,
        sagc_heads: int = 3,
        temporal_heads: int = 4,
        mlp_ratio: float = 2.0,
        num_future: int = 3,
        step_size: float = 1.0,
        ode_depth: int = 1,
        ode_heads: int = 1,
        ode_solver: str = "fused_rk4",
        head_channels: int = 288,
        head_heads: int = 1,
        decoder_channels: int = 32,
        dropout: float = 0.0,
        attention_window: int | None = None,
        reduce: str = "last",
        lambda_pred: float = 0.1,
        lambda_feat: float = 0.1,
        label_smoothing: float = 0.1,
        detach_feature_target: bool = True,
    ) -> None:
        super().__init__()
        layout = resolve_layout(layout)
        for name, value, least in (
            ("num_classes", num_classes, 1),
            ("in_channels", in_channels, 2),  # coordinates and the confidence
            ("channels", channels, 2),
            ("depth", depth, 1),
            ("num_future", num_future, 1),
            ("head_channels", head_channels, 1),
            ("decoder_channels", decoder_channels, 1),
        ):
            if value < least:
                raise ValueError(f"InfoGCN2: {name}: expected an integer >= {least}, got {value}")
        if attention_window is not None and attention_window < 1:
            raise ValueError(
                f"InfoGCN2: attention_window: expected an integer >= 1 or None, "
                f"got {attention_window}"
            )
        if reduce not in REDUCTIONS:
            raise ValueError(f"InfoGCN2: reduce: expected one of {REDUCTIONS}, got {reduce!r}")
        solvers = ("fused_rk4", *FIXED_STEP_METHODS)
        if ode_solver not in solvers:
            raise ValueError(f"InfoGCN2: ode_solver: expected one of {solvers}, got {ode_solver!r}")
        self.layout = layout
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.channels = channels
        self.num_future = num_future
        self.step_size = step_size
        self.ode_solver = ode_solver
        self.reduce = reduce
        V = layout.num_joints
        A = adjacency(layout)
        qk = max(1, channels // 8)  # query/key size of every SA-GC head, as InfoGCN's C / 8

        self.features = InputFeatures(layout, in_channels, features)
        self.embedding = nn.Linear(self.features.out_channels, channels)
        self.joint_embedding = nn.Parameter(torch.empty(V, 1, channels))
        self.encoder = nn.ModuleList(
            EncoderBlock(
                SAGC(
                    channels,
                    channels,
                    sagc_heads,
                    num_nodes=V,
                    adjacency=A,
                    attention_channels=qk,
                    norm="layer",
                ),
                CausalTemporalAttention(
                    channels,
                    temporal_heads,
                    mlp_ratio=mlp_ratio,
                    dropout=dropout,
                    window=attention_window,
                ),
            )
            for _ in range(depth)
        )
        self.dynamics = ODEDynamics(
            channels, V, A, depth=ode_depth, heads=ode_heads, attention_channels=qk
        )
        self.decoder = nn.Sequential(
            GraphConv(channels, decoder_channels, A),
            GraphConv(decoder_channels, decoder_channels, A),
            nn.Linear(decoder_channels, in_channels - 1),
        )
        head_in = channels * (num_future + 1)
        self.head = nn.ModuleList(
            SAGC(
                c_in,
                head_channels,
                head_heads,
                num_nodes=V,
                adjacency=A,
                attention_channels=qk,
                norm="layer",
            )
            for c_in in (head_in, head_channels)
        )
        # Per-joint classifier weights W_v: the mean over joints of W_v h_v is one product with
        # the concatenated joint features [V·C_head] -> K.
        self.classifier = nn.Linear(V * head_channels, num_classes)
        self.reset_parameters()
        self.register_load_state_dict_post_hook(_drop_frame_plan)

    def reset_parameters(self) -> None:
        """Re-initialises every layer; the joint embedding is drawn from
        :math:`\\mathcal{N}(0, 0.02^2)`."""
        reset_children(self)
        nn.init.normal_(self.joint_embedding, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        """Per-step logits, forecasts and latents for joints ``x`` :math:`(B, V, T, C)` and an
        optional bool frame mask :math:`(B, T)`."""
        check_input("InfoGCN2", x, mask, self.layout.num_joints, self.in_channels)
        B, V, T, _ = x.shape
        node_mask = None
        if mask is not None and not bool(mask.all()):
            node_mask = mask.unsqueeze(1).expand(B, V, T).reshape(B * V, T)

        # (the explicit leading dimension keeps the broadcast add on torch's fast path)
        h = F.linear(self.features(x), self.embedding.weight) + self._table().unsqueeze(0)
        for block in self.encoder:
            h = block(h, node_mask)
        latents = h  # [B, V, T, D]

        z = latents.transpose(1, 2).contiguous()  # [B, T, V, D]: the per-frame layout
        future = self._rollout(z)
        forecast = self.decoder(future).permute(1, 2, 0, 3, 4)
        logits = self._classify(torch.cat([z, *future.unbind(0)], dim=-1))
        return ModelOutput(
            logits=logits,
            forecast=forecast,
            latents=latents,
            latent_pred=future.permute(1, 2, 0, 3, 4),
            mask=mask,
            reduce=self.reduce,
        )

    def init_state(self, batch_size: int = 1) -> InfoGCN2State:
        """The state before the first frame of ``batch_size`` streams, for :meth:`step`."""
        if batch_size < 1:
            raise ValueError(f"InfoGCN2.init_state: batch_size: expected >= 1, got {batch_size}")
        nodes = batch_size * self.layout.num_joints
        caches = [block.temporal.init_cache(nodes) for block in self.encoder]
        return InfoGCN2State(batch_size=batch_size, caches=caches)

    def step(self, x_t: Tensor, state: InfoGCN2State) -> tuple[Tensor, Tensor, InfoGCN2State]:
        r"""Advances the streams by one frame.

        Frame by frame from :meth:`init_state`, the outputs equal :meth:`forward`'s per-step
        logits and forecasts of the whole clip (to float rounding), also beyond
        ``attention_window`` frames. Meant for inference (e.g. under
        :func:`torch.inference_mode`); ``state`` is updated in place and returned.

        Args:
            x_t (Tensor): the new frame's joints :math:`(B, V, C)`, confidence last.
            state (InfoGCN2State): from :meth:`init_state` or the previous call.

        Returns:
            (Tensor, Tensor, InfoGCN2State): logits :math:`(B, K)`, forecast
            :math:`(B, N, V, C - 1)` (frames :math:`t + 1 \dots t + N`) and the state.
        """
        shape = (state.batch_size, self.layout.num_joints, self.in_channels)
        if x_t.shape != shape:
            raise ValueError(
                f"InfoGCN2.step: x_t: expected shape {list(shape)}, got {list(x_t.shape)}"
            )
        if state.batch_size == 1 and self._frozen_inference():
            logits, forecast = self._frame_plan()(x_t, [state])
            state.previous = x_t.clone()
            state.frames += 1
            return logits, forecast, state
        features = self.features.step(x_t, state.previous)
        h = F.linear(features, self.embedding.weight) + self._table().squeeze(1)
        for block, cache in zip(self.encoder, state.caches, strict=True):
            h = block.step(h, cache)
        future = self._rollout(h)  # [N, B, V, D]
        forecast = self.decoder(future).transpose(0, 1)
        logits = self._classify(torch.cat([h, *future.unbind(0)], dim=-1).unsqueeze(1))
        state.previous = x_t.detach().clone()
        state.frames += 1
        return logits.squeeze(1), forecast, state

    def step_streams(
        self, x_t: Tensor, states: Sequence[InfoGCN2State]
    ) -> tuple[Tensor, Tensor, list[InfoGCN2State]]:
        r"""Advances :math:`B` independent streams by one frame each, every stream at its own
        frame (e.g. the clients of a service): ``states[b]`` is stream :math:`b`'s one-stream
        state from :meth:`init_state` ``(1)``, updated in place.

        The outputs equal :meth:`step` on each stream alone (to float rounding). At inference
        with an attention window and an rk4 solver the streams are computed together in one
        batched pass, which costs little more than one stream; otherwise one after the other.

        Args:
            x_t (Tensor): the streams' new frames :math:`(B, V, C)`, confidence last.
            states (sequence of InfoGCN2State): :math:`B` one-stream states.

        Returns:
            (Tensor, Tensor, list[InfoGCN2State]): logits :math:`(B, K)`, forecasts
            :math:`(B, N, V, C - 1)` and the states.
        """
        shape = (len(states), self.layout.num_joints, self.in_channels)
        if x_t.shape != shape:
            raise ValueError(
                f"InfoGCN2.step_streams: x_t: expected shape {list(shape)} (one frame per "
                f"state), got {list(x_t.shape)}"
            )
        sizes = [state.batch_size for state in states]
        if any(size != 1 for size in sizes):
            raise ValueError(
                f"InfoGCN2.step_streams: states: expected one-stream states (init_state(1)), "
                f"got batch sizes {sizes}"
            )
        if not self._frozen_inference():
            return step_each(self, x_t, states)
        logits, forecast = self._frame_plan()(x_t, states)
        frames = x_t.clone()
        for b, state in enumerate(states):
            state.previous = frames[b : b + 1]
            state.frames += 1
        return logits, forecast, list(states)

    def _frozen_inference(self) -> bool:
        """Whether :meth:`step` may use the frozen inference form (:class:`_FramePlan`)."""
        return not (self.training or torch.is_grad_enabled()) and self.ode_solver in (
            "fused_rk4",
            "rk4",
        )

    def _frame_plan(self) -> _FramePlan:
        """The frozen inference form of the model (:class:`_FramePlan`), rebuilt when a
        parameter or buffer changed in place (their version counters), was moved or was
        loaded."""
        tensors = self.__dict__.get("_plan_tensors")
        if tensors is None:
            tensors = [*self.parameters(), *self.buffers()]
            self.__dict__["_plan_tensors"] = tensors
        version = sum(map(_VERSION, tensors))
        cached = self.__dict__.get("_plan")
        if cached is None or cached[0] != version:
            cached = self.__dict__["_plan"] = (version, _FramePlan(self))
        return cached[1]

    def _apply(self, fn: Any, recurse: bool = True) -> InfoGCN2:
        # .to(), .float(), ... : the plan (and its traces) stays when no tensor was replaced,
        # e.g. a move to the device the model is on
        before = [t.data_ptr() for t in self.__dict__.get("_plan_tensors", ())]
        super()._apply(fn, recurse)
        if before != [t.data_ptr() for t in (*self.parameters(), *self.buffers())]:
            _drop_frame_plan(self)
        return self

    def _table(self) -> Tensor:
        """Joint embedding plus the embedding bias, :math:`(V, 1, D)`."""
        return self.joint_embedding + self.embedding.bias

    def _rollout(self, z: Tensor) -> Tensor:
        """:math:`N` states :math:`(N, *, V, D)` from every state of ``z`` :math:`(*, V, D)`,
        with the dynamics' time starting at 0 for each."""
        if self.ode_solver == "fused_rk4":
            return rk4_rollout(self.dynamics, z, self.num_future, self.step_size)
        return rollout(self.dynamics, z, self.num_future, self.step_size, self.ode_solver)

    def _classify(self, h: Tensor) -> Tensor:
        """Head on the per-frame concatenation :math:`(B, T, V, (N+1) D) \\to (B, T, K)`."""
        B, T, V, C = h.shape
        h = h.view(B * T, V, 1, C)
        for layer in self.head:
            h = layer.forward_dense(h)
        # mean_v (W_v h_v + b) = ([h_1 ... h_V] W) / V + b; scaling the small [B·T, K] product
        # (not the features or the weight) costs the least, forward and backward
        logits = torch.add(
            self.classifier.bias, F.linear(h.view(B * T, -1), self.classifier.weight), alpha=1 / V
        )
        return logits.view(B, T, -1)

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """:func:`~skelgraph.models.losses.infogcn2_loss` with this model's weights:
        ``{"loss", "cls", "pred", "feat"}``."""
        return infogcn2_loss(
            out.logits,
            out.forecast,
            out.latents,
            out.latent_pred,
            x,
            y,
            mask,
            lambda_pred=self.config["lambda_pred"],
            lambda_feat=self.config["lambda_feat"],
            label_smoothing=self.config["label_smoothing"],
            detach_feature_target=self.config["detach_feature_target"],
        )


def _drop_frame_plan(model: nn.Module, incompatible_keys: Any = None) -> None:
    """Forgets the cached :class:`_FramePlan` of ``model`` (its tensors were replaced)."""
    model.__dict__.pop("_plan", None)
    model.__dict__.pop("_plan_tensors", None)


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameter count of each top-level part of ``model`` and the total."""
    counts = {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }
    counts.update((name, p.numel()) for name, p in model.named_parameters(recurse=False))
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
