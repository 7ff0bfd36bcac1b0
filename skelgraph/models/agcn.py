r"""2s-AGCN (`Shi et al., 2019 <https://arxiv.org/abs/1805.07694>`_): two streams of adaptive
graph convolution blocks, on the joints and on the bones, fused by summing their scores.

Each stream is the ten-block network of ST-GCN's widths and strides built from
:class:`~skelgraph.nn.agcn.AGCNBlock` (data batch norm, masked global average pooling, a linear
classifier). The bone of joint :math:`v` is :math:`X_v - X_{p(v)}` over the coordinates, with
:math:`p(v)` its parent (see :func:`~skelgraph.layouts.graph.parents`), and keeps the joint's
confidence; a joint without a parent gets a zero vector (and its confidence).

**Fusion.** The clip scores are the sum of the two streams' raw scores, as in the authors'
ensemble of a joint and a bone model (their softmax-ed sum ranks the classes almost the same but
is no longer a logit, which the shared trainer and losses expect). **Training.** Each stream is a
classifier of its own, as in the paper where the two networks are trained separately: the loss is
the sum of the two streams' cross-entropies (``"cls_joint"``, ``"cls_bone"``); ``"cls"`` is the
cross-entropy of the fused scores, logged for comparison with the other models.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from skelgraph.layouts import Layout
from skelgraph.layouts.graph import parents
from skelgraph.models.base import (
    AttentionMaps,
    ModelOutput,
    SkeletonModel,
    check_input,
    resolve_layout,
)
from skelgraph.models.losses import classification_loss
from skelgraph.models.registry import register_model
from skelgraph.models.stgcn import STGCN_CHANNELS, STGCN_STRIDES, GraphBackbone
from skelgraph.nn.agcn import AGCNBlock

__all__ = ["AGCN2s", "bone_features"]


def bone_features(x: Tensor, parents: Sequence[int]) -> Tensor:
    r"""Bone vectors :math:`X_v - X_{p(v)}` of joints ``x`` :math:`(B, V, T, C)` over the first
    :math:`C - 1` channels, zero for roots (``parent < 0``), the confidence channel kept."""
    index = torch.tensor([max(p, 0) for p in parents], device=x.device)
    has_parent = torch.tensor([p >= 0 for p in parents], device=x.device, dtype=x.dtype)
    coords = x[..., :-1]
    bones = (coords - coords[:, index]) * has_parent.view(1, -1, 1, 1)
    return torch.cat([bones, x[..., -1:]], dim=-1)


@register_model("agcn2s")
class AGCN2s(SkeletonModel):
    r"""Two-stream adaptive GCN (see the module description).

    Args:
        num_classes (int): classes :math:`K`.
        layout (str or Layout or dict): joint layout. (default: ``"coco17"``)
        in_channels (int): channels :math:`C` per joint, confidence last. (default: :obj:`3`)
        channels (sequence of int): block widths. (default: ST-GCN's ten)
        strides (sequence of int): block temporal strides. (default: ST-GCN's ten)
        kernel_size (int): temporal kernel. (default: :obj:`9`)
        dropout (float): dropout after each temporal convolution. (default: :obj:`0.0`)
        causal (bool): past-only temporal convolutions and sample graphs. (default: :obj:`False`)
        label_smoothing (float): of the cross-entropies. (default: :obj:`0.0`)

    Shapes:
        - **input:** :math:`(B, V, T, C)`, optional mask :math:`(B, T)`
        - **output:** :class:`ModelOutput` with ``logits`` :math:`(B, 1, K)` (fused) and
          ``extras["joint_logits"]``, ``extras["bone_logits"]`` :math:`(B, 1, K)`
    """

    def __init__(
        self,
        num_classes: int,
        layout: str | Layout | Mapping[str, Any] = "coco17",
        in_channels: int = 3,
        *,
        channels: Sequence[int] = STGCN_CHANNELS,
        strides: Sequence[int] = STGCN_STRIDES,
        kernel_size: int = 9,
        dropout: float = 0.0,
        causal: bool = False,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        layout = resolve_layout(layout)
        if in_channels < 2:
            raise ValueError(
                f"AGCN2s: in_channels: expected coordinates and a confidence (>= 2), "
                f"got {in_channels}"
            )
        self.layout = layout
        self.in_channels = in_channels
        self.parents = parents(layout)

        def make_block(c_in: int, c_out: int, stride: int, first: bool) -> nn.Module:
            return AGCNBlock(
                c_in,
                c_out,
                layout,
                stride=stride,
                kernel_size=kernel_size,
                dropout=dropout,
                residual=not first,
                causal=causal,
            )

        V = layout.num_joints
        self.joint_stream = GraphBackbone(make_block, V, in_channels, channels, strides)
        self.bone_stream = GraphBackbone(make_block, V, in_channels, channels, strides)
        self.joint_fc = nn.Linear(self.joint_stream.out_channels, num_classes)
        self.bone_fc = nn.Linear(self.bone_stream.out_channels, num_classes)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        """Fused clip scores for joints ``x`` :math:`(B, V, T, C)`."""
        check_input("AGCN2s", x, mask, self.layout.num_joints, self.in_channels)
        joint = self.joint_fc(self.joint_stream(x, mask)).unsqueeze(1)
        bone = self.bone_fc(self.bone_stream(bone_features(x, self.parents), mask)).unsqueeze(1)
        return ModelOutput(
            logits=joint + bone,
            mask=mask,
            extras={"joint_logits": joint, "bone_logits": bone},
        )

    def attention(self, x: Tensor, mask: Tensor | None = None) -> AttentionMaps:
        """:meth:`forward` and every block's adaptive graph :math:`A_k + B_k + C_k(X)` of both
        streams (``"joint_stream.blocks.<i>.gcn"``, ``"bone_stream.blocks.<i>.gcn"``) as
        ``graphs``, and :math:`A_k + B_k` as ``topology``."""
        check_input("AGCN2s", x, mask, self.layout.num_joints, self.in_channels)
        graphs: dict[str, dict[str, Tensor]] = {"joint": {}, "bone": {}}
        joint = self.joint_fc(self.joint_stream(x, mask, graphs["joint"])).unsqueeze(1)
        bones = bone_features(x, self.parents)
        bone = self.bone_fc(self.bone_stream(bones, mask, graphs["bone"])).unsqueeze(1)
        output = ModelOutput(
            logits=joint + bone, mask=mask, extras={"joint_logits": joint, "bone_logits": bone}
        )
        maps = AttentionMaps(output)
        for name, stream in (("joint", self.joint_stream), ("bone", self.bone_stream)):
            maps.merge(
                AttentionMaps(output, graphs[name], topology=stream.topology()), f"{name}_stream."
            )
        return maps

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Sum of the streams' cross-entropies: ``{"loss", "cls", "cls_joint", "cls_bone"}``."""
        smoothing = self.config["label_smoothing"]
        joint = classification_loss(out.extras["joint_logits"], y, label_smoothing=smoothing)
        bone = classification_loss(out.extras["bone_logits"], y, label_smoothing=smoothing)
        with torch.no_grad():
            fused = classification_loss(out.logits, y, label_smoothing=smoothing)
        return {"loss": joint + bone, "cls": fused, "cls_joint": joint, "cls_bone": bone}
