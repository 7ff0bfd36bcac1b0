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
   product with the concatenated joint features. With ``information_bottleneck=True`` InfoGCN's
   latent head (:class:`~skelgraph.nn.InformationBottleneck`) takes the per-joint map's place:
   the head's features of every frame, averaged over the joints, become the latent
   :math:`\mathbf{z}_t` (sampled in training, its mean in evaluation; ``extras["z"]``
   :math:`(B, T, D)`, :math:`D` = ``head_channels``) that the classifier reads, and the loss adds
   InfoGCN's two latent terms over the real steps
   (:func:`~skelgraph.models.losses.bottleneck_terms`), so that the two objectives can be
   compared on this architecture. Off by default.

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
windows of at most :math:`W` frames is unaffected by the window. For serving, a frame plan
(:class:`skelgraph.streaming.FramePlan`, built from the trained model) steps the same states with
every layer frozen, and many streams together.

**Forecasting any horizon**: :meth:`InfoGCN2.forecast_future` predicts the frames after every
sample's last real frame for any horizon, by continuing the ODE rollout beyond :math:`N` steps
(the decoder and the dynamics are not tied to :math:`N`) or by feeding its forecast back
:math:`N` frames at a time (:class:`~skelgraph.models.base.Forecaster`).

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skelgraph.features import InputFeatures
from skelgraph.layouts import Layout
from skelgraph.layouts.graph import adjacency
from skelgraph.models.base import (
    REDUCTIONS,
    AttentionMaps,
    ModelOutput,
    SkeletonModel,
    check_horizon,
    check_input,
    last_real_step,
    resolve_layout,
)
from skelgraph.models.losses import bottleneck_terms, infogcn2_loss
from skelgraph.models.registry import register_model
from skelgraph.nn.bottleneck import InformationBottleneck
from skelgraph.nn.ode import FIXED_STEP_METHODS, ODEDynamics, rk4_rollout, rollout
from skelgraph.nn.sagc import SAGC
from skelgraph.nn.stgcn import reset_children
from skelgraph.nn.temporal import CausalTemporalAttention, KVCache

__all__ = ["FORECAST_ROLLOUTS", "GraphConv", "InfoGCN2", "InfoGCN2State", "parameter_breakdown"]

#: How :meth:`InfoGCN2.forecast_future` reaches beyond the trained :math:`N` steps.
FORECAST_ROLLOUTS = ("ode", "autoregressive")


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

    def forward(
        self,
        h: Tensor,
        node_mask: Tensor | None,
        return_attention: bool = False,
        queries: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        r"""With ``return_attention``, also the SA-GC attention :math:`(B, T, H, V, V)` (before
        the topology) and the temporal attention :math:`(B, V, H', T, T)`. With frame indices
        ``queries`` :math:`(B \cdot V, S)`, the output :math:`(B, V, S, D)` (and the temporal
        attention :math:`(B, V, H', S, T)`) at those frames only."""
        B, V, T, D = h.shape
        if not return_attention:
            h = self.spatial.forward_dense(h)
            h = self.temporal(h.view(B * V, T, D), node_mask, queries=queries)
            return h.view(B, V, -1, D)
        h, spatial = self.spatial.forward_dense(h, return_attention=True)
        h, temporal = self.temporal(
            h.view(B * V, T, D), node_mask, return_attention=True, queries=queries
        )
        return h.view(B, V, -1, D), spatial, temporal.view(B, V, *temporal.shape[1:])

    def step(self, h: Tensor, cache: KVCache) -> Tensor:
        """One frame :math:`(B, V, D) \\to (B, V, D)`, using and updating the temporal cache."""
        B, V, D = h.shape
        h = self.spatial.forward_dense(h.unsqueeze(2))
        return self.temporal.step(h.view(B * V, D), cache)[0].view(B, V, D)


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
        slab, row: where a frame plan that batches one-stream states keeps this stream's caches
            (:class:`~skelgraph.streaming.slab.Slab`), :obj:`None` and 0 until one does.
    """

    batch_size: int
    caches: list[KVCache]
    previous: Tensor | None = None
    frames: int = 0
    slab: Any = field(default=None, repr=False, compare=False)
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
        information_bottleneck (bool): classify every step through InfoGCN's latent head and
            add its objective (see the module description). (default: :obj:`False`)
        prior_gain (float): norm of the bottleneck's class prior means. (default: :obj:`3.0`)
        noise_ratio (float): exponent scale of the latent's standard deviation.
            (default: :obj:`0.5`)
        prior_seed (int): seed of the class prior means. (default: :obj:`0`)
        ib_lambda_1 (float): weight of the norm of the mean latent. (default: :obj:`1e-4`)
        ib_lambda_2 (float): weight of the class means' distance to their priors.
            (default: :obj:`0.1`)

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** :class:`ModelOutput` with ``logits`` :math:`(B, T, K)`, ``forecast``
          :math:`(B, T, N, V, C - 1)`, ``latents`` :math:`(B, V, T, D)`, ``latent_pred``
          :math:`(B, T, N, V, D)`; with the bottleneck ``extras["z"]``
          :math:`(B, T, C_{head})`
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
        information_bottleneck: bool = False,
        prior_gain: float = 3.0,
        noise_ratio: float = 0.5,
        prior_seed: int = 0,
        ib_lambda_1: float = 1e-4,
        ib_lambda_2: float = 0.1,
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
        if information_bottleneck and head_channels < num_classes:
            raise ValueError(
                f"InfoGCN2: head_channels: expected at least num_classes = {num_classes} with "
                f"information_bottleneck (the latent holds one orthogonal prior mean per "
                f"class), got {head_channels}"
            )
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
        self.bottleneck: InformationBottleneck | None = None
        if information_bottleneck:
            self.bottleneck = InformationBottleneck(
                head_channels,
                num_classes,
                prior_gain=prior_gain,
                noise_ratio=noise_ratio,
                prior_seed=prior_seed,
            )
        else:
            # Per-joint classifier weights W_v: the mean over joints of W_v h_v is one product
            # with the concatenated joint features [V·C_head] -> K.
            self.classifier = nn.Linear(V * head_channels, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialises every layer; the joint embedding is drawn from
        :math:`\\mathcal{N}(0, 0.02^2)`."""
        reset_children(self)
        nn.init.normal_(self.joint_embedding, std=0.02)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, steps: str | Tensor | None = None
    ) -> ModelOutput:
        """Per-step logits, forecasts and latents for joints ``x`` :math:`(B, V, T, C)` and an
        optional bool frame mask :math:`(B, T)`.

        The encoder runs on every frame up to its last block (step :math:`t` attends to the
        frames before it); ``steps`` chooses where the last block's temporal attention and MLP,
        the rollout, the motion decoder and the classification head run, which is most of the
        work of a window: :obj:`None` for every step (training), ``"last"`` for every sample's
        last real frame (a clip-level prediction), or frame indices :math:`(S,)` or
        :math:`(B, S)` in increasing order. The steps computed equal those of the full pass (to
        float rounding); ``logits``, ``forecast``, ``latent_pred`` and ``latents``
        (:math:`(B, V, S, D)`) then hold :math:`S` steps and :attr:`ModelOutput.steps` their
        indices.
        """
        return self._forward(x, mask, steps=steps)

    def clip_logits(
        self, x: Tensor, mask: Tensor | None = None, reduce: str | None = None
    ) -> Tensor:
        """Clip-level scores :math:`(B, K)`; for ``reduce="last"`` the rollout and the head run
        at every sample's last real frame only."""
        reduce = self.reduce if reduce is None else reduce
        steps = "last" if reduce == "last" else None
        return self(x, mask, steps=steps).video_logits(reduce, mask)

    def attention(self, x: Tensor, mask: Tensor | None = None) -> AttentionMaps:
        """:meth:`forward` and, per SA-GC layer of the encoder (``"encoder.<l>.spatial"``) and
        the head (``"head.<l>"``), the effective adjacency and the attention it used per frame;
        per encoder block the temporal attention per joint (``"encoder.<l>.temporal"``); and
        the learned topology of every SA-GC layer (the dynamics' included). See
        :class:`~skelgraph.models.base.AttentionMaps`."""
        spatial: dict[str, Tensor] = {}
        temporal: dict[str, Tensor] = {}
        maps = AttentionMaps(self._forward(x, mask, spatial, temporal))
        for name, attention in spatial.items():
            layer = self.get_submodule(name)
            maps.attention[name] = attention
            maps.graphs[name] = attention if layer.topology is None else attention * layer.topology
        maps.temporal.update(temporal)
        for name, module in self.named_modules():
            if isinstance(module, SAGC) and module.topology is not None:
                maps.topology[name] = module.topology.detach()
        return maps

    def _forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        spatial: dict[str, Tensor] | None = None,
        temporal: dict[str, Tensor] | None = None,
        steps: str | Tensor | None = None,
    ) -> ModelOutput:
        """:meth:`forward`; when the dicts are given, the SA-GC attention :math:`(B, T, H, V, V)`
        and the temporal attention :math:`(B, V, H, T, T)` of every layer are stored in them
        under the layer's name."""
        check_input("InfoGCN2", x, mask, self.layout.num_joints, self.in_channels)
        B, _, T, _ = x.shape
        index = self._step_index(steps, mask, B, T, x.device)
        latents = self._encode(x, mask, spatial, temporal, index)  # [B, V, T or S, D]
        z = latents.transpose(1, 2).contiguous()  # [B, T or S, V, D]: the per-frame layout
        future = self._rollout(z)
        forecast = self.decoder(future).permute(1, 2, 0, 3, 4)
        logits, z_step = self._classify(torch.cat([z, *future.unbind(0)], dim=-1), spatial)
        return ModelOutput(
            logits=logits,
            forecast=forecast,
            latents=latents,
            latent_pred=future.permute(1, 2, 0, 3, 4),
            mask=mask,
            extras={} if z_step is None else {"z": z_step},
            reduce=self.reduce,
            steps=index,
        )

    def _encode(
        self,
        x: Tensor,
        mask: Tensor | None,
        spatial: dict[str, Tensor] | None = None,
        temporal: dict[str, Tensor] | None = None,
        index: Tensor | None = None,
    ) -> Tensor:
        """The encoder's latents :math:`Z` :math:`(B, V, T, D)` of checked joints ``x``, or at
        the frames ``index`` :math:`(B, S)` only, :math:`(B, V, S, D)`: every block but the last
        runs on every frame (a step attends to the frames before it), the last one's temporal
        attention and MLP at those frames only. The attention of the layers goes to the dicts
        when both are given (see :meth:`_forward`)."""
        B, V, T, _ = x.shape
        node_mask = None
        if mask is not None and not bool(mask.all()):
            node_mask = mask.unsqueeze(1).expand(B, V, T).reshape(B * V, T)
        queries = None if index is None else index.repeat_interleave(V, dim=0)  # [B·V, S]
        # (the explicit leading dimension keeps the broadcast add on torch's fast path)
        h = F.linear(self.features(x), self.embedding.weight) + self.embedding_table().unsqueeze(0)
        last = len(self.encoder) - 1
        for i, block in enumerate(self.encoder):
            at = queries if i == last else None
            if spatial is None or temporal is None:
                h = block(h, node_mask, queries=at)
            else:
                h, spatial[f"encoder.{i}.spatial"], temporal[f"encoder.{i}.temporal"] = block(
                    h, node_mask, return_attention=True, queries=at
                )
        return h

    def forecast_future(
        self, x: Tensor, mask: Tensor | None, horizon: int, *, rollout: str = "ode"
    ) -> Tensor:
        r"""The next ``horizon`` frames after every sample's last real frame :math:`t_b`
        (:class:`~skelgraph.models.base.Forecaster`), for any horizon :math:`H`.

        The decoder maps one latent state to one pose and the dynamics
        :math:`f_\theta(Z, \tau)` is defined for every :math:`\tau` (a continuous time
        embedding), so neither is tied to the trained number of steps :math:`N`:

        * ``rollout="ode"`` (default): the latent :math:`Z_{t_b}` integrated :math:`H` rk4 steps
          of ``step_size`` (the same steps :meth:`forward` takes, continued) and every state
          decoded, :math:`\hat{X}_{t_b + h} = \mathrm{dec}(\hat{Z}^{(t_b)}_{t_b + h})`. For
          :math:`H \le N` this is ``forward(x, mask, steps="last").forecast[:, 0, :H]``, and
          the first :math:`N` frames of any longer horizon are those; beyond them the dynamics
          is evaluated at times :math:`\tau > N \cdot` ``step_size`` it was never trained on.
        * ``rollout="autoregressive"``: :math:`\min(N, \text{left})` frames at a time, each
          time appended after the observed frames as if observed (every joint with the
          confidence it had in the last real frame) and the encoder run again on the longer
          clip, so the dynamics only ever runs the :math:`N` trained steps.

        The encoder runs on every frame (one pass, or one per chunk of :math:`N`), the rollout
        and the decoder only from :math:`t_b`; the classification head does not run.

        Args:
            x (Tensor): joints :math:`(B, V, T, C)`, confidence last.
            mask (Tensor, optional): bool frame mask :math:`(B, T)`.
            horizon (int): frames :math:`H \ge 1` to predict.
            rollout (str): ``"ode"`` or ``"autoregressive"``. (default: ``"ode"``)

        Returns:
            Tensor: :math:`(B, H, V, C - 1)`, entry ``[b, h - 1]`` frame :math:`t_b + h`.
        """
        name = "InfoGCN2.forecast_future"
        check_input(name, x, mask, self.layout.num_joints, self.in_channels)
        horizon = check_horizon(name, horizon)
        if rollout not in FORECAST_ROLLOUTS:
            raise ValueError(
                f"{name}: rollout: expected one of {FORECAST_ROLLOUTS}, got {rollout!r}"
            )
        B, V, T, C = x.shape
        batch = torch.arange(B, device=x.device)
        last = torch.full((B,), T - 1, device=x.device) if mask is None else last_real_step(mask)
        if rollout == "ode":
            z = self._encode(x, mask)[batch, :, last]  # [B, V, D]
            return self.decoder(self._rollout(z, horizon)).transpose(0, 1)
        # The clip grown by the predicted frames: sample b's next frame goes right after its
        # last real one, over any padding (which no real frame attends to).
        grown = torch.cat([x, x.new_zeros(B, V, horizon, C)], dim=2)
        real = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask
        real = torch.cat([real, real.new_zeros(B, horizon)], dim=1)
        confidence = x[batch, :, last, -1:]  # [B, V, 1]
        chunks: list[Tensor] = []
        for done in range(0, horizon, self.num_future):
            steps = min(self.num_future, horizon - done)
            z = self._encode(grown, real)[batch, :, last]
            chunk = self.decoder(self._rollout(z, steps)).transpose(0, 1)  # [B, steps, V, C-1]
            chunks.append(chunk)
            at = last.unsqueeze(1) + torch.arange(1, steps + 1, device=x.device)  # [B, steps]
            # a new tensor, not an in-place write: the last encoder pass keeps ``grown`` for
            # its gradient
            grown = grown.clone()
            frames = grown.transpose(1, 2)  # [B, T + H, V, C], a view of the new ``grown``
            frames[batch.unsqueeze(1), at] = torch.cat(
                [chunk, confidence.unsqueeze(1).expand(-1, steps, -1, -1)], dim=-1
            )
            real[batch.unsqueeze(1), at] = True
            last = last + steps
        return torch.cat(chunks, dim=1)

    @staticmethod
    def _step_index(
        steps: str | Tensor | None, mask: Tensor | None, B: int, T: int, device: torch.device
    ) -> Tensor | None:
        """The frame indices :math:`(B, S)` that ``steps`` asks for (see :meth:`forward`), or
        :obj:`None` for every step."""
        if steps is None:
            return None
        if isinstance(steps, str):
            if steps != "last":
                raise ValueError(
                    f"InfoGCN2: steps: expected None, 'last' or frame indices, got {steps!r}"
                )
            last = torch.full((B,), T - 1, device=device) if mask is None else last_real_step(mask)
            return last.unsqueeze(1)
        index = torch.as_tensor(steps, dtype=torch.long, device=device)
        if index.dim() == 1:
            index = index.expand(B, -1)
        if (
            index.dim() != 2
            or index.size(0) != B
            or index.numel() == 0
            or bool((index < 0).any() | (index >= T).any())
            or bool((index.diff(dim=1) <= 0).any())
        ):
            raise ValueError(
                f"InfoGCN2: steps: expected increasing frame indices in [0, {T}) of shape [S] or "
                f"[{B}, S], got {steps.tolist() if isinstance(steps, Tensor) else steps!r}"
            )
        return index

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
        :func:`torch.inference_mode`); ``state`` is updated in place and returned. This runs the
        modules themselves; a frame plan (:func:`skelgraph.streaming.build_plan`) steps the same
        states to the same outputs (to float rounding) at a fraction of the cost.

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
        features = self.features.step(x_t, state.previous)
        h = F.linear(features, self.embedding.weight) + self.embedding_table().squeeze(1)
        for block, cache in zip(self.encoder, state.caches, strict=True):
            h = block.step(h, cache)
        future = self._rollout(h)  # [N, B, V, D]
        forecast = self.decoder(future).transpose(0, 1)
        logits, _ = self._classify(torch.cat([h, *future.unbind(0)], dim=-1).unsqueeze(1))
        state.previous = x_t.detach().clone()
        state.frames += 1
        return logits.squeeze(1), forecast, state

    def embedding_table(self) -> Tensor:
        """Joint embedding plus the embedding bias, :math:`(V, 1, D)`."""
        return self.joint_embedding + self.embedding.bias

    def _rollout(self, z: Tensor, steps: int | None = None) -> Tensor:
        """``steps`` (default :math:`N`) states :math:`(S, *, V, D)` from every state of ``z``
        :math:`(*, V, D)`, with the dynamics' time starting at 0 for each."""
        steps = self.num_future if steps is None else steps
        if self.ode_solver == "fused_rk4":
            return rk4_rollout(self.dynamics, z, steps, self.step_size)
        return rollout(self.dynamics, z, steps, self.step_size, self.ode_solver)

    def _classify(
        self, h: Tensor, spatial: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Head on the per-frame concatenation :math:`(B, T, V, (N+1) D) \\to (B, T, K)`, and
        with the bottleneck the latent of every frame :math:`(B, T, C_{head})` (else
        :obj:`None`); the attention of its layers :math:`(B, T, H, V, V)` goes to ``spatial``
        when given."""
        B, T, V, C = h.shape
        h = h.view(B * T, V, 1, C)
        for i, layer in enumerate(self.head):
            if spatial is None:
                h = layer.forward_dense(h)
            else:
                h, attention = layer.forward_dense(h, return_attention=True)
                spatial[f"head.{i}"] = attention.view(B, T, *attention.shape[2:])
        if self.bottleneck is not None:
            out = self.bottleneck(h.view(B, T, V, -1).mean(dim=2))
            return out.logits, out.z
        # mean_v (W_v h_v + b) = ([h_1 ... h_V] W) / V + b; scaling the small [B·T, K] product
        # (not the features or the weight) costs the least, forward and backward
        joints = h.view(B * T, -1)
        if torch.compiler.is_compiling():
            # torch.compile drops the alpha of torch.add(bias, product, alpha=...); addmm keeps
            # it (eager keeps torch.add, whose rounding the shipped checkpoints' logits carry)
            logits = torch.addmm(
                self.classifier.bias, joints, self.classifier.weight.t(), alpha=1 / V
            )
        else:
            logits = torch.add(
                self.classifier.bias, F.linear(joints, self.classifier.weight), alpha=1 / V
            )
        return logits.view(B, T, -1), None

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """:func:`~skelgraph.models.losses.infogcn2_loss` with this model's weights:
        ``{"loss", "cls", "pred", "feat"}``; with the bottleneck plus ``ib_lambda_1`` times
        ``"z_norm"`` and ``ib_lambda_2`` times ``"z_prior"`` over the real steps
        (:func:`~skelgraph.models.losses.bottleneck_terms`)."""
        terms = infogcn2_loss(
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
        if self.bottleneck is None:
            return terms
        z_norm, z_prior = bottleneck_terms(out.extras["z"], y, self.bottleneck.prior_means, mask)
        terms["loss"] = (
            terms["loss"]
            + self.config["ib_lambda_1"] * z_norm
            + self.config["ib_lambda_2"] * z_prior
        )
        return {**terms, "z_norm": z_norm, "z_prior": z_prior}


def parameter_breakdown(model: nn.Module) -> dict[str, int]:
    """Parameter count of each top-level part of ``model`` and the total."""
    counts = {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }
    counts.update((name, p.numel()) for name, p in model.named_parameters(recurse=False))
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
