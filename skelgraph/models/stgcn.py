r"""ST-GCN (`Yan et al., 2018 <https://arxiv.org/abs/1801.07455>`_): the classic clip-level
baseline, built from :class:`~skelgraph.nn.stgcn.STGCNBlock`.

Data batch norm over the :math:`V \cdot C` input channels of every frame, ten blocks of widths
64-64-64-64-128-128-128-256-256-256 with temporal strides 1-1-1-1-2-1-1-2-1-1 (spatial partitions,
learnable edge importance, temporal kernel 9, residuals), global average pooling over the real
frames and the joints, and a linear classifier. The output is one score vector per clip,
``logits`` :math:`(B, 1, K)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    frame_graph,
    resolve_layout,
)
from skelgraph.models.losses import classification_loss
from skelgraph.models.registry import register_model
from skelgraph.nn.stgcn import STGCNBlock

__all__ = ["STGCN", "GraphBackbone", "real_frame_weights"]

STGCN_CHANNELS = (64, 64, 64, 64, 128, 128, 128, 256, 256, 256)
STGCN_STRIDES = (1, 1, 1, 1, 2, 1, 1, 2, 1, 1)


class GraphBackbone(nn.Module):
    r"""Data batch norm, a stack of spatial-temporal blocks and masked global average pooling.

    Args:
        make_block (callable): ``make_block(in_channels, out_channels, stride, first)`` returns a
            block acting on dense features :math:`(B, C, T, V)` (``forward_dense``).
        num_joints (int): :math:`V`.
        in_channels (int): :math:`C`.
        channels (sequence of int): output width of every block.
        strides (sequence of int): temporal stride of every block.

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** pooled features :math:`(B, C_{last})`
    """

    def __init__(
        self,
        make_block: Callable[[int, int, int, bool], nn.Module],
        num_joints: int,
        in_channels: int,
        channels: Sequence[int],
        strides: Sequence[int],
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or not channels:
            raise ValueError(
                f"channels and strides: expected two non-empty sequences of the same length, "
                f"got {len(channels)} and {len(strides)}"
            )
        self.data_bn = nn.BatchNorm1d(num_joints * in_channels)
        widths = [in_channels, *channels]
        self.blocks = nn.ModuleList(
            make_block(widths[i], widths[i + 1], strides[i], i == 0) for i in range(len(channels))
        )
        self.total_stride = 1
        for s in strides:
            self.total_stride *= s
        self.out_channels = widths[-1]

    def topology(self) -> dict[str, Tensor]:
        """Every block's input-independent graph :math:`(K, V, V)` (``gcn.graph(None)``) under
        ``"blocks.<i>.gcn"``."""
        return {
            f"blocks.{i}.gcn": block.gcn.graph(None).detach() for i, block in enumerate(self.blocks)
        }

    def forward(
        self, x: Tensor, mask: Tensor | None = None, graphs: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Pooled features; when ``graphs`` is given, every block's graph ``gcn.graph(h)`` of
        its input ``h`` (what the block applies; shapes as
        :func:`~skelgraph.models.base.frame_graph` makes them) is stored in it under
        ``"blocks.<i>.gcn"``."""
        B, V, T, C = x.shape
        h = self.data_bn(x.transpose(2, 3).reshape(B, V * C, T))
        h = h.view(B, V, C, T).permute(0, 2, 3, 1).contiguous()  # [B, C, T, V]
        for i, block in enumerate(self.blocks):
            if graphs is not None:
                graphs[f"blocks.{i}.gcn"] = frame_graph(block.gcn.graph(h), B)
            h = block.forward_dense(h)
        if mask is None:
            return h.mean(dim=(2, 3))
        weight = real_frame_weights(mask, self.total_stride, h.size(2), h.dtype)
        return (h * weight).sum(dim=(2, 3)) / (weight.sum(dim=(2, 3)) * V)


def real_frame_weights(mask: Tensor, stride: int, frames: int, dtype: torch.dtype) -> Tensor:
    r"""Which output frames of a stack of centred temporal layers (total stride :math:`s`) are
    real, as pooling weights :math:`(B, 1, T', 1)` for dense features :math:`(B, C, T', V)`: a
    stride-:math:`s` stack centres output frame :math:`t` on input frame :math:`s t`, so it is
    real when that frame is (``mask`` :math:`(B, T)`). A sample without a real output frame
    weighs all of them."""
    weight = mask[:, ::stride][:, None, :frames, None].to(dtype)
    return weight + (weight.sum(dim=2, keepdim=True) == 0).to(dtype)


@register_model("stgcn")
class STGCN(SkeletonModel):
    r"""The ST-GCN classifier (see the module description).

    Args:
        num_classes (int): classes :math:`K`.
        layout (str or Layout or dict): joint layout. (default: ``"coco17"``)
        in_channels (int): channels :math:`C` per joint. (default: :obj:`3`)
        features (sequence of str): input features computed from the joints by
            :class:`~skelgraph.features.InputFeatures`. (default: ``["joint"]``)
        channels (sequence of int): block widths. (default: the classic ten)
        strides (sequence of int): block temporal strides. (default: the classic ten)
        kernel_size (int): temporal kernel. (default: :obj:`9`)
        dropout (float): dropout after each temporal convolution. (default: :obj:`0.0`)
        edge_importance (bool): learn the edge importance masks. (default: :obj:`True`)
        causal (bool): past-only temporal convolutions. (default: :obj:`False`)
        label_smoothing (float): of the cross-entropy. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** :class:`ModelOutput` with ``logits`` :math:`(B, 1, K)`
    """

    def __init__(
        self,
        num_classes: int,
        layout: str | Layout | Mapping[str, Any] = "coco17",
        in_channels: int = 3,
        *,
        features: Sequence[str] = ("joint",),
        channels: Sequence[int] = STGCN_CHANNELS,
        strides: Sequence[int] = STGCN_STRIDES,
        kernel_size: int = 9,
        dropout: float = 0.0,
        edge_importance: bool = True,
        causal: bool = False,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        layout = resolve_layout(layout)
        self.layout = layout
        self.in_channels = in_channels

        def make_block(c_in: int, c_out: int, stride: int, first: bool) -> nn.Module:
            return STGCNBlock(
                c_in,
                c_out,
                layout,
                stride=stride,
                kernel_size=kernel_size,
                dropout=dropout,
                residual=not first,
                causal=causal,
                edge_importance=edge_importance,
            )

        self.features = InputFeatures(layout, in_channels, features)
        self.backbone = GraphBackbone(
            make_block, layout.num_joints, self.features.out_channels, channels, strides
        )
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        """Clip scores for joints ``x`` :math:`(B, V, T, C)`; padded frames are left out of
        the pooling."""
        check_input("STGCN", x, mask, self.layout.num_joints, self.in_channels)
        logits = self.fc(self.backbone(self.features(x), mask))
        return ModelOutput(logits=logits.unsqueeze(1), mask=mask)

    def attention(self, x: Tensor, mask: Tensor | None = None) -> AttentionMaps:
        """:meth:`forward` and every block's graph :math:`A_k \\odot M_k` (the partitions times
        the learned edge importance, the same for every input) as ``graphs`` and ``topology``
        under ``"backbone.blocks.<i>.gcn"``."""
        check_input("STGCN", x, mask, self.layout.num_joints, self.in_channels)
        graphs: dict[str, Tensor] = {}
        logits = self.fc(self.backbone(self.features(x), mask, graphs))
        output = ModelOutput(logits=logits.unsqueeze(1), mask=mask)
        maps = AttentionMaps(output)
        maps.merge(AttentionMaps(output, graphs, topology=self.backbone.topology()), "backbone.")
        return maps

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Cross-entropy: ``{"loss", "cls"}``."""
        cls = classification_loss(out.logits, y, label_smoothing=self.config["label_smoothing"])
        return {"loss": cls, "cls": cls}
