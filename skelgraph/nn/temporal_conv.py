"""Temporal convolution units of spatial-temporal blocks, along the time axis of dense skeleton
tensors: :class:`TemporalConv` (ST-GCN, 2s-AGCN) and :class:`MultiScaleTemporalConv` (InfoGCN)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiScaleTemporalConv", "TemporalConv"]


class TemporalConv(nn.Module):
    r"""Temporal convolution unit of ST-GCN-style blocks: a :math:`(k \times 1)` convolution along
    time (dilated by :math:`d`), batch normalisation and dropout, on dense skeleton tensors.

    .. math::
        \mathbf{X}'_{:, t} = \mathrm{Dropout}\Big(\mathrm{BN}\Big(\sum_{i=0}^{k-1}
        \mathbf{W}_i \, \mathbf{X}_{:, s t + d i - p}\Big)\Big)

    with stride :math:`s`. Centred (``causal=False``): :math:`p = d (k - 1) / 2` frames of zero
    padding on both sides, so output frame :math:`t` is centred on input frame :math:`s t`.
    Causal: :math:`p = d (k - 1)` frames on the past side only, so output frame :math:`t` ends at
    input frame :math:`s t` and never depends on later frames. Either way there are
    :math:`\lceil T / s \rceil` output frames, aligned with a stride-:math:`s` residual.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int, optional): temporal extent :math:`k` (odd unless ``causal``).
            (default: :obj:`9`)
        stride (int, optional): temporal stride :math:`s`. (default: :obj:`1`)
        dilation (int, optional): spacing :math:`d` of the kernel's taps. (default: :obj:`1`)
        dropout (float, optional): dropout probability. (default: :obj:`0.0`)
        causal (bool, optional): pad the past only. (default: :obj:`False`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, V)`
        - **output:** :math:`(B, C_{out}, \lceil T / s \rceil, V)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 9,
        *,
        stride: int = 1,
        dilation: int = 1,
        dropout: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1 or dilation < 1:
            raise ValueError(
                f"TemporalConv: kernel_size, stride and dilation must be positive, got "
                f"{kernel_size}, {stride} and {dilation}"
            )
        if not causal and kernel_size % 2 == 0:
            raise ValueError(
                f"TemporalConv: kernel_size must be odd for centred padding, got {kernel_size}"
            )
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.causal = causal
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kernel_size, 1),
            stride=(stride, 1),
            padding=(0 if causal else dilation * (kernel_size - 1) // 2, 0),
            dilation=(dilation, 1),
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)

    def reset_parameters(self) -> None:
        """Re-initialises the convolution and the batch norm."""
        self.conv.reset_parameters()
        self.bn.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Applies the unit to ``x`` of shape :math:`(B, C_{in}, T, V)`."""
        if self.causal:
            x = F.pad(x, (0, 0, self.dilation * (self.kernel_size - 1), 0))
        return self.dropout(self.bn(self.conv(x)))

    def __repr__(self) -> str:
        dilation = f", dilation={self.dilation}" if self.dilation != 1 else ""
        return (
            f"{self.__class__.__name__}({self.conv.in_channels}, {self.conv.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}{dilation}, "
            f"causal={self.causal})"
        )


class MultiScaleTemporalConv(nn.Module):
    r"""The multi-scale temporal convolution unit of InfoGCN (after MS-G3D and CTR-GCN): parallel
    branches of :math:`C_{out} / (|D| + 2)` channels each, concatenated along the channels, then a
    ReLU:

    .. math::
        \mathbf{X}' = \mathrm{ReLU}\Big(\big\Vert_{d \in D}\,
        \mathrm{TCN}_{k, d}\big(\mathrm{ReLU}(\mathrm{BN}(\mathbf{W}_d \mathbf{X}))\big)
        \;\Big\Vert\; \mathrm{BN}\big(\mathrm{MaxPool}_3(\mathrm{ReLU}(\mathrm{BN}(
        \mathbf{W}_p \mathbf{X})))\big) \;\Big\Vert\; \mathrm{BN}(\mathbf{W}_1
        \mathbf{X})\Big)

    :math:`\mathbf{W}_d, \mathbf{W}_p, \mathbf{W}_1` are :math:`1 \times 1` convolutions (the
    reduction to the branch width), :math:`\mathrm{TCN}_{k, d}` a :class:`TemporalConv` of kernel
    :math:`k` dilated by :math:`d` (receptive field :math:`d (k - 1) + 1` frames),
    :math:`\mathrm{MaxPool}_3` a maximum over 3 frames; every branch has stride :math:`s` (the last
    one subsamples its input frames). Centred, output frame :math:`t` is centred on input frame
    :math:`s t`; with ``causal=True`` every branch pads the past only, so it ends at input frame
    :math:`s t`. There are :math:`\lceil T / s \rceil` output frames either way.

    Args:
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`, a multiple of :math:`|D| + 2`.
        kernel_size (int, optional): :math:`k` of the dilated branches. (default: :obj:`5`)
        stride (int, optional): temporal stride :math:`s`. (default: :obj:`1`)
        dilations (sequence of int, optional): :math:`D`, one branch each.
            (default: ``(1, 2)``, InfoGCN's)
        causal (bool, optional): pad the past only. (default: :obj:`False`)

    Shapes:
        - **input:** :math:`(B, C_{in}, T, V)`
        - **output:** :math:`(B, C_{out}, \lceil T / s \rceil, V)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 5,
        *,
        stride: int = 1,
        dilations: Sequence[int] = (1, 2),
        causal: bool = False,
    ) -> None:
        super().__init__()
        branches = len(dilations) + 2
        if not dilations or out_channels % branches != 0:
            raise ValueError(
                f"MultiScaleTemporalConv: out_channels: expected a multiple of the "
                f"{branches} branches (len(dilations) + 2), got {out_channels}"
            )
        width = out_channels // branches
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilations = tuple(dilations)
        self.causal = causal

        def reduce(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 1, stride=(stride, 1)), nn.BatchNorm2d(c_out)]

        dilated = [
            nn.Sequential(
                *reduce(in_channels, width),
                nn.ReLU(inplace=True),
                TemporalConv(
                    width, width, kernel_size, stride=stride, dilation=dilation, causal=causal
                ),
            )
            for dilation in self.dilations
        ]
        # past-only pooling pads two frames of -inf before the clip, centred pooling one each side
        pad = nn.ConstantPad2d((0, 0, 2, 0), -torch.inf) if causal else nn.Identity()
        pool = nn.MaxPool2d((3, 1), stride=(stride, 1), padding=(0 if causal else 1, 0))
        pooled = nn.Sequential(
            *reduce(in_channels, width), nn.ReLU(inplace=True), pad, pool, nn.BatchNorm2d(width)
        )
        pointwise = nn.Sequential(*reduce(in_channels, width, stride))
        self.branches = nn.ModuleList([*dilated, pooled, pointwise])

    def reset_parameters(self) -> None:
        """Re-initialises every convolution and batch norm."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
                module.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        """Applies the unit to ``x`` of shape :math:`(B, C_{in}, T, V)`."""
        return torch.cat([branch(x) for branch in self.branches], dim=1).relu_()

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, "
            f"dilations={list(self.dilations)}, causal={self.causal})"
        )
