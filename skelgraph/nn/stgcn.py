"""ST-GCN layers: partitioned spatial graph convolution and the spatial-temporal block.

Both accept the batched-graph layout of PyG, node features ``[B·V, T, C]`` (``forward``), and
the dense layout ``[B, C, T, V]`` (``forward_dense``), which is what convolutions and batch norm
work on; a model stacking these layers converts once and calls ``forward_dense``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skelgraph.layouts import Layout, get_layout
from skelgraph.layouts.graph import spatial_partitions
from skelgraph.nn.temporal_conv import MultiScaleTemporalConv, TemporalConv

PARTITION_STRATEGIES = ("uniform", "distance", "spatial")


def graph_partitions(layout: Layout | str, strategy: str = "spatial") -> Tensor:
    r"""ST-GCN's partitions of every joint's one-hop neighbourhood.

    ``"spatial"``: root / centripetal / centrifugal (:math:`K = 3`, see
    :func:`~skelgraph.layouts.graph.spatial_partitions`); ``"distance"``: the joint itself /
    its neighbours (:math:`K = 2`); ``"uniform"``: the whole neighbourhood (:math:`K = 1`). As in
    ST-GCN the neighbourhood is normalised before it is split, so every strategy sums to the
    same row-normalised :math:`\mathbf{A} + \mathbf{I}`. ``P[k, i, j]`` weighs the message from
    joint ``j`` to joint ``i``.

    Returns:
        Tensor: ``[K, V, V]`` float32.
    """
    parts = spatial_partitions(layout)
    if strategy == "spatial":
        return parts
    total = parts.sum(0)
    if strategy == "uniform":
        return total.unsqueeze(0)
    if strategy == "distance":
        own = torch.diag_embed(total.diagonal())
        return torch.stack([own, total - own])
    raise ValueError(f"partition: expected one of {PARTITION_STRATEGIES}, got {strategy!r}")


def resolve_partitions(layout: Layout | str | Tensor, strategy: str) -> tuple[Tensor, str | None]:
    """Partition matrices ``[K, V, V]`` of ``layout`` (or ``layout`` itself when it is already a
    ``[K, V, V]`` tensor) and the layout's name (:obj:`None` for a tensor)."""
    if isinstance(layout, Tensor):
        if layout.dim() != 3 or layout.size(1) != layout.size(2) or layout.size(0) < 1:
            raise ValueError(
                f"partitions: expected a tensor of shape [K, V, V], got {tuple(layout.shape)}"
            )
        return layout.detach().float().clone(), None
    resolved = get_layout(layout)
    return graph_partitions(resolved, strategy), resolved.name


def aggregate(x: Tensor, graph: Tensor) -> Tensor:
    r"""Sums the per-partition messages over the joints of dense features:
    :math:`\mathbf{X}'_{:, t} = \sum_k \mathbf{X}_{k, :, t} \mathbf{A}_k^\top`.

    Args:
        x (Tensor): features of shape :math:`(B, K \cdot C, T, V)`, partition-major channels.
        graph (Tensor): :math:`(K, V, V)` (shared), :math:`(B, K, V, V)` (per sample) or
            :math:`(B, K, T, V, V)` (per frame); ``graph[..., k, i, j]`` weighs the message from
            joint ``j`` to joint ``i``.

    Returns:
        Tensor: :math:`(B, C, T, V)`.
    """
    b, kc, t, v = x.shape
    k = _num_partitions(graph)
    if graph.dim() == 5:
        return torch.einsum("bkctj,bktij->bcti", x.view(b, k, kc // k, t, v), graph)
    out = x.view(b, k, kc // k * t, v) @ graph.mT
    return out.sum(1).view(b, kc // k, t, v)


def partition_messages(x: Tensor, graph: Tensor) -> Tensor:
    r"""The messages of every partition, :math:`\mathbf{X}_{:, t} \mathbf{A}_k^\top` for each
    :math:`k`, stacked partition-major: :math:`(B, C, T, V) \to (B, K \cdot C, T, V)`; ``graph``
    as in :func:`aggregate`."""
    b, c, t, v = x.shape
    k = _num_partitions(graph)
    if graph.dim() == 5:
        return torch.einsum("bctj,bktij->bkcti", x, graph).reshape(b, k * c, t, v)
    return (x.reshape(b, 1, c * t, v) @ graph.mT).view(b, k * c, t, v)


def graph_conv(x: Tensor, weight: Tensor, graph: Tensor) -> Tensor:
    r"""Partitioned graph convolution :math:`\sum_k \mathbf{A}_k \mathbf{X}_t \mathbf{W}_k` of
    dense features :math:`(B, C_{in}, T, V) \to (B, C_{out}, T, V)`.

    ``weight`` is a :math:`1 \times 1` convolution weight of shape
    :math:`(K \cdot C_{out}, C_{in}, 1, 1)` (partition-major, as in ST-GCN) and ``graph`` as in
    :func:`aggregate`. The cheaper order is taken: convolve, then aggregate :math:`K C_{out}`
    channels when :math:`C_{in} \ge C_{out}`; aggregate :math:`K C_{in}` channels, then convolve
    with the :math:`K` weights merged, when :math:`C_{in} < C_{out}` (e.g. the first layer).
    """
    k = _num_partitions(graph)
    c_out, c_in = weight.size(0) // k, weight.size(1)
    if c_in >= c_out:
        return aggregate(F.conv2d(x, weight), graph)
    merged = weight.view(k, c_out, c_in).transpose(0, 1).reshape(c_out, k * c_in, 1, 1)
    return F.conv2d(partition_messages(x, graph), merged)


def _num_partitions(graph: Tensor) -> int:
    return graph.size(1) if graph.dim() == 5 else graph.size(-3)


def reset_children(module: nn.Module) -> None:
    """Calls ``reset_parameters`` of each child of ``module`` that has one, recursing into the
    children that have none (so a layer's own initialisation is not overwritten)."""
    for child in module.children():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()
        else:
            reset_children(child)


class DenseGraphModule(nn.Module):
    r"""Base of the skeleton layers that compute on dense features :math:`(B, C, T, V)`.

    :meth:`forward` takes the batched-graph layout :math:`(B \cdot V, T, C)` of PyG (nodes
    graph-major, every graph with the same :math:`V` joints in layout order), converts to the
    dense layout, runs :meth:`forward_dense` and converts back.
    """

    in_channels: int
    out_channels: int
    num_joints: int
    #: name of the skeleton layout, :obj:`None` when built from partition matrices
    layout_name: str | None

    def forward(self, x: Tensor) -> Tensor:
        """Applies the layer to node features of shape :math:`(B \\cdot V, T, C_{in})`, returning
        :math:`(B \\cdot V, T', C_{out})`."""
        v = self.num_joints
        if x.dim() != 3 or x.size(0) % v != 0:
            raise ValueError(
                f"{self.__class__.__name__}: x: expected node features of shape (B*{v}, T, C), "
                f"got {tuple(x.shape)}"
            )
        n, t, c = x.shape
        dense = x.reshape(n // v, v, t, c).permute(0, 3, 2, 1).contiguous()
        out = self.forward_dense(dense)
        return out.permute(0, 3, 2, 1).reshape(n, out.size(2), out.size(1))

    def forward_dense(self, x: Tensor) -> Tensor:
        """Applies the layer to dense features of shape :math:`(B, C_{in}, T, V)`."""
        raise NotImplementedError

    def _check_dense(self, x: Tensor) -> None:
        if x.dim() != 4 or x.size(1) != self.in_channels or x.size(3) != self.num_joints:
            raise ValueError(
                f"{self.__class__.__name__}: x: expected dense features of shape "
                f"(B, {self.in_channels}, T, {self.num_joints}), got {tuple(x.shape)}"
            )


class STGCNConv(DenseGraphModule):
    r"""The spatial graph convolution of ST-GCN (`Yan et al., 2018
    <https://arxiv.org/abs/1801.07455>`_), applied to every frame.

    .. math::
        \mathbf{X}'_t = \sum_{k=1}^{K} (\mathbf{A}_k \odot \mathbf{M}_k)
        (\mathbf{X}_t \mathbf{W}_k + \mathbf{1} \mathbf{b}_k^\top)

    where :math:`\mathbf{X}_t \in \mathbb{R}^{V \times C_{in}}` holds the joints of frame
    :math:`t`, :math:`\mathbf{A}_k` are the neighbourhood partitions (:func:`graph_partitions`),
    :math:`\mathbf{M}_k` the learnable edge importance (initialised to ones) and
    :math:`\mathbf{W}_k, \mathbf{b}_k` the :math:`k`-th slice of one :math:`1 \times 1`
    convolution to :math:`K \cdot C_{out}` channels (``conv``, laid out as in ST-GCN), whose
    outputs are aggregated over the joints by the :math:`K` partition matrices. When
    :math:`C_{in} < C_{out}` the joints are aggregated first, which gives the same result at a
    lower cost (see :func:`graph_conv`).

    Args:
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`.
        layout (Layout or str or Tensor): the skeleton layout, or partition matrices of shape
            :math:`(K, V, V)` (``A[k, i, j]`` weighs the message from joint ``j`` to ``i``).
        partition (str, optional): ``"spatial"`` (:math:`K = 3`), ``"distance"`` (:math:`K = 2`)
            or ``"uniform"`` (:math:`K = 1`); unused when ``layout`` is a tensor.
            (default: ``"spatial"``)
        edge_importance (bool, optional): learn :math:`\mathbf{M}_k`; otherwise
            :math:`\mathbf{M}_k = \mathbf{1}`. (default: :obj:`True`)
        bias (bool, optional): learn :math:`\mathbf{b}_k`. (default: :obj:`True`)

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
        partition: str = "spatial",
        edge_importance: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        partitions, self.layout_name = resolve_partitions(layout, partition)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.partition = partition if self.layout_name is not None else None
        self.num_subsets, self.num_joints = partitions.size(0), partitions.size(-1)
        self.register_buffer("partitions", partitions)
        self.conv = nn.Conv2d(in_channels, self.num_subsets * out_channels, 1, bias=bias)
        if edge_importance:
            self.edge_importance = nn.Parameter(torch.ones_like(partitions))
        else:
            self.register_parameter("edge_importance", None)

    def reset_parameters(self) -> None:
        """Re-initialises the convolution and sets the edge importance to ones."""
        self.conv.reset_parameters()
        if self.edge_importance is not None:
            nn.init.ones_(self.edge_importance)

    def graph(self, x: Tensor | None = None) -> Tensor:
        r"""The effective partitions :math:`\mathbf{A}_k \odot \mathbf{M}_k`, shape
        :math:`(K, V, V)`, the same for every input: ``x`` is accepted (and unused) so that
        every spatial layer answers ``graph(x)``, as
        :meth:`~skelgraph.nn.agcn.AdaptiveGraphConv.graph` does."""
        if self.edge_importance is None:
            return self.partitions
        return self.partitions * self.edge_importance

    def forward_dense(self, x: Tensor) -> Tensor:
        """Applies the convolution to dense features :math:`(B, C_{in}, T, V)`, returning
        :math:`(B, C_{out}, T, V)`."""
        self._check_dense(x)
        graph = self.graph()
        out = graph_conv(x, self.conv.weight, graph)
        if self.conv.bias is None:
            return out
        node_bias = self.conv.bias.view(self.num_subsets, self.out_channels).T @ graph.sum(-1)
        return out.add_(node_bias.unsqueeze(1))

    def __repr__(self) -> str:
        graph = f"layout={self.layout_name}, partition={self.partition}"
        if self.layout_name is None:
            graph = f"num_subsets={self.num_subsets}, num_joints={self.num_joints}"
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, {graph})"


class GraphTemporalBlock(DenseGraphModule):
    r"""A spatial graph layer, a temporal convolution unit and a residual connection:

    .. math::
        \mathbf{X}' = \mathrm{ReLU}\big(\mathrm{TCN}(\mathcal{S}(\mathbf{X}))
        + \mathcal{R}(\mathbf{X})\big)

    :math:`\mathcal{S}` is :meth:`spatial` (the spatial layer ``gcn``), :math:`\mathrm{TCN}` a
    temporal unit (:class:`~skelgraph.nn.temporal_conv.TemporalConv` or
    :class:`~skelgraph.nn.temporal_conv.MultiScaleTemporalConv`) and :math:`\mathcal{R}` the
    identity (same channels, stride 1), a strided :math:`1 \times 1` convolution with batch norm,
    or zero (``residual=False``). With a causal unit, output frame :math:`t` depends on input
    frames :math:`\le s t` only, provided :math:`\mathcal{S}` acts on each frame separately or
    causally (and, in training mode, up to batch-norm statistics).

    Args:
        gcn (DenseGraphModule): the spatial layer, :math:`C_{in} \to C_{out}`.
        tcn (TemporalConv or MultiScaleTemporalConv): the temporal unit,
            :math:`C_{out} \to C_{out}`; its ``kernel_size``, ``stride`` :math:`s` and ``causal``
            are the block's.
        residual (bool): add :math:`\mathcal{R}`.

    Shapes:
        - **input:** :math:`(B \cdot V, T, C_{in})` or :math:`(B, C_{in}, T, V)`
        - **output:** :math:`(B \cdot V, \lceil T / s \rceil, C_{out})` or
          :math:`(B, C_{out}, \lceil T / s \rceil, V)`
    """

    def __init__(
        self, gcn: DenseGraphModule, tcn: TemporalConv | MultiScaleTemporalConv, *, residual: bool
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = gcn.in_channels, gcn.out_channels
        self.num_joints = gcn.num_joints
        self.layout_name = gcn.layout_name
        self.stride = tcn.stride
        self.causal = tcn.causal
        self.gcn = gcn
        self.tcn = tcn
        self.residual: nn.Module | None = None
        if residual and self.in_channels == self.out_channels and self.stride == 1:
            self.residual = nn.Identity()
        elif residual:
            self.residual = nn.Sequential(
                nn.Conv2d(self.in_channels, self.out_channels, 1, stride=(self.stride, 1)),
                nn.BatchNorm2d(self.out_channels),
            )

    def reset_parameters(self) -> None:
        """Re-initialises every sub-layer."""
        reset_children(self)

    def spatial(self, x: Tensor) -> Tensor:
        """The spatial part :math:`\\mathcal{S}` on dense features."""
        return self.gcn.forward_dense(x)

    def forward_dense(self, x: Tensor) -> Tensor:
        """Applies the block to dense features :math:`(B, C_{in}, T, V)`."""
        out = self.tcn(self.spatial(x))
        if self.residual is not None:
            out = out + self.residual(x)
        return F.relu(out, inplace=True)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"layout={self.layout_name}, kernel_size={self.tcn.kernel_size}, "
            f"stride={self.stride}, causal={self.causal})"
        )


class STGCNBlock(GraphTemporalBlock):
    r"""The ST-GCN block: :class:`STGCNConv`, batch norm and ReLU, then the temporal unit
    (:math:`k \times 1` convolution, batch norm, dropout), the residual and a ReLU:

    .. math::
        \mathbf{X}' = \mathrm{ReLU}\big(\mathrm{TCN}(\mathrm{ReLU}(\mathrm{BN}(
        \mathrm{STGCNConv}(\mathbf{X})))) + \mathcal{R}(\mathbf{X})\big)

    See :class:`GraphTemporalBlock` for the residual and for causality.

    Args:
        in_channels (int): input channels :math:`C_{in}`.
        out_channels (int): output channels :math:`C_{out}`.
        layout (Layout or str or Tensor): as in :class:`STGCNConv`.
        stride (int, optional): temporal stride :math:`s`. (default: :obj:`1`)
        kernel_size (int, optional): temporal kernel size. (default: :obj:`9`)
        dropout (float, optional): dropout after the temporal convolution. (default: :obj:`0.0`)
        residual (bool, optional): add the residual. (default: :obj:`True`)
        causal (bool, optional): output frame :math:`t` never depends on later frames (left
            padding of the temporal convolution). (default: :obj:`False`)
        partition (str, optional): as in :class:`STGCNConv`. (default: ``"spatial"``)
        edge_importance (bool, optional): as in :class:`STGCNConv`. (default: :obj:`True`)

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
        partition: str = "spatial",
        edge_importance: bool = True,
    ) -> None:
        gcn = STGCNConv(
            in_channels,
            out_channels,
            layout,
            partition=partition,
            edge_importance=edge_importance,
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
        self.bn = nn.BatchNorm2d(out_channels)

    def spatial(self, x: Tensor) -> Tensor:
        """:math:`\\mathrm{ReLU}(\\mathrm{BN}(\\mathrm{STGCNConv}(\\mathbf{X})))` on dense
        features."""
        return F.relu(self.bn(self.gcn.forward_dense(x)), inplace=True)
