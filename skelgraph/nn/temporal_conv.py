"""Temporal convolution of ST-GCN-style blocks, along the time axis of dense skeleton tensors."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TemporalConv"]


class TemporalConv(nn.Module):
    r"""Temporal convolution unit of ST-GCN-style blocks: a :math:`(k \times 1)` convolution along
    time, batch normalisation and dropout, on dense skeleton tensors.

    .. math::
        \mathbf{X}'_{:, t} = \mathrm{Dropout}\Big(\mathrm{BN}\Big(\sum_{i=0}^{k-1}
        \mathbf{W}_i \, \mathbf{X}_{:, s t + i - p}\Big)\Big)

    with stride :math:`s`. Centred (``causal=False``): :math:`p = (k - 1) / 2` frames of zero
    padding on both sides, so output frame :math:`t` is centred on input frame :math:`s t`.
    Causal: :math:`p = k - 1` frames on the past side only, so output frame :math:`t` ends at
    input frame :math:`s t` and never depends on later frames. Either way there are
    :math:`\lceil T / s \rceil` output frames, aligned with a stride-:math:`s` residual.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels.
        kernel_size (int, optional): temporal extent :math:`k` (odd unless ``causal``).
            (default: :obj:`9`)
        stride (int, optional): temporal stride :math:`s`. (default: :obj:`1`)
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
        dropout: float = 0.0,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(
                f"TemporalConv: kernel_size and stride must be positive, got {kernel_size} "
                f"and {stride}"
            )
        if not causal and kernel_size % 2 == 0:
            raise ValueError(
                f"TemporalConv: kernel_size must be odd for centred padding, got {kernel_size}"
            )
        self.kernel_size = kernel_size
        self.stride = stride
        self.causal = causal
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            (kernel_size, 1),
            stride=(stride, 1),
            padding=(0 if causal else (kernel_size - 1) // 2, 0),
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
            x = F.pad(x, (0, 0, self.kernel_size - 1, 0))
        return self.dropout(self.bn(self.conv(x)))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.conv.in_channels}, {self.conv.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, causal={self.causal})"
        )
