"""2s-AGCN layers: adaptive graph convolution and its spatial-temporal block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skelgraph.layouts import Layout
from skelgraph.nn.stgcn import (
    DenseGraphModule,
    GraphTemporalBlock,
    graph_conv,
    reset_children,
    resolve_partitions,
)
from skelgraph.nn.temporal_conv import TemporalConv

_STRATEGY_BY_SUBSETS = {1: "uniform", 2: "distance", 3: "spatial"}


class AdaptiveGraphConv(DenseGraphModule):
    r"""The adaptive graph convolution of 2s-AGCN (`Shi et al., 2019
    <https://arxiv.org/abs/1805.07694>`_), applied to every frame:

    .. math::
        \mathbf{X}'_t = \mathrm{ReLU}\Big(\mathrm{BN}\Big(\sum_{k=1}^{K}
        (\hat{\mathbf{A}}_k + \mathbf{B}_k + \mathbf{C}_k(\mathbf{X})) \, \mathbf{X}_t
        \mathbf{W}_k\Big) + \mathrm{Down}(\mathbf{X})_t\Big)

        \mathbf{C}_k(\mathbf{X})_{ij} = \operatorname{softmax}_j \left(
        \frac{\phi_k(\mathbf{X})_i^\top \, \theta_k(\mathbf{X})_j}{C_e T} \right)

    :math:`\hat{\mathbf{A}}_k` are the layout's neighbourhood partitions
    (:func:`~skelgraph.nn.stgcn.graph_partitions`), :math:`\mathbf{B}_k` a learnable global graph
    initialised to zeros (the reference code uses :math:`10^{-6}`; either way it starts as no
    change to the graph and receives gradients), and :math:`\mathbf{C}_k(\mathbf{X})` the
    sample's embedded-Gaussian graph: :math:`\theta_k, \phi_k` are :math:`1 \times 1`
    convolutions to :math:`C_e` channels, and :math:`\theta_k(\mathbf{X})_j,
    \phi_k(\mathbf{X})_j \in \mathbb{R}^{C_e T}` the embeddings of joint :math:`j` over all
    frames. With ``causal=True`` frame :math:`t` uses a graph of frames :math:`\le t` only,
    :math:`\mathbf{C}^{(t)}_k = \operatorname{softmax}_j(\sum_{\tau \le t}
    \phi_{k,\tau,i}^\top \theta_{k,\tau,j} / (C_e (t + 1)))`, which equals the full-window graph
    at the last frame. :math:`\mathrm{Down}` is the identity when :math:`C_{in} = C_{out}`, else a
    :math:`1 \times 1` convolution with batch norm. As in the reference code, the batch norm's
    scale starts at :math:`10^{-6}` (the layer starts close to :math:`\mathrm{Down}`) and
    :math:`\mathbf{W}_k` is drawn from :math:`\mathcal{N}(0, 2 / (K C_{in} C_{out}))`.

    Args:
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`.
        layout (Layout or str or Tensor): the skeleton layout, or the matrices
            :math:`\hat{\mathbf{A}}` of shape :math:`(K, V, V)` (``A[k, i, j]`` weighs the message
            from joint ``j`` to ``i``).
        num_subsets (int, optional): :math:`K`: 3 (spatial partitions), 2 (self / neighbours)
            or 1 (whole neighbourhood). (default: :obj:`3`)
        embed_channels (int, optional): :math:`C_e`. (default: :obj:`max(out_channels // 4, 1)`)
        adaptive (bool, optional): use :math:`\mathbf{C}_k(\mathbf{X})`; otherwise the graph is
            :math:`\hat{\mathbf{A}}_k + \mathbf{B}_k`. (default: :obj:`True`)
        causal (bool, optional): compute :math:`\mathbf{C}_k` from past frames only.
            (default: :obj:`False`)

    Shapes:
        - **input:** node features :math:`(B \cdot V, T, C_{in})` (:meth:`forward`) or dense
          features :math:`(B, C_{in}, T, V)` (:meth:`forward_dense`)
        - **output:** :math:`(B \cdot V, T, C_{out})` or :math:`(B, C_{out}, T, V)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: Layout | str | Tensor,
        *,
        num_subsets: int = 3,
        embed_channels: int | None = None,
        adaptive: bool = True,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(layout, Tensor) and num_subsets not in _STRATEGY_BY_SUBSETS:
            raise ValueError(
                f"AdaptiveGraphConv: num_subsets: expected one of "
                f"{sorted(_STRATEGY_BY_SUBSETS)}, got {num_subsets}"
            )
        partitions, self.layout_name = resolve_partitions(
            layout, _STRATEGY_BY_SUBSETS.get(num_subsets, "spatial")
        )
        if partitions.size(0) != num_subsets:
            raise ValueError(
                f"AdaptiveGraphConv: layout: expected {num_subsets} partition matrices "
                f"(num_subsets), got {partitions.size(0)}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_subsets = num_subsets
        self.num_joints = partitions.size(-1)
        self.embed_channels = embed_channels or max(out_channels // 4, 1)
        self.adaptive = adaptive
        self.causal = causal

        self.register_buffer("partitions", partitions)
        self.global_graph = nn.Parameter(torch.zeros_like(partitions))
        if adaptive:
            self.theta = nn.Conv2d(in_channels, num_subsets * self.embed_channels, 1)
            self.phi = nn.Conv2d(in_channels, num_subsets * self.embed_channels, 1)
        self.conv = nn.Conv2d(in_channels, num_subsets * out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.down: nn.Module = nn.Identity()
        if in_channels != out_channels:
            self.down = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)
            )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialises as the reference implementation does (see the class description) and
        sets :math:`\\mathbf{B}` to zeros."""
        reset_children(self)
        nn.init.zeros_(self.global_graph)
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d) and conv is not self.conv:
                nn.init.kaiming_normal_(conv.weight, mode="fan_out")
                nn.init.zeros_(conv.bias)
        std = math.sqrt(2.0 / (self.num_subsets * self.in_channels * self.out_channels))
        nn.init.normal_(self.conv.weight, 0.0, std)
        nn.init.constant_(self.bn.weight, 1e-6)

    def individual_graph(self, x: Tensor) -> Tensor:
        r"""The sample graphs :math:`\mathbf{C}_k(\mathbf{X})` of dense features ``x``
        :math:`(B, C_{in}, T, V)`: shape :math:`(B, K, V, V)`, or :math:`(B, K, T, V, V)` when
        causal; rows (targets) sum to 1."""
        if not self.adaptive:
            raise ValueError(
                "AdaptiveGraphConv.individual_graph: the layer was built with adaptive=False"
            )
        b, _, t, v = x.shape
        k, e = self.num_subsets, self.embed_channels
        theta = self.theta(x).view(b, k, e, t, v)
        phi = self.phi(x).view(b, k, e, t, v)
        if not self.causal:
            scores = phi.view(b, k, e * t, v).mT @ theta.view(b, k, e * t, v)
            return torch.softmax(scores / (e * t), dim=-1)
        scores = torch.einsum("bkcti,bkctj->bktij", phi, theta).cumsum(dim=2)
        frames = torch.arange(1, t + 1, device=x.device, dtype=x.dtype).view(1, 1, t, 1, 1)
        return torch.softmax(scores / (e * frames), dim=-1)

    def graph(self, x: Tensor | None = None) -> Tensor:
        r""":math:`\hat{\mathbf{A}}_k + \mathbf{B}_k`, plus :math:`\mathbf{C}_k(\mathbf{X})` when
        the layer is adaptive and dense features ``x`` are given: shape :math:`(K, V, V)`,
        :math:`(B, K, V, V)` or (causal) :math:`(B, K, T, V, V)`."""
        graph = self.partitions + self.global_graph
        if not self.adaptive or x is None:
            return graph
        individual = self.individual_graph(x)
        return individual + (graph.unsqueeze(1) if self.causal else graph)

    def forward_dense(self, x: Tensor) -> Tensor:
        """Applies the layer to dense features :math:`(B, C_{in}, T, V)`, returning
        :math:`(B, C_{out}, T, V)`."""
        self._check_dense(x)
        out = self.bn(graph_conv(x, self.conv.weight, self.graph(x)))
        return F.relu(out + self.down(x), inplace=True)

    def __repr__(self) -> str:
        graph = f"layout={self.layout_name}"
        if self.layout_name is None:
            graph = f"num_joints={self.num_joints}"
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, {graph}, "
            f"num_subsets={self.num_subsets}, adaptive={self.adaptive}, causal={self.causal})"
        )


class AGCNBlock(GraphTemporalBlock):
    r"""The 2s-AGCN block: :class:`AdaptiveGraphConv`, then the temporal unit (:math:`k \times 1`
    convolution, batch norm, dropout), the residual and a ReLU:

    .. math::
        \mathbf{X}' = \mathrm{ReLU}\big(\mathrm{TCN}(\mathrm{AdaptiveGraphConv}(\mathbf{X}))
        + \mathcal{R}(\mathbf{X})\big)

    See :class:`~skelgraph.nn.stgcn.GraphTemporalBlock` for the residual. ``causal=True`` makes
    both the temporal convolution and the sample graph :math:`\mathbf{C}_k` causal, so output
    frame :math:`t` never depends on later frames (in eval mode).

    Args:
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`.
        layout (Layout or str or Tensor): as in :class:`AdaptiveGraphConv`.
        stride (int, optional): temporal stride :math:`s`. (default: :obj:`1`)
        kernel_size (int, optional): temporal kernel size. (default: :obj:`9`)
        dropout (float, optional): dropout after the temporal convolution. (default: :obj:`0.0`)
        residual (bool, optional): add the residual. (default: :obj:`True`)
        causal (bool, optional): never look at later frames. (default: :obj:`False`)
        num_subsets (int, optional): as in :class:`AdaptiveGraphConv`. (default: :obj:`3`)
        embed_channels (int, optional): as in :class:`AdaptiveGraphConv`.
        adaptive (bool, optional): as in :class:`AdaptiveGraphConv`. (default: :obj:`True`)

    Shapes:
        - **input:** :math:`(B \cdot V, T, C_{in})` (:meth:`forward`) or :math:`(B, C_{in}, T, V)`
          (:meth:`forward_dense`)
        - **output:** :math:`(B \cdot V, \lceil T / s \rceil, C_{out})` or
          :math:`(B, C_{out}, \lceil T / s \rceil, V)`
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        layout: Layout | str | Tensor,
        *,
        stride: int = 1,
        kernel_size: int = 9,
        dropout: float = 0.0,
        residual: bool = True,
        causal: bool = False,
        num_subsets: int = 3,
        embed_channels: int | None = None,
        adaptive: bool = True,
    ) -> None:
        gcn = AdaptiveGraphConv(
            in_channels,
            out_channels,
            layout,
            num_subsets=num_subsets,
            embed_channels=embed_channels,
            adaptive=adaptive,
            causal=causal,
        )
        tcn = TemporalConv(
            out_channels,
            out_channels,
            kernel_size,
            stride=stride,
            dropout=dropout,
            causal=causal,
        )
        super().__init__(gcn, tcn, residual=residual)
