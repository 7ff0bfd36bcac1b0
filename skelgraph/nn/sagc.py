r"""Self-attention graph convolution (SA-GC) of InfoGCN and InfoGCN++ as a PyG layer."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import BatchNorm1d, Identity, LayerNorm, Module, Parameter
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.typing import OptTensor
from torch_geometric.utils import softmax

from skelgraph.layouts.graph import complete_edge_index

__all__ = ["SAGC"]

_HOOKS = (
    "_propagate_forward_pre_hooks",
    "_propagate_forward_hooks",
    "_message_forward_pre_hooks",
    "_message_forward_hooks",
    "_aggregate_forward_pre_hooks",
    "_aggregate_forward_hooks",
    "_edge_update_forward_pre_hooks",
    "_edge_update_forward_hooks",
)


class SAGC(MessagePassing):
    r"""The self-attention graph convolution from `"InfoGCN: Representation Learning for Human
    Skeleton-based Action Recognition" <https://arxiv.org/abs/2206.00270>`_ (and InfoGCN++).

    For every frame (every index of the extra feature dimensions) and head :math:`m`:

    .. math::
        \alpha^m_{i,j} = \frac{\exp\left(\mathbf{q}^m_i \cdot \mathbf{k}^m_j / \sqrt{D'}\right)}
        {\sum_{k \in \mathcal{N}(i)} \exp\left(\mathbf{q}^m_i \cdot \mathbf{k}^m_k /
        \sqrt{D'}\right)},
        \qquad \mathbf{q}^m_i = \mathbf{W}^m_Q \mathbf{x}_i + \mathbf{b}^m_Q,
        \quad \mathbf{k}^m_j = \mathbf{W}^m_K \mathbf{x}_j + \mathbf{b}^m_K,

    .. math::
        \mathbf{x}^{\prime}_i = \sigma\left(\mathrm{Norm}\left(\sum_{m=1}^{M} \mathbf{W}_m
        \sum_{j \in \mathcal{N}(i)} \hat{A}^m_{i,j}\, \alpha^m_{i,j}\, \mathbf{x}_j
        + \mathbf{b}\right) + \mathrm{Res}(\mathbf{x}_i)\right),

    i.e. :math:`A^m_{\mathrm{eff}} = \hat{A}^m \odot \mathrm{softmax}(Q^m K^{m\top} / \sqrt{D'})`
    restricted to the edges, and :math:`H' = \sigma(\sum_m A^m_{\mathrm{eff}} H W_m + b)`.
    The queries and keys are plain linear projections (no activation, so they can be negative).
    As in InfoGCN, :math:`\hat{A} \odot \mathrm{softmax}` is not renormalised: the rows of
    :math:`A^m_{\mathrm{eff}}` need not sum to one (a learned :math:`\hat{A}` is signed, so a row
    sum can vanish); the normalisation layer after the aggregation controls the scale.
    :math:`\hat{A}^m_{i,j}` is

    * the learned (or fixed) per-head topology ``topology[m, i mod V, j mod V]`` when
      :obj:`num_nodes` :math:`= V` is set, shared across samples and frames, times
    * :obj:`edge_weight[e]` of edge :math:`e = (j \to i)` when given (shared across heads),
    * and :math:`1` for whichever of the two is absent (plain attention over the given edges).

    With :obj:`num_nodes` set and :obj:`edge_index` the all-pairs graph of
    :func:`~skelgraph.layouts.graph.complete_edge_index` (``V`` nodes per graph, in its canonical
    order) and no :obj:`edge_weight`, :meth:`forward` runs :meth:`forward_dense`, which computes
    the same function with dense per-frame :math:`V \times V` attention and one batched matrix
    product for all heads. The check is cached by tensor identity, so repeated calls with the same
    :obj:`edge_index` do not pay for it. Explain mode and message-passing hooks always use the
    edge-wise path.

    TorchScript is not supported: :meth:`forward` chooses its path from Python-side state (a weak
    reference to the last :obj:`edge_index`) and accepts any number of extra feature dimensions,
    which :func:`torch.jit.script` cannot compile; it raises a :class:`RuntimeError` saying so.
    Use :func:`torch.compile` (the check runs eagerly, a new :obj:`edge_index` per batch does not
    recompile) or :func:`torch.export.export`. Export cannot read :obj:`edge_index`, so an
    exported :meth:`forward` always takes the edge-wise path; export a module that calls
    :meth:`forward_dense` for the fused one.

    Args:
        in_channels (int): Size of each input sample :math:`C`.
        out_channels (int): Size of each output sample :math:`C'`.
        heads (int, optional): Number of attention heads :math:`M`. (default: :obj:`3`)
        num_nodes (int, optional): Number of joints :math:`V` of the fixed layout; enables the
            per-head topology and the fused all-pairs path. Node ``n`` is joint ``n mod V`` of
            graph ``n // V``. Inferred from :obj:`adjacency` when omitted. (default: :obj:`None`)
        adjacency (torch.Tensor, optional): Initial normalised topology :math:`\hat{A}`, shape
            ``[V, V]`` (copied to every head) or ``[heads, V, V]``, with ``A[i, j]`` the weight of
            ``j → i`` (e.g. :func:`~skelgraph.layouts.graph.adjacency`). When omitted, the learned
            topology starts at all ones, i.e. plain attention. (default: :obj:`None`)
        learn_topology (bool, optional): If :obj:`True`, the topology is a parameter
            ``[heads, V, V]``; otherwise :obj:`adjacency` is a fixed buffer (and without it
            :math:`\hat{A} = 1`). Ignored when :obj:`num_nodes` is :obj:`None`.
            (default: :obj:`True`)
        attention_channels (int, optional): Query/key size :math:`D'` per head.
            (default: ``max(8, in_channels // 8)``; InfoGCN uses ``in_channels // 8``)
        bias (bool, optional): If :obj:`False`, no additive bias :math:`\mathbf{b}` (batch
            norm cancels it anyway). (default: :obj:`True`)
        residual (bool, optional): If :obj:`True`, adds :math:`\mathrm{Res}(\mathbf{x})`, the
            identity when :math:`C = C'` and a linear projection otherwise. (default: :obj:`True`)
        norm (bool or str, optional): Normalisation over channels before the residual:
            :obj:`True` or ``"batch"`` for batch norm (statistics over all nodes and frames, as
            InfoGCN), ``"layer"`` for layer norm (per node and frame, independent of the batch),
            :obj:`False`/:obj:`None` for none. (default: :obj:`True`)
        activation (bool, optional): If :obj:`True`, :math:`\sigma` is ReLU, otherwise the
            identity (use :obj:`False` when the output feeds attention queries and keys).
            (default: :obj:`True`)
        **kwargs (optional): Additional arguments of
            :class:`torch_geometric.nn.conv.MessagePassing` (``node_dim`` is fixed to ``0``).

    Shapes:
        - **input:**
          node features :math:`(|\mathcal{V}|, *, C)` with any extra dimensions :math:`*`
          (e.g. frames :math:`T`),
          edge indices :math:`(2, |\mathcal{E}|)`,
          edge weights :math:`(|\mathcal{E}|)` *(optional)*
        - **output:** node features :math:`(|\mathcal{V}|, *, C')`.
          If :obj:`return_attention_weights` is set, then
          :math:`((|\mathcal{V}|, *, C'), ((2, |\mathcal{E}|), (|\mathcal{E}|, *, M)))`,
          the attention :math:`\alpha` before the product with :math:`\hat{A}`.
        - :meth:`forward_dense`: :math:`(B, V, T, C) \to (B, V, T, C')`, attention
          :math:`(B, T, M, V, V)` indexed ``[b, t, m, i, j]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int = 3,
        *,
        num_nodes: int | None = None,
        adjacency: Tensor | None = None,
        learn_topology: bool = True,
        attention_channels: int | None = None,
        bias: bool = True,
        residual: bool = True,
        norm: bool | str | None = True,
        activation: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        positive = {"in_channels": in_channels, "out_channels": out_channels, "heads": heads}
        positive |= {"num_nodes": num_nodes, "attention_channels": attention_channels}
        for name, value in positive.items():
            if value is not None and value < 1:
                raise ValueError(f"SAGC: {name}: expected a positive integer, got {value}")
        if adjacency is not None:
            adjacency = torch.as_tensor(adjacency, dtype=torch.get_default_dtype())
            if num_nodes is None and adjacency.dim() in (2, 3):
                num_nodes = adjacency.size(-1)
            if adjacency.dim() not in (2, 3) or adjacency.shape[-2:] != (num_nodes, num_nodes):
                raise ValueError(
                    f"SAGC: adjacency: expected shape [{num_nodes}, {num_nodes}] or "
                    f"[{heads}, {num_nodes}, {num_nodes}], got {list(adjacency.shape)}"
                )
            if adjacency.dim() == 3 and adjacency.size(0) != heads:
                raise ValueError(
                    f"SAGC: adjacency: expected {heads} per-head matrices, got {adjacency.size(0)}"
                )

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.num_nodes = num_nodes
        self.learn_topology = learn_topology
        self.attention_channels = attention_channels or max(8, in_channels // 8)

        self.lin_qk = Linear(
            in_channels, 2 * heads * self.attention_channels, weight_initializer="glorot"
        )
        # 1 / sqrt(D') for the query rows, 1 for the key rows: folded into the projection
        scale = torch.ones(2 * heads * self.attention_channels, 1)
        scale[: heads * self.attention_channels] = self.attention_channels**-0.5
        self.register_buffer("qk_scale", scale, persistent=False)
        # Head m uses the columns [m * C, (m + 1) * C) of the weight: the sum over heads is
        # part of the matrix product.
        self.lin = Linear(heads * in_channels, out_channels, bias=bias, weight_initializer="glorot")

        self.topology: Tensor | None
        if num_nodes is None or (adjacency is None and not learn_topology):
            self.register_parameter("topology", None)
        else:
            init = torch.ones(num_nodes, num_nodes) if adjacency is None else adjacency
            init = init.expand(heads, num_nodes, num_nodes).clone()
            if learn_topology:
                self.register_buffer("initial_topology", init, persistent=False)
                self.topology = Parameter(init.clone())
            else:
                self.register_buffer("topology", init)

        self.res: Module | None = None
        if residual:
            self.res = (
                Identity()
                if in_channels == out_channels
                else Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
            )

        if norm is True or norm == "batch":
            self.norm: Module | None = BatchNorm1d(out_channels)
        elif norm == "layer":
            self.norm = LayerNorm(out_channels)
        elif norm is False or norm is None:
            self.norm = None
        else:
            raise ValueError(f"SAGC: norm: expected a bool, 'batch' or 'layer', got {norm!r}")
        self.activation = activation

        self._complete_graph: tuple[weakref.ref[Tensor], int, bool] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_qk.reset_parameters()
        self.lin.reset_parameters()
        if isinstance(self.res, Linear):
            self.res.reset_parameters()
        if self.norm is not None:
            self.norm.reset_parameters()
        if isinstance(self.topology, Parameter):
            with torch.no_grad():
                self.topology.copy_(self.initial_topology)

    def __prepare_scriptable__(self) -> SAGC:
        raise RuntimeError(
            "SAGC does not support torch.jit.script: forward() picks the fused all-pairs path "
            "from Python-side state and accepts any number of extra feature dimensions; use "
            "torch.compile or torch.export"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_complete_graph"] = None  # weak references cannot be pickled
        return state

    def forward(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_weight: OptTensor = None,
        return_attention_weights: bool | None = None,
    ) -> Tensor | tuple[Tensor, tuple[Tensor, Tensor]]:
        r"""Runs the forward pass of the module.

        Args:
            x (torch.Tensor): The node features ``[N, *, C]``.
            edge_index (torch.Tensor): The edge indices ``[2, E]``.
            edge_weight (torch.Tensor, optional): Normalised edge weights ``[E]``, used as (or
                multiplied into) :math:`\hat{A}`. (default: :obj:`None`)
            return_attention_weights (bool, optional): If set (to any value), also returns
                ``(edge_index, alpha)`` with ``alpha`` of shape ``[E, *, heads]``.
                (default: :obj:`None`)
        """
        if x.dim() < 2 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"SAGC: x: expected shape [N, *, {self.in_channels}], got {list(x.shape)}"
            )
        N, extra = x.size(0), x.shape[1:-1]

        if edge_weight is None and self._is_complete_graph(edge_index, N):
            V = self.num_nodes
            dense = x.reshape(N // V, V, extra.numel(), self.in_channels)
            out, att = self._dense(dense, return_attention_weights is not None)
            out = out.reshape(N, *extra, self.out_channels)
            if att is None:
                return out
            # [B, T, H, i, j] -> edge order (b, i, j) of complete_edge_index:
            alpha = att.permute(0, 3, 4, 1, 2).reshape(-1, *extra, self.heads)
            return out, (edge_index, alpha)

        qk = self._query_key(x).view(N, *extra, 2, self.heads, self.attention_channels)
        q, k = qk.unbind(-3)
        alpha = self.edge_updater(edge_index, q=q, k=k)
        weight = self._edge_topology(edge_index, edge_weight, N)
        if weight is not None:
            weight = weight.view(-1, *([1] * len(extra)), weight.size(-1))
        z = self.propagate(edge_index, x=x, alpha=alpha, weight=weight)
        out = self._update(self.lin(z.flatten(-2)), x)
        if return_attention_weights is not None:
            return out, (edge_index, alpha)
        return out

    def forward_dense(
        self, x: Tensor, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        r"""The fused all-pairs path: every joint attends to every joint of its frame.

        Args:
            x (torch.Tensor): Dense features ``[B, V, T, C]`` (a view of PyG's ``[B·V, T, C]``).
            return_attention (bool, optional): Also return the attention ``[B, T, heads, V, V]``
                (before the product with :math:`\hat{A}`). (default: :obj:`False`)

        Returns:
            torch.Tensor: ``[B, V, T, C']`` (and the attention when asked).
        """
        if x.dim() != 4 or x.size(-1) != self.in_channels:
            raise ValueError(
                f"SAGC.forward_dense: x: expected shape [B, V, T, {self.in_channels}], "
                f"got {list(x.shape)}"
            )
        if self.num_nodes is not None and x.size(1) != self.num_nodes:
            raise ValueError(
                f"SAGC.forward_dense: x: expected {self.num_nodes} joints in dimension 1, "
                f"got {x.size(1)}"
            )
        out, att = self._dense(x, return_attention)
        return out if att is None else (out, att)

    def _dense(self, x: Tensor, return_attention: bool) -> tuple[Tensor, Tensor | None]:
        B, V, T, C = x.shape
        H, D = self.heads, self.attention_channels
        # q, k: [B, T, H, V, D] views of the [B, V, T, 2·H·D] projection.
        q, k = self._query_key(x).view(B, V, T, 2, H, D).permute(3, 0, 2, 4, 1, 5).unbind(0)
        att = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        eff = att if self.topology is None else att * self.topology
        # Rows (i, h) of one [V·H, V] matrix per frame: a single product aggregates all heads
        # and yields [B, T, V, H·C], the input layout of the head-stacked weight.
        z = eff.transpose(2, 3).reshape(B, T, V * H, V) @ x.transpose(1, 2)
        out = self._normalize(self.lin(z.view(B, T, V, H * C))).transpose(1, 2)
        return self._residual_activation(out, x).contiguous(), (att if return_attention else None)

    def edge_update(
        self, q_i: Tensor, k_j: Tensor, index: Tensor, ptr: OptTensor, dim_size: int | None
    ) -> Tensor:
        return softmax((q_i * k_j).sum(dim=-1), index, ptr, dim_size, dim=0)

    def message(self, x_j: Tensor, alpha: Tensor, weight: OptTensor) -> Tensor:
        if weight is not None:
            alpha = alpha * weight
        return alpha.unsqueeze(-1) * x_j.unsqueeze(-2)

    def query_key_weights(self) -> tuple[Tensor, Tensor]:
        r"""The weight ``[2·heads·D', C]`` and bias ``[2·heads·D']`` of the projection to
        ``[q / √D', k]``: the query rows of :obj:`lin_qk` scaled by :math:`1 / \sqrt{D'}`."""
        scale = self.qk_scale
        return self.lin_qk.weight * scale, self.lin_qk.bias * scale.view(-1)

    def _query_key(self, x: Tensor) -> Tensor:
        """``[q / √D', k]`` of shape ``[..., 2·heads·D']``; the scale is folded into the weights."""
        return F.linear(x, *self.query_key_weights())

    def _update(self, out: Tensor, x: Tensor) -> Tensor:
        return self._residual_activation(self._normalize(out), x)

    def _residual_activation(self, out: Tensor, x: Tensor) -> Tensor:
        """:math:`\\sigma(\\mathrm{out} + \\mathrm{Res}(x))` for ``out`` ``[..., C']`` and ``x``
        ``[..., C]`` of the same leading shape. A projection accumulates into ``out`` in its
        matrix product (no separate sum), and the activation runs in place on that product
        before it is reshaped (in place on a view, autograd would copy the gradient)."""
        if isinstance(self.res, Linear):
            out = torch.addmm(
                out.reshape(-1, self.out_channels),
                x.reshape(-1, self.in_channels),
                self.res.weight.t(),
            )
        elif self.res is not None:
            out = x + out  # x first: the sum takes its layout ([B, V, T] on the fused path)
        if self.activation:
            out = out.relu_()
        return out.view(*x.shape[:-1], self.out_channels)

    def _normalize(self, out: Tensor) -> Tensor:
        if isinstance(self.norm, BatchNorm1d):
            return self.norm(out.reshape(-1, self.out_channels)).view(out.shape)
        if self.norm is not None:
            return self.norm(out)
        return out

    def _edge_topology(self, edge_index: Tensor, edge_weight: OptTensor, N: int) -> OptTensor:
        """Â per edge: ``[E, heads]`` (topology, times the weights) or ``[E, 1]`` or None."""
        weight = None if edge_weight is None else edge_weight.view(-1, 1)
        if self.topology is None:
            return weight
        V = self.num_nodes
        if N % V != 0:
            raise ValueError(
                f"SAGC: x: expected a multiple of num_nodes={V} nodes (whole graphs), got {N}"
            )
        source, target = edge_index if self.flow == "source_to_target" else edge_index.flip(0)
        topology = self.topology[:, target % V, source % V].t()
        return topology if weight is None else topology * weight

    @torch.compiler.disable  # data-dependent, and the cache must not become a compile guard
    def _is_complete_graph(self, edge_index: Tensor, N: int) -> bool:
        V = self.num_nodes
        if (
            V is None
            or torch.compiler.is_exporting()  # the check reads edge_index, export sees no data
            or self.explain
            or self.aggr not in ("add", "sum")
            or self.flow != "source_to_target"
            or any(getattr(self, name) for name in _HOOKS)
            or N == 0
            or N % V != 0
            or edge_index.dim() != 2
            or edge_index.size(1) != N * V
        ):
            return False
        cached = self._complete_graph
        if cached is not None and cached[0]() is edge_index and cached[1] == edge_index._version:
            return cached[2]
        expected = complete_edge_index(V, N // V).to(edge_index.device)
        result = torch.equal(edge_index, expected)
        self._complete_graph = (weakref.ref(edge_index), edge_index._version, result)
        return result

    def __repr__(self) -> str:
        nodes = "" if self.num_nodes is None else f", num_nodes={self.num_nodes}"
        return (
            f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
            f"heads={self.heads}{nodes})"
        )
