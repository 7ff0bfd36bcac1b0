r"""InfoGCN (`Chi et al., 2022 <https://arxiv.org/abs/2206.00270>`_): the offline clip classifier
of SA-GC blocks with multi-scale temporal convolutions, trained through an information
bottleneck.

Data flow for joints :math:`X \in \mathbb{R}^{B \times V \times T \times C}` (confidence last):

1. **Input features** (:class:`~skelgraph.features.InputFeatures`): one stream of InfoGCN's
   multi-modal representation, e.g. ``joint``, ``bone`` (the 1st mode), ``relative2`` (the 2nd
   mode: the position relative to the grandparent) or their motion ``velocity``,
   ``bone_velocity``, ``relative2_velocity``.
2. **Embedding**: a linear map of every joint's features to :math:`C_0` channels, then batch norm
   over the :math:`V \cdot C_0` channels of every frame (:class:`~skelgraph.models.stgcn.
   GraphBackbone`'s data norm). The reference code also adds a learned joint embedding before
   this norm, which the norm removes (it is constant over samples and frames for every joint and
   channel); it is left out.
3. **Encoder**: blocks of an SA-GC layer (:class:`~skelgraph.nn.SAGC`, 3 heads, query/key size
   :math:`C_{in} / 8`, batch norm, its learned per-head topology starting at the identity as in
   the reference code) and a multi-scale temporal unit
   (:class:`~skelgraph.nn.temporal_conv.MultiScaleTemporalConv`: kernel 5 with dilations 1 and 2,
   a max-pool and a :math:`1 \times 1` branch), with a residual around both
   (:class:`~skelgraph.nn.stgcn.GraphTemporalBlock`). The paper's plan: widths
   64-64-64-128-128-128-256-256-256, temporal strides 1-1-1-2-1-1-2-1-1.
4. **Pooling** over the real frames and the joints, then the **information bottleneck**
   (:class:`~skelgraph.nn.InformationBottleneck`): the latent :math:`\mathbf{z}`
   (:math:`n_z` = the last width), sampled in training and its mean in evaluation, and the
   classifier that reads it. The output is one score vector per clip, ``logits``
   :math:`(B, 1, K)`, with the latent in ``extras["z"]`` :math:`(B, 1, n_z)`.

**Objective**: :func:`~skelgraph.models.losses.information_bottleneck_loss`, the cross-entropy
with label smoothing 0.1 plus :math:`\lambda_1` times the norm of the batch's mean latent plus
:math:`\lambda_2` times the squared distance of every present class's mean latent to its prior
mean (orthogonal, norm ``prior_gain``). With ``information_bottleneck=False`` the pooled features
go through a plain linear classifier trained by the cross-entropy alone (the ablation).

Every layer looks at the whole window (centred temporal convolutions, batch norm over frames),
so InfoGCN classifies whole windows: it has no frame-by-frame mode, and the online recogniser
runs it on the last ``window`` frames at every frame.

**Differences from the reference code**, none of them in the layer plan or the objective: the
SA-GC layer is the library's (queries and keys from the features themselves, without the
reference's layer norm before them; its batch norm starts at scale 1, not :math:`10^{-6}`; a
width change goes through a linear residual projection without batch norm), the classifier that
reads the latent starts from PyTorch's default initialisation (see
:class:`~skelgraph.nn.InformationBottleneck`), the prior means are a buffer drawn from their own
seed (saved with the weights, the same on every run), and the input streams are the library's
features (the :math:`k`-th mode relative to the :math:`k`-th ancestor, see
:mod:`skelgraph.train.streams` for InfoGCN's six streams on other layouts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from skelgraph.features import InputFeatures
from skelgraph.layouts import Layout
from skelgraph.models.base import (
    AttentionMaps,
    ModelOutput,
    SkeletonModel,
    check_input,
    resolve_layout,
)
from skelgraph.models.losses import classification_loss, information_bottleneck_loss
from skelgraph.models.registry import register_model
from skelgraph.models.stgcn import GraphBackbone
from skelgraph.nn.bottleneck import InformationBottleneck
from skelgraph.nn.sagc import SAGC
from skelgraph.nn.stgcn import DenseGraphModule, GraphTemporalBlock
from skelgraph.nn.temporal_conv import MultiScaleTemporalConv

__all__ = ["INFOGCN_CHANNELS", "INFOGCN_STRIDES", "DenseSAGC", "InfoGCN"]

#: The paper's encoder: widths and temporal strides of the nine blocks.
INFOGCN_CHANNELS = (64, 64, 64, 128, 128, 128, 256, 256, 256)
INFOGCN_STRIDES = (1, 1, 1, 2, 1, 1, 2, 1, 1)


class DenseSAGC(DenseGraphModule):
    r"""An :class:`~skelgraph.nn.SAGC` on the dense layout of convolution blocks,
    :math:`(B, C, T, V)`, every frame on its own (:meth:`SAGC.forward_dense
    <skelgraph.nn.SAGC.forward_dense>` on the transposed features).

    Args:
        sagc (SAGC): the layer, with ``num_nodes`` set.
        layout_name (str): the layout's name, for the block's description.
    """

    def __init__(self, sagc: SAGC, layout_name: str) -> None:
        super().__init__()
        if sagc.num_nodes is None:
            raise ValueError("DenseSAGC: sagc: expected a layer with num_nodes set")
        self.sagc = sagc
        self.in_channels, self.out_channels = sagc.in_channels, sagc.out_channels
        self.num_joints = sagc.num_nodes
        self.layout_name = layout_name

    def reset_parameters(self) -> None:
        """Re-initialises the layer."""
        self.sagc.reset_parameters()

    def forward_dense(self, x: Tensor) -> Tensor:
        """:math:`(B, C_{in}, T, V) \\to (B, C_{out}, T, V)`."""
        self._check_dense(x)
        return self.sagc.forward_dense(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)

    def graph(self, x: Tensor | None = None) -> Tensor:
        r"""The learned topology :math:`\hat{A}` :math:`(H, V, V)`, or for dense features ``x``
        :math:`(B, C_{in}, T, V)` the effective graph :math:`\hat{A} \odot \mathrm{softmax}
        (QK^\top)` of every frame, :math:`(B, H, T, V, V)`."""
        topology = self.sagc.topology
        if x is None:
            return topology.detach()
        _, attention = self.sagc.forward_dense(x.permute(0, 3, 2, 1), return_attention=True)
        return (attention * topology).transpose(1, 2)


@register_model("infogcn")
class InfoGCN(SkeletonModel):
    r"""InfoGCN: SA-GC and multi-scale temporal convolution blocks, pooled into an information
    bottleneck (see the module description).

    Args:
        num_classes (int): classes :math:`K`.
        layout (str or Layout or dict): joint layout. (default: ``"coco17"``)
        in_channels (int): channels :math:`C` per joint, confidence last. (default: :obj:`3`)
        features (sequence of str): the input stream, computed from the joints by
            :class:`~skelgraph.features.InputFeatures`. (default: ``["joint"]``)
        channels (sequence of int): block widths; the first is also the embedding width, the
            last the latent size :math:`n_z`. Each a multiple of ``len(dilations) + 2``.
            (default: the paper's nine)
        strides (sequence of int): block temporal strides. (default: the paper's nine)
        heads (int): SA-GC heads. (default: :obj:`3`)
        kernel_size (int): kernel of the dilated temporal branches. (default: :obj:`5`)
        dilations (sequence of int): one temporal branch each. (default: ``[1, 2]``)
        information_bottleneck (bool): the latent head and its objective; :obj:`False` for a
            linear classifier and the cross-entropy alone. (default: :obj:`True`)
        prior_gain (float): norm of the class prior means (``z_prior_gain``).
            (default: :obj:`3.0`)
        noise_ratio (float): exponent scale :math:`r` of the latent's standard deviation.
            (default: :obj:`0.5`)
        prior_seed (int): seed of the class prior means. (default: :obj:`0`)
        dropout (float): dropout before the latent maps (or the linear classifier).
            (default: :obj:`0.0`)
        lambda_1 (float): weight of the mean latent's norm. (default: :obj:`1e-4`)
        lambda_2 (float): weight of the class means' distance to their priors.
            (default: :obj:`0.1`)
        label_smoothing (float): of the cross-entropy. (default: :obj:`0.1`)

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** :class:`ModelOutput` with ``logits`` :math:`(B, 1, K)` and, with the
          bottleneck, ``extras["z"]`` :math:`(B, 1, n_z)`
    """

    def __init__(
        self,
        num_classes: int,
        layout: str | Layout | Mapping[str, Any] = "coco17",
        in_channels: int = 3,
        *,
        features: Sequence[str] = ("joint",),
        channels: Sequence[int] = INFOGCN_CHANNELS,
        strides: Sequence[int] = INFOGCN_STRIDES,
        heads: int = 3,
        kernel_size: int = 5,
        dilations: Sequence[int] = (1, 2),
        information_bottleneck: bool = True,
        prior_gain: float = 3.0,
        noise_ratio: float = 0.5,
        prior_seed: int = 0,
        dropout: float = 0.0,
        lambda_1: float = 1e-4,
        lambda_2: float = 0.1,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__()
        layout = resolve_layout(layout)
        if not channels:
            raise ValueError("InfoGCN: channels: expected at least one block width, got none")
        branches = len(dilations) + 2
        for i, width in enumerate(channels):
            if width < 1 or width % branches:
                raise ValueError(
                    f"InfoGCN: channels[{i}]: expected a positive multiple of "
                    f"len(dilations) + 2 = {branches} (the temporal branches), got {width}"
                )
        if information_bottleneck and channels[-1] < num_classes:
            raise ValueError(
                f"InfoGCN: channels[-1]: expected at least num_classes = {num_classes} (the "
                f"latent size, which holds one orthogonal prior mean per class), got {channels[-1]}"
            )
        self.layout = layout
        self.num_classes = num_classes
        self.in_channels = in_channels
        V = layout.num_joints
        identity = torch.eye(V)

        def make_block(c_in: int, c_out: int, stride: int, first: bool) -> nn.Module:
            sagc = SAGC(
                c_in,
                c_out,
                heads,
                num_nodes=V,
                adjacency=identity,
                attention_channels=max(1, c_in // 8),
                norm="batch",
            )
            tcn = MultiScaleTemporalConv(
                c_out, c_out, kernel_size, stride=stride, dilations=dilations
            )
            return GraphTemporalBlock(DenseSAGC(sagc, layout.name), tcn, residual=True)

        self.features = InputFeatures(layout, in_channels, features)
        self.embedding = nn.Linear(self.features.out_channels, channels[0])
        self.backbone = GraphBackbone(make_block, V, channels[0], channels, strides)
        width = self.backbone.out_channels
        self.bottleneck: InformationBottleneck | None = None
        self.classifier: nn.Sequential | None = None
        if information_bottleneck:
            self.bottleneck = InformationBottleneck(
                width,
                num_classes,
                prior_gain=prior_gain,
                noise_ratio=noise_ratio,
                dropout=dropout,
                prior_seed=prior_seed,
            )
        else:
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        """Clip scores (and the latent) for joints ``x`` :math:`(B, V, T, C)`; padded frames
        are left out of the pooling."""
        return self._forward(x, mask)

    def attention(self, x: Tensor, mask: Tensor | None = None) -> AttentionMaps:
        """:meth:`forward` and every block's SA-GC graph :math:`\\hat{A} \\odot
        \\mathrm{softmax}(QK^\\top)` per frame as ``graphs``, and the learned topologies
        :math:`\\hat{A}` as ``topology``, under ``"backbone.blocks.<i>.gcn"``."""
        graphs: dict[str, Tensor] = {}
        output = self._forward(x, mask, graphs)
        maps = AttentionMaps(output)
        maps.merge(AttentionMaps(output, graphs, topology=self.backbone.topology()), "backbone.")
        return maps

    def _forward(
        self, x: Tensor, mask: Tensor | None, graphs: dict[str, Tensor] | None = None
    ) -> ModelOutput:
        check_input("InfoGCN", x, mask, self.layout.num_joints, self.in_channels)
        pooled = self.backbone(self.embedding(self.features(x)), mask, graphs)
        if self.bottleneck is None:
            return ModelOutput(logits=self.classifier(pooled).unsqueeze(1), mask=mask)
        out = self.bottleneck(pooled)
        return ModelOutput(
            logits=out.logits.unsqueeze(1), mask=mask, extras={"z": out.z.unsqueeze(1)}
        )

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """:func:`~skelgraph.models.losses.information_bottleneck_loss` with this model's
        weights, ``{"loss", "cls", "z_norm", "z_prior"}``; without the bottleneck the
        cross-entropy, ``{"loss", "cls"}``."""
        smoothing = self.config["label_smoothing"]
        if self.bottleneck is None:
            cls = classification_loss(out.logits, y, label_smoothing=smoothing)
            return {"loss": cls, "cls": cls}
        return information_bottleneck_loss(
            out.logits,
            out.extras["z"],
            y,
            self.bottleneck.prior_means,
            lambda_1=self.config["lambda_1"],
            lambda_2=self.config["lambda_2"],
            label_smoothing=smoothing,
        )
