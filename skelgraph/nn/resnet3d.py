r"""A SlowOnly-style 3D ResNet (`Feichtenhofer et al., 2019 <https://arxiv.org/abs/1812.03982>`_)
for pseudo-heatmap volumes, as PoseC3D (`Duan et al., 2022 <https://arxiv.org/abs/2104.13586>`_)
uses it: :class:`Bottleneck3d` blocks in :class:`SlowOnly3d` stages.

"SlowOnly" means the temporal extent of the kernels: the stem and the early stages convolve each
frame on its own (kernels :math:`1 \times 7 \times 7`, :math:`1 \times 1 \times 1` and
:math:`1 \times 3 \times 3`); only the *inflated* later stages look at neighbouring frames, with a
:math:`3 \times 1 \times 1` first convolution in every block. For volumes of :math:`K` joint or
bone channels PoseC3D drops the first stage of the video network, keeps the stem at full
resolution (no stride, a stride-1 :math:`3 \times 3` max pool) and halves the widths.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["Bottleneck3d", "SlowOnly3d"]


class Bottleneck3d(nn.Module):
    r"""The residual bottleneck of a 3D ResNet.

    .. math::
        \mathbf{Y} = \mathrm{ReLU}\Big(\mathrm{BN}\big(W_3 * \mathrm{ReLU}(\mathrm{BN}(
        W_2 * \mathrm{ReLU}(\mathrm{BN}(W_1 * \mathbf{X}))))\big) + P(\mathbf{X})\Big)

    with :math:`W_1` a :math:`k_t \times 1 \times 1` convolution to ``channels`` (:math:`k_t = 3`
    when ``inflate``, else 1), :math:`W_2` a :math:`1 \times 3 \times 3` convolution with the
    stride :math:`(s_t, s, s)`, :math:`W_3` a :math:`1 \times 1 \times 1` convolution to
    :math:`e \cdot` ``channels`` (:math:`e` = ``expansion``), and the shortcut :math:`P` the
    identity, or a strided :math:`1 \times 1 \times 1` convolution with batch norm when the shape
    changes. The last batch norm starts at zero, so that every block starts as its shortcut.

    Args:
        in_channels (int): :math:`C_{in}`.
        channels (int): the bottleneck width.
        stride (int): spatial stride :math:`s`. (default: :obj:`1`)
        temporal_stride (int): :math:`s_t`. (default: :obj:`1`)
        inflate (bool): a temporal kernel of 3 in the first convolution. (default: :obj:`False`)
        expansion (int): :math:`e`. (default: :obj:`4`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, H, W)`
        - **output:** :math:`(B, e \cdot \text{channels}, \lceil T / s_t \rceil,
          \lceil H / s \rceil, \lceil W / s \rceil)`
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        stride: int = 1,
        temporal_stride: int = 1,
        inflate: bool = False,
        expansion: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("channels", channels),
            ("stride", stride),
            ("temporal_stride", temporal_stride),
            ("expansion", expansion),
        ):
            if value < 1:
                raise ValueError(f"Bottleneck3d: {name}: expected a positive integer, got {value}")
        self.in_channels = in_channels
        self.out_channels = channels * expansion
        self.stride = (temporal_stride, stride, stride)
        self.inflate = bool(inflate)
        k_t = 3 if inflate else 1
        self.conv1 = nn.Conv3d(
            in_channels, channels, (k_t, 1, 1), padding=(k_t // 2, 0, 0), bias=False
        )
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(
            channels, channels, (1, 3, 3), stride=self.stride, padding=(0, 1, 1), bias=False
        )
        self.bn2 = nn.BatchNorm3d(channels)
        self.conv3 = nn.Conv3d(channels, self.out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(self.out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if self.stride != (1, 1, 1) or in_channels != self.out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, self.out_channels, 1, stride=self.stride, bias=False),
                nn.BatchNorm3d(self.out_channels),
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation of the convolutions, unit batch norms, the last one at zero."""
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                module.reset_parameters()
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        """The block applied to ``x`` :math:`(B, C_{in}, T, H, W)`."""
        if x.dim() != 5 or x.size(1) != self.in_channels:
            raise ValueError(
                f"Bottleneck3d: x: expected shape [B, {self.in_channels}, T, H, W], "
                f"got {list(x.shape)}"
            )
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, stride={list(self.stride)}, "
            f"inflate={self.inflate}"
        )


class SlowOnly3d(nn.Module):
    r"""A SlowOnly 3D ResNet backbone: a stem, stages of :class:`Bottleneck3d` blocks.

    The stem is a :math:`1 \times 7 \times 7` convolution to ``base_channels`` (spatial stride
    ``stem_stride``), batch norm, ReLU and a :math:`1 \times 3 \times 3` max pool (stride
    ``pool_stride``). Stage :math:`i` has ``stage_blocks[i]`` blocks of width
    :math:`b \cdot 2^i` (:math:`b` = ``base_channels``) and output :math:`4 b \cdot 2^i`; its first
    block has the stage's spatial and temporal strides and every block is inflated when
    ``inflate[i]``. PoseC3D's SlowOnly-R50 for heatmaps is ``base_channels=32``,
    ``stage_blocks=(4, 6, 3)``, ``inflate=(False, True, True)``, ``spatial_strides=(2, 2, 2)``,
    ``temporal_strides=(1, 1, 2)`` and unit stem and pool strides: the defaults.

    Args:
        in_channels (int): input channels :math:`K` (joints and/or bones).
        base_channels (int): :math:`b`. (default: :obj:`32`)
        stage_blocks (sequence of int): blocks per stage. (default: :obj:`(4, 6, 3)`)
        inflate (sequence of bool): temporal kernels per stage. (default: :obj:`(False, True,
            True)`)
        spatial_strides (sequence of int): per stage. (default: :obj:`(2, 2, 2)`)
        temporal_strides (sequence of int): per stage. (default: :obj:`(1, 1, 2)`)
        stem_stride (int): spatial stride of the stem convolution. (default: :obj:`1`)
        pool_stride (int): spatial stride of the stem's max pool. (default: :obj:`1`)

    Shapes:
        - **input:** :math:`(B, K, T, H, W)`
        - **output:** :math:`(B, 4 b \cdot 2^{S - 1}, T', H', W')` for :math:`S` stages, the
          sizes divided (rounding up) by the product of the strides
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 32,
        stage_blocks: Sequence[int] = (4, 6, 3),
        inflate: Sequence[bool] = (False, True, True),
        spatial_strides: Sequence[int] = (2, 2, 2),
        temporal_strides: Sequence[int] = (1, 1, 2),
        *,
        stem_stride: int = 1,
        pool_stride: int = 1,
    ) -> None:
        super().__init__()
        per_stage = {
            "inflate": inflate,
            "spatial_strides": spatial_strides,
            "temporal_strides": temporal_strides,
        }
        if len(stage_blocks) == 0:
            raise ValueError("SlowOnly3d: stage_blocks: expected at least one stage, got none")
        for name, values in per_stage.items():
            if len(values) != len(stage_blocks):
                raise ValueError(
                    f"SlowOnly3d: {name}: expected one value per stage ({len(stage_blocks)}, as "
                    f"stage_blocks), got {list(values)}"
                )
        for name, values in (
            ("stage_blocks", stage_blocks),
            ("spatial_strides", spatial_strides),
            ("temporal_strides", temporal_strides),
            ("in_channels", [in_channels]),
            ("base_channels", [base_channels]),
            ("stem_stride", [stem_stride]),
            ("pool_stride", [pool_stride]),
        ):
            if any(int(v) < 1 for v in values):
                raise ValueError(f"SlowOnly3d: {name}: expected positive integers, got {values}")
        self.in_channels = in_channels
        self.stem = nn.Sequential(
            nn.Conv3d(
                in_channels,
                base_channels,
                (1, 7, 7),
                stride=(1, stem_stride, stem_stride),
                padding=(0, 3, 3),
                bias=False,
            ),
            nn.BatchNorm3d(base_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, pool_stride, pool_stride), padding=(0, 1, 1)),
        )
        stages = []
        width = base_channels
        for i, blocks in enumerate(stage_blocks):
            channels = base_channels * 2**i
            stage = []
            for j in range(int(blocks)):
                block = Bottleneck3d(
                    width,
                    channels,
                    stride=int(spatial_strides[i]) if j == 0 else 1,
                    temporal_stride=int(temporal_strides[i]) if j == 0 else 1,
                    inflate=bool(inflate[i]),
                )
                stage.append(block)
                width = block.out_channels
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.out_channels = width
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation of the stem, :meth:`Bottleneck3d.reset_parameters` of every block."""
        nn.init.kaiming_normal_(self.stem[0].weight, mode="fan_out", nonlinearity="relu")
        self.stem[1].reset_parameters()
        for stage in self.stages:
            for block in stage:
                block.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Features of volumes ``x`` :math:`(B, K, T, H, W)`."""
        if x.dim() != 5 or x.size(1) != self.in_channels:
            raise ValueError(
                f"SlowOnly3d: x: expected shape [B, {self.in_channels}, T, H, W], "
                f"got {list(x.shape)}"
            )
        return self.stages(self.stem(x))
