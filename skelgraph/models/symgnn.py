r"""SymGNN (`Li et al., 2021 <https://arxiv.org/abs/1910.02212>`_): symbiotic graph networks that
recognise the action of a clip and predict its next frames with one backbone.

Data flow for joints :math:`X \in \mathbb{R}^{B \times V \times T \times C}` (confidence last):

1. **Input stream** (:class:`~skelgraph.features.InputFeatures`, ``features``): the joints, or the
   bones of the paper's bone-based dual network (§5.5, ``features=["bone"]``: every bone
   :math:`x_v - x_{p(v)}` sits on its centrifugal joint :math:`v`, so the dual graphs are the
   joint graphs, as in 2s-AGCN, and the part graph groups the bones by their child joints).
2. **Difference operator** (§4.3, :func:`~skelgraph.features.difference`): the orders
   ``orders`` of the stream (positions, velocities, accelerations for 0, 1, 2), each with the
   confidence, batch-normalised over the :math:`V \cdot C` channels of every frame: one input per
   branch.
3. **Actional graphs** (§4.1.1, :class:`~skelgraph.nn.actional.ActionalGraphInference`) inferred
   once per clip from the stream and its velocity, shared by every joint-scale layer.
4. **Backbone** (§5.1): one multi-scale GCN per order (:class:`~skelgraph.nn.symgnn.MultiScaleGCN`:
   a stem JGTC block, then JGTC/PGTC pairs with bidirectional fusion, the scales summed), each
   averaged over its real frames: per-joint features of all branches concatenated,
   :math:`\mathbf{Z} \in \mathbb{R}^{B \times V \times D}` (the shared representation).
5. **Recognition head** (§5.2): a two-layer MLP per joint, the mean over the joints, a linear
   classifier: one score vector per clip, ``logits`` :math:`(B, 1, K)`.
6. **Prediction head** (§5.3, :class:`~skelgraph.nn.symgnn.MotionDecoder`): an MLP of
   :math:`\mathbf{Z}` is the GRU's initial state; from the last observed pose with its velocity
   and acceleration (joint coordinates, whatever the stream) and the predicted class
   probabilities (detached, so that the prediction loss trains the backbone and its own head,
   not the classifier), the GRU, its state updated by a joint-scale graph convolution, predicts
   residual displacements frame by frame.

**Time step and observation** (a frame of the preprocessed clip is the step of every
prediction, so the training data must keep the native frame rate: ``data.sampling: window``).
For every sample with last real frame :math:`L`, the model observes frames
:math:`0 \dots o` with :math:`o = \max(L - N, 0)` and predicts frames :math:`o + 1 \dots o + N`
(the paper's protocol: the last :math:`N` frames are the prediction target, the frames before
them the recognition input). In training mode ``forward`` encodes the observed frames only (one
pass): the logits and the forecast both come from it. In evaluation mode the logits come from
all real frames (a second pass), and the forecast holds both the in-window forecast from
:math:`o` (its targets are in the window, so the evaluation measures it) and the forecast of
the true future from :math:`L`.

**Forecast convention.** ``ModelOutput.forecast`` :math:`(B, S, N, V, C - 1)` holds forecasts
made at :math:`S` frames only, named by ``ModelOutput.steps`` :math:`(B, S)` as for a per-step
model that computed some steps: ``forecast[b, k, n - 1]`` predicts frame
``steps[b, k] + n`` from frames :math:`\le` ``steps[b, k]``. Training: :math:`S = 1`, steps
:math:`[o]`; evaluation: :math:`S = 2`, steps :math:`[o, L]` (equal for a one-frame sample).
:meth:`SymGNN.forecast_future` predicts the frames after the last real frame for any horizon.

**Objective** (§5.4): :func:`~skelgraph.models.losses.rollout_l1_loss` (the paper's
:math:`\ell_1` prediction loss, over visible joints) and the cross-entropy, weighted by
:math:`(\alpha, 1 - \alpha)` on the simplex: with ``task_weighting="mgda"`` :math:`\alpha` is
MGDA-UB's min-norm weight of the two task gradients with respect to the shared
representation :math:`\mathbf{Z}` (:func:`~skelgraph.models.losses.mgda_weights`), computed
inside :meth:`SymGNN.loss` from the graph of the forward pass, so the trainer needs no
per-task backward passes and stays model-agnostic; with ``"fixed"`` it is
``recognition_weight``. The weights are logged as the loss terms ``w_cls`` and ``w_pred``;
outside training (no gradients) the last training weights apply.

**Bone-based dual network and fusion** (§5.5): train one model per stream (``features=["joint"]``
and ``["bone"]``: ``skelgraph train --streams symgnn``) and fuse their class scores with
:class:`~skelgraph.models.Ensemble` (``skelgraph ensemble``); an ensemble's forecast is its first
member's.

**Other choices where the paper leaves room**: the AGIM's joint embedding reads every frame and
averages over the real frames (any clip length), its softmax is scaled by :math:`1 / \sqrt{d}`;
:math:`\lambda` defaults to AS-GCN's 0.5 and the structural order to 3 (the paper's best order
for prediction).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from skelgraph.features import InputFeatures, difference
from skelgraph.layouts import Layout
from skelgraph.models.base import (
    AttentionMaps,
    ModelOutput,
    SkeletonModel,
    check_horizon,
    check_input,
    frame_graph,
    last_real_step,
    resolve_layout,
)
from skelgraph.models.losses import (
    MGDA_NORMALIZATIONS,
    classification_loss,
    mgda_weights,
    rollout_l1_loss,
)
from skelgraph.models.registry import register_model
from skelgraph.models.stgcn import real_frame_weights
from skelgraph.nn.actional import ActionalGraphInference, PointMLP
from skelgraph.nn.symgnn import JointGraphConv, MotionDecoder, MultiScaleGCN

__all__ = ["SYMGNN_CHANNELS", "SYMGNN_FUSION", "SYMGNN_STRIDES", "TASK_WEIGHTINGS", "SymGNN"]

#: The paper's backbone for NTU RGB+D and Kinetics: widths and temporal strides of the nine
#: JGTC/PGTC pairs, and the pairs after which the scales are fused (those before a stride).
SYMGNN_CHANNELS = (64, 64, 64, 128, 128, 128, 256, 256, 256)
SYMGNN_STRIDES = (1, 1, 1, 2, 1, 1, 2, 1, 1)
SYMGNN_FUSION = (2, 5)

#: How :meth:`SymGNN.loss` weighs recognition and prediction.
TASK_WEIGHTINGS = ("mgda", "fixed")


@dataclass
class _Encoding:
    """The backbone's outputs on the frames it was shown."""

    shared: Tensor  # [B, V, D] per-joint features of every branch
    actional: Tensor  # [B, L_a, V, V]
    logits: Tensor  # [B, K]


@register_model("symgnn")
class SymGNN(SkeletonModel):
    r"""SymGNN: multi-branch multi-scale graph backbone, recognition head and GRU motion decoder,
    trained with MGDA task weights (see the module description).

    Args:
        num_classes (int): classes :math:`K`.
        layout (str or Layout or dict): joint layout; it needs body parts (``Layout.parts``).
            (default: ``"coco17"``)
        in_channels (int): channels :math:`C` per joint, confidence last. (default: :obj:`3`)
        features (sequence of str): the input stream (:class:`~skelgraph.features.InputFeatures`;
            ``["bone"]`` for the dual network). (default: ``["joint"]``)
        orders (sequence of int): difference orders, one backbone branch each.
            (default: ``[0, 1, 2]``)
        channels (sequence of int): widths of the JGTC/PGTC pairs of every branch (the stem has
            the first). (default: the paper's nine)
        strides (sequence of int): temporal strides of the pairs. (default: the paper's)
        fusion (sequence of int): pairs (0-based) after which the scales are fused.
            (default: ``[2, 5]``)
        kernel_size (int): temporal kernel. (default: :obj:`9`)
        dropout (float): dropout of the temporal units, the MLPs and the AGIM.
            (default: :obj:`0.0`)
        structural_order (int): highest power :math:`L` of the structural graphs.
            (default: :obj:`3`)
        link_types (int): actional graphs per clip :math:`L_a`. (default: :obj:`1`)
        lambda_act (float): :math:`\lambda`, weight of the actional graph convolution.
            (default: :obj:`0.5`)
        agim_channels (int): width of the AGIM's joint and edge features. (default: :obj:`128`)
        agim_embed_channels (int): size of the AGIM's two embeddings. (default: :obj:`64`)
        agim_iterations (int): the AGIM's joint/edge passes :math:`K`. (default: :obj:`2`)
        head_channels (int): hidden width of the recognition MLP. (default: :obj:`256`)
        decoder_channels (int): GRU state and output-MLP width. (default: :obj:`256`)
        num_future (int): frames :math:`N` predicted in training and evaluation.
            (default: :obj:`10`)
        task_weighting (str): ``"mgda"`` or ``"fixed"``. (default: ``"mgda"``)
        mgda_normalization (str): how the task gradients are normalised before MGDA's min-norm
            point, one of :data:`~skelgraph.models.losses.MGDA_NORMALIZATIONS` (see
            :func:`~skelgraph.models.losses.mgda_weights`). (default: ``"loss+"``)
        recognition_weight (float): :math:`\alpha \in [0, 1]` with ``"fixed"`` (the prediction
            loss gets :math:`1 - \alpha`), and the weight before the first MGDA step.
            (default: :obj:`0.5`)
        label_smoothing (float): of the cross-entropy. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** :class:`ModelOutput` with ``logits`` :math:`(B, 1, K)`, ``forecast``
          :math:`(B, S, N, V, C - 1)`, ``steps`` :math:`(B, S)` and ``extras["shared"]``
          :math:`(B, V, D)`
    """

    def __init__(
        self,
        num_classes: int,
        layout: str | Layout | Mapping[str, Any] = "coco17",
        in_channels: int = 3,
        *,
        features: Sequence[str] = ("joint",),
        orders: Sequence[int] = (0, 1, 2),
        channels: Sequence[int] = SYMGNN_CHANNELS,
        strides: Sequence[int] = SYMGNN_STRIDES,
        fusion: Sequence[int] = SYMGNN_FUSION,
        kernel_size: int = 9,
        dropout: float = 0.0,
        structural_order: int = 3,
        link_types: int = 1,
        lambda_act: float = 0.5,
        agim_channels: int = 128,
        agim_embed_channels: int = 64,
        agim_iterations: int = 2,
        head_channels: int = 256,
        decoder_channels: int = 256,
        num_future: int = 10,
        task_weighting: str = "mgda",
        mgda_normalization: str = "loss+",
        recognition_weight: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        layout = resolve_layout(layout)
        if not layout.parts:
            raise ValueError(
                f"SymGNN: layout {layout.name!r}: parts: expected at least one body part "
                f"(Layout.parts) for the part-scale graphs, got none"
            )
        for name, value, least in (
            ("num_classes", num_classes, 1),
            ("in_channels", in_channels, 2),  # coordinates and the confidence
            ("structural_order", structural_order, 1),
            ("link_types", link_types, 1),
            ("head_channels", head_channels, 1),
            ("decoder_channels", decoder_channels, 1),
            ("num_future", num_future, 1),
        ):
            if value < least:
                raise ValueError(f"SymGNN: {name}: expected an integer >= {least}, got {value}")
        orders = [int(k) for k in orders]
        if not orders or len(set(orders)) != len(orders) or min(orders) < 0:
            raise ValueError(
                f"SymGNN: orders: expected distinct difference orders >= 0, got {orders}"
            )
        if mgda_normalization not in MGDA_NORMALIZATIONS:
            raise ValueError(
                f"SymGNN: mgda_normalization: expected one of {MGDA_NORMALIZATIONS}, "
                f"got {mgda_normalization!r}"
            )
        if task_weighting not in TASK_WEIGHTINGS:
            raise ValueError(
                f"SymGNN: task_weighting: expected one of {TASK_WEIGHTINGS}, got {task_weighting!r}"
            )
        if not 0.0 <= recognition_weight <= 1.0:
            raise ValueError(
                f"SymGNN: recognition_weight: expected a value in [0, 1], got {recognition_weight}"
            )
        self.layout = layout
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.orders = tuple(orders)
        self.num_future = num_future
        self.task_weighting = task_weighting
        self.mgda_normalization = mgda_normalization
        V = layout.num_joints
        graphs = {"order": structural_order, "link_types": link_types, "lambda_act": lambda_act}

        self.features = InputFeatures(layout, in_channels, features)
        c = self.features.out_channels
        self.data_bn = nn.ModuleList(nn.BatchNorm1d(V * c) for _ in orders)
        self.agim = ActionalGraphInference(
            2 * (c - 1) + 1,  # the stream, its velocity, the confidence
            agim_channels,
            agim_embed_channels,
            link_types,
            agim_iterations,
            dropout,
        )
        self.branches = nn.ModuleList(
            MultiScaleGCN(
                c,
                channels,
                strides,
                fusion,
                layout,
                **graphs,
                kernel_size=kernel_size,
                dropout=dropout,
            )
            for _ in orders
        )
        shared = sum(branch.out_channels for branch in self.branches)
        self.recognition = PointMLP(shared, head_channels, head_channels, dropout)
        self.classifier = nn.Linear(head_channels, num_classes)
        self.prediction = PointMLP(shared, decoder_channels, decoder_channels, dropout)
        self.decoder = MotionDecoder(
            in_channels - 1, num_classes, decoder_channels, layout, **graphs
        )
        # (alpha, 1 - alpha): the fixed weights, or MGDA's latest (not saved with the weights)
        weights = torch.tensor([recognition_weight, 1.0 - recognition_weight])
        self.register_buffer("task_weights", weights, persistent=False)

    # -- the backbone and the heads ---------------------------------------------------------------

    def _streams(self, x: Tensor, frames: Tensor) -> tuple[list[Tensor], Tensor]:
        """The branch inputs :math:`(B, C', T, V)` (one per order, batch-normalised) and the
        AGIM input :math:`(B, V, T, 2 (C' - 1) + 1)` of the frames ``frames`` :math:`(B, T)`;
        the other frames are zero, so they never reach the frames shown."""
        B, V, T, _ = x.shape
        shown = frames.to(x.dtype).view(B, 1, T, 1)
        features = self.features(x) * shown
        coords, confidence = features[..., :-1], features[..., -1:]
        inputs = []
        for k, norm in zip(self.orders, self.data_bn, strict=True):
            h = torch.cat([difference(coords, k) * shown, confidence], dim=-1)  # [B, V, T, C']
            c = h.size(-1)
            h = norm(h.transpose(2, 3).reshape(B, V * c, T))
            inputs.append(h.view(B, V, c, T).permute(0, 2, 3, 1).contiguous())
        agim = torch.cat([coords, difference(coords, 1) * shown, confidence], dim=-1)
        return inputs, agim

    def _encode(self, x: Tensor, frames: Tensor) -> _Encoding:
        """The backbone and the recognition head on the frames ``frames`` :math:`(B, T)`."""
        inputs, agim = self._streams(x, frames)
        actional = self.agim(agim, frames)
        pooled = []
        for h, branch in zip(inputs, self.branches, strict=True):
            h = branch(h, actional)  # [B, D_b, T', V]
            weight = real_frame_weights(frames, branch.total_stride, h.size(2), h.dtype)
            pooled.append((h * weight).sum(dim=2) / weight.sum(dim=2))
        shared = torch.cat(pooled, dim=1).transpose(1, 2)  # [B, V, D]
        return _Encoding(shared, actional, self._recognise(shared))

    # The task heads run eagerly even when the model is compiled: MGDA differentiates the losses
    # with respect to the shared representation, which a compiled graph's backward does not
    # expose (it differentiates with respect to the graph's inputs only).

    @torch.compiler.disable
    def _recognise(self, shared: Tensor) -> Tensor:
        """The recognition head: per-joint MLP, mean over the joints, classifier
        :math:`(B, V, D) \to (B, K)`."""
        return self.classifier(self.recognition(shared).mean(dim=1))

    @torch.compiler.disable
    def _decode(self, x: Tensor, origin: Tensor, encoding: _Encoding, steps: int) -> Tensor:
        """``steps`` frames :math:`(B, N, V, C - 1)` after frame ``origin`` :math:`(B,)`."""
        coords = x[..., :-1]
        batch = torch.arange(x.size(0), device=x.device)
        pose = coords[batch, :, origin]  # [B, V, C - 1]
        before = coords[batch, :, (origin - 1).clamp(min=0)]
        earlier = coords[batch, :, (origin - 2).clamp(min=0)]
        velocity = pose - before  # zero at the first frame
        # the second difference, zero where the clip holds none (as the difference operator)
        acceleration = (velocity - (before - earlier)) * (origin >= 2).to(x.dtype).view(-1, 1, 1)
        label = encoding.logits.detach().float().softmax(dim=-1)
        state = self.prediction(encoding.shared)
        return self.decoder(state, pose, velocity, acceleration, label, encoding.actional, steps)

    def _frames(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """The real frames :math:`(B, T)` and every sample's last real frame :math:`(B,)`."""
        B, _, T, _ = x.shape
        real = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask
        return real, last_real_step(real)

    # -- the interface ----------------------------------------------------------------------------

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        """Clip scores and forecasts for joints ``x`` :math:`(B, V, T, C)` and an optional bool
        frame mask :math:`(B, T)` (see the module description for what is observed)."""
        check_input("SymGNN", x, mask, self.layout.num_joints, self.in_channels)
        real, last = self._frames(x, mask)
        origin = (last - self.num_future).clamp(min=0)
        frame = torch.arange(x.size(2), device=x.device)
        observed = real & (frame.unsqueeze(0) <= origin.unsqueeze(1))
        prefix = self._encode(x, observed)
        forecast = self._decode(x, origin, prefix, self.num_future).unsqueeze(1)
        logits, steps = prefix.logits, origin.unsqueeze(1)
        if not self.training:
            clip = self._encode(x, real)
            future = self._decode(x, last, clip, self.num_future)
            logits = clip.logits
            forecast = torch.cat([forecast, future.unsqueeze(1)], dim=1)
            steps = torch.stack([origin, last], dim=1)
        return ModelOutput(
            logits=logits.unsqueeze(1),
            forecast=forecast,
            mask=mask,
            extras={"shared": prefix.shared},
            steps=steps,
        )

    def clip_logits(
        self, x: Tensor, mask: Tensor | None = None, reduce: str | None = None
    ) -> Tensor:
        """Clip scores :math:`(B, K)`, as :meth:`forward` gives them; in evaluation mode from
        one pass over all real frames, without the forecasts."""
        if self.training:
            return super().clip_logits(x, mask, reduce)
        check_input("SymGNN", x, mask, self.layout.num_joints, self.in_channels)
        return self._encode(x, self._frames(x, mask)[0]).logits

    def forecast_future(self, x: Tensor, mask: Tensor | None, horizon: int) -> Tensor:
        r"""The next ``horizon`` frames after every sample's last real frame, predicted from all
        its real frames: :math:`(B, \mathit{horizon}, V, C - 1)`, coordinates only, in the space
        of ``x`` :math:`(B, V, T, C)` (the preprocessed clip), one frame of ``x`` per step. Any
        horizon works (the decoder rolls out frame by frame); it was trained on ``num_future``.
        Runs in the model's current mode (call :meth:`eval` first for inference)."""
        check_input("SymGNN", x, mask, self.layout.num_joints, self.in_channels)
        horizon = check_horizon("SymGNN.forecast_future", horizon)
        real, last = self._frames(x, mask)
        return self._decode(x, last, self._encode(x, real), horizon)

    def attention(self, x: Tensor, mask: Tensor | None = None) -> AttentionMaps:
        """:meth:`forward` and the graphs it used on the frames its logits read: the actional
        graphs (rows summing to 1) as ``attention["agim"]``, every joint-scale graph convolution's
        :math:`L + L_a` graphs (structural, then :math:`\\lambda` times actional) as ``graphs``
        and its structural graphs as ``topology``, named by module."""
        output = self(x, mask)
        real, last = self._frames(x, mask)
        if self.training:
            frame = torch.arange(x.size(2), device=x.device)
            origin = (last - self.num_future).clamp(min=0)
            real = real & (frame.unsqueeze(0) <= origin.unsqueeze(1))
        actional = self.agim(self._streams(x, real)[1], real)
        maps = AttentionMaps(output, attention={"agim": frame_graph(actional, x.size(0))})
        for name, module in self.named_modules():
            if isinstance(module, JointGraphConv):
                maps.graphs[name] = frame_graph(module.graph(actional), x.size(0))
                maps.topology[name] = module.structural_graphs().detach()
        return maps

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        r""":math:`\alpha \mathcal{L}_{\mathrm{cls}} + (1 - \alpha)
        \mathcal{L}_{\mathrm{pred}}` (see the module description):
        ``{"loss", "cls", "pred", "w_cls", "w_pred"}``."""
        if out.forecast is None or out.steps is None:
            raise ValueError("SymGNN.loss: out: expected the output of SymGNN.forward")
        cls = classification_loss(out.logits, y, label_smoothing=self.config["label_smoothing"])
        pred = rollout_l1_loss(out.forecast, x, out.steps, mask)
        shared = out.extras.get("shared")
        if (
            self.task_weighting == "mgda"
            and torch.is_grad_enabled()
            and shared is not None
            and shared.requires_grad
        ):
            weights = mgda_weights([cls, pred], shared, self.mgda_normalization)
            if self.training:
                self.task_weights.copy_(weights)
        else:
            weights = self.task_weights.clone()
        weights = weights.to(cls.device)
        total = weights[0] * cls + weights[1] * pred
        return {"loss": total, "cls": cls, "pred": pred, "w_cls": weights[0], "w_pred": weights[1]}
