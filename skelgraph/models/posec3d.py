r"""PoseC3D (`Duan et al., 2022 <https://arxiv.org/abs/2104.13586>`_): skeletons drawn as
pseudo-heatmap volumes and classified by a SlowOnly 3D CNN.

The model has two stages. The first, without parameters, is
:class:`~skelgraph.heatmaps.PoseHeatmaps`: it samples ``frames`` of the real frames of every clip
uniformly, crops the person and draws a Gaussian per joint (``input="keypoint"``), per bone
(``"limb"``) or both, giving volumes :math:`(B, K, F, H, W)`. The second is
:class:`~skelgraph.nn.resnet3d.SlowOnly3d`, global average pooling, dropout and a linear
classifier; the output is one score vector per clip, ``logits`` :math:`(B, 1, K)`.

Why the volumes are drawn inside the model, from the ordinary joints ``x`` :math:`(B, V, T, C)`:

* every part of the library that runs a model on joints works unchanged: the trainer, ``skelgraph
  test``, ensembles and score fusion with graph models, mirror test-time augmentation (the mirror
  image of the joints draws the flipped volume), checkpoints (the drawing settings are
  constructor arguments, so a checkpoint rebuilds them), the Penn Action benchmark, the online
  recogniser (which runs clip-level models on its last ``window`` frames);
* the drawing runs where the model runs, on the GPU when there is one, in float32 even under
  autocast, and nothing has to be stored: a volume of 48 frames of 17 joints at :math:`56 \times
  56` is 10 MB, its skeleton 10 kB;
* the frame sampling and the random crop belong to the drawing and differ between training
  (random places in the segments, a random part of the person box) and evaluation (the segments'
  middles, the whole box); the model's training flag switches them, like dropout. Frames are
  sampled among the real frames of the mask, so the data may come as whole clips resampled to a
  window (``data.sampling: clip``; a window longer than ``frames`` keeps the clip's time
  resolution), as padded sliding windows, or as the recogniser's growing buffer.

The drawing is invariant to translating and scaling the joints (the person box), so the data
pipeline's centring and torso scaling change nothing; its rotation, mirror and jitter
augmentations act on the joints before the drawing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from skelgraph.heatmaps import PoseHeatmaps
from skelgraph.layouts import Layout
from skelgraph.models.base import ModelOutput, SkeletonModel, check_input, resolve_layout
from skelgraph.models.losses import classification_loss
from skelgraph.models.registry import register_model
from skelgraph.nn.resnet3d import SlowOnly3d

__all__ = ["PoseC3D"]


@register_model("posec3d")
class PoseC3D(SkeletonModel):
    r"""The PoseC3D classifier (see the module description). The defaults are the published
    SlowOnly-R50 for heatmaps (48 frames at :math:`56 \times 56`, :math:`\sigma = 0.6`).

    Args:
        num_classes (int): classes :math:`K`.
        layout (str or Layout or dict): joint layout. (default: ``"coco17"``)
        in_channels (int): channels :math:`C` per joint, at least 3; the first two coordinates
            and the confidence (last) are drawn. (default: :obj:`3`)
        input (str): ``"keypoint"``, ``"limb"`` or ``"both"`` (see
            :class:`~skelgraph.heatmaps.PoseHeatmaps`). (default: ``"keypoint"``)
        sigma (float): Gaussian width in output pixels. (default: :obj:`0.6`)
        resolution (int or sequence of int): :math:`H = W`, or :math:`(H, W)`. (default: :obj:`56`)
        frames (int, optional): frames sampled per clip; :obj:`None` draws every frame of the
            window. (default: :obj:`48`)
        padding (float): relative margin of the person box. (default: :obj:`0.25`)
        crop_area (sequence of float, optional): area range of the random crop of the person box
            in training; :obj:`None`: none. (default: :obj:`(0.56, 1.0)`)
        base_channels (int): stem width :math:`b` of :class:`~skelgraph.nn.resnet3d.SlowOnly3d`.
            (default: :obj:`32`)
        stage_blocks (sequence of int): blocks per stage. (default: :obj:`(4, 6, 3)`)
        inflate (sequence of bool): temporal kernels per stage. (default: :obj:`(False, True,
            True)`)
        spatial_strides (sequence of int): per stage. (default: :obj:`(2, 2, 2)`)
        temporal_strides (sequence of int): per stage. (default: :obj:`(1, 1, 2)`)
        stem_stride (int): spatial stride of the stem convolution. (default: :obj:`1`)
        pool_stride (int): spatial stride of the stem's max pool. (default: :obj:`1`)
        dropout (float): before the classifier. (default: :obj:`0.5`)
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
        input: str = "keypoint",
        sigma: float = 0.6,
        resolution: int | Sequence[int] = 56,
        frames: int | None = 48,
        padding: float = 0.25,
        crop_area: Sequence[float] | None = (0.56, 1.0),
        base_channels: int = 32,
        stage_blocks: Sequence[int] = (4, 6, 3),
        inflate: Sequence[bool] = (False, True, True),
        spatial_strides: Sequence[int] = (2, 2, 2),
        temporal_strides: Sequence[int] = (1, 1, 2),
        stem_stride: int = 1,
        pool_stride: int = 1,
        dropout: float = 0.5,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if in_channels < 3:
            raise ValueError(
                f"PoseC3D: in_channels: expected at least 3 (x, y, confidence), got {in_channels}"
            )
        self.layout = resolve_layout(layout)
        self.in_channels = in_channels
        self.heatmaps = PoseHeatmaps(
            self.layout,
            input,
            sigma=sigma,
            resolution=resolution,
            frames=frames,
            padding=padding,
            crop_area=crop_area,
        )
        self.backbone = SlowOnly3d(
            self.heatmaps.out_channels,
            base_channels,
            stage_blocks,
            inflate,
            spatial_strides,
            temporal_strides,
            stem_stride=stem_stride,
            pool_stride=pool_stride,
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.backbone.out_channels, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def volumes(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        r"""The heatmap volumes :math:`(B, K, F, H, W)` the backbone sees for joints ``x``
        :math:`(B, V, T, C)` (random frame places and crop in training mode), in float32."""
        check_input("PoseC3D", x, mask, self.layout.num_joints, self.in_channels)
        with torch.autocast(x.device.type, enabled=False):
            persons = x.float().transpose(1, 2).unsqueeze(1)  # [B, 1, T, V, C]
            return self.heatmaps(persons, mask, train=self.training)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> ModelOutput:
        """Clip scores for joints ``x`` :math:`(B, V, T, C)`; only the real frames of ``mask``
        are sampled."""
        features = self.backbone(self.volumes(x, mask)).mean(dim=(2, 3, 4))
        logits = self.fc(self.dropout(features))
        return ModelOutput(logits=logits.unsqueeze(1), mask=mask)

    def loss(
        self, out: ModelOutput, x: Tensor, y: Tensor, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Cross-entropy: ``{"loss", "cls"}``."""
        cls = classification_loss(out.logits, y, label_smoothing=self.config["label_smoothing"])
        return {"loss": cls, "cls": cls}
