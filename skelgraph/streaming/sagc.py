r"""Self-attention graph convolution frozen for one frame at inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import LayerNorm
from torch_geometric.nn.dense.linear import Linear

from skelgraph.nn.sagc import SAGC

__all__ = ["SAGCFrame"]


class SAGCFrame:
    r"""An :class:`~skelgraph.nn.sagc.SAGC` layer frozen for inference on one frame of one graph,
    :math:`(V, C)`, or of :math:`B` graphs, :math:`(B, V, C)`.

    The constants a call of :meth:`~skelgraph.nn.sagc.SAGC.forward_dense` rebuilds every time are
    made once: the query weights with the :math:`1 / \sqrt{D'}` scale folded in
    (:meth:`~skelgraph.nn.sagc.SAGC.query_key_weights`) and, stacked with them into one
    matrix, the key weights, every head's value weights :math:`W_m` (the aggregation
    :math:`\sum_m A^m_{\mathrm{eff}} (H W_m^\top)` reassociates the layer's
    :math:`(\sum_m A^m_{\mathrm{eff}} H) W^\top`) and a residual projection, so one matrix
    product gives queries, keys, values and residual together. Equal to the layer's output to
    float rounding. The constants are detached copies: build a new one after the weights change.

    Args:
        layer (SAGC): the layer, with :obj:`num_nodes` set (the fused all-pairs form).

    Shapes:
        - **input:** :math:`([B,] V, C)`, optional ``bias`` :math:`(2 M D' + M C' [+ C'])`
          replacing :attr:`bias` (e.g. with a constant input shift folded in, see
          :meth:`shifted_bias`)
        - **output:** :math:`([B,] V, C')`
    """

    def __init__(self, layer: SAGC) -> None:
        if layer.num_nodes is None:
            raise ValueError("SAGCFrame: layer: expected an SAGC layer with num_nodes set")
        with torch.no_grad():
            H, D, C_in, C_out = (
                layer.heads,
                layer.attention_channels,
                layer.in_channels,
                layer.out_channels,
            )
            query_key, query_key_bias = layer.query_key_weights()
            blocks, biases = [query_key], [query_key_bias]
            # lin.weight [C', M·C] -> every head's [C', C] block, stacked along the outputs
            blocks.append(layer.lin.weight.view(C_out, H, C_in).transpose(0, 1).reshape(-1, C_in))
            biases.append(blocks[-1].new_zeros(H * C_out))
            self.projection = isinstance(layer.res, Linear)
            if self.projection:
                blocks.append(layer.res.weight)
                biases.append(blocks[-1].new_zeros(C_out))
            weight = torch.cat(blocks).detach()
            # the product's column blocks: queries and keys, values, the residual projection
            self.sizes = [2 * H * D, H * C_out] + ([C_out] if self.projection else [])
            # with one head: queries and keys apart
            self.one_head_sizes = [D, D, *self.sizes[1:]]
            self.width = sum(self.sizes)
            self.weight_t = weight.t().contiguous()  # [C, outputs], as the product reads it
            self.bias = torch.cat(biases).detach()
            topology = layer.topology
            self.topology_t = None if topology is None else topology.detach().mT.contiguous()
            self.lin_bias = None if layer.lin.bias is None else layer.lin.bias.detach().clone()
        self.heads, self.attention_channels = H, D
        self.in_channels, self.out_channels = C_in, C_out
        self.num_nodes = layer.num_nodes
        self.residual = layer.res is not None
        self.norm = layer.norm
        self.layer_norm = None
        if isinstance(layer.norm, LayerNorm):
            norm = layer.norm
            weight = None if norm.weight is None else norm.weight.detach()
            bias = None if norm.bias is None else norm.bias.detach()
            self.layer_norm = (norm.normalized_shape, weight, bias, norm.eps)
        self.activation = layer.activation

    def shifted_bias(self, shift: Tensor) -> Tensor:
        r"""The product's bias for inputs :math:`x + s`, without the shift in the residual:
        :attr:`bias` plus ``shift`` :math:`(*, C)` times the stacked weight, :math:`(*, \cdot)`."""
        return torch.addmm(self.bias, shift.reshape(-1, self.in_channels), self.weight_t).view(
            *shift.shape[:-1], -1
        )

    def __call__(self, x: Tensor, bias: Tensor | None = None, out: Tensor | None = None) -> Tensor:
        """The layer on ``x`` :math:`(V, C)`, or on :math:`B` graphs at once :math:`(B, V, C)`;
        ``out`` (the output's shape) receives the result (the aggregation writes it there
        directly when nothing follows it).

        Shapes are the layer's constants with :math:`B` left to the views (``-1``), so that a
        :func:`torch.jit.trace` of a caller records no shape arithmetic."""
        H, D, V, C_out = self.heads, self.attention_channels, self.num_nodes, self.out_channels
        last = self.norm is None and not self.residual and not self.activation
        direct = None if out is None or not last else out.view(-1, V, C_out)
        product = torch.addmm(
            self.bias if bias is None else bias, x.reshape(-1, self.in_channels), self.weight_t
        )
        if H == 1:  # the column blocks as views of one [B, V, ·] tensor: fewer operations
            columns = product.view(-1, V, self.width).split(self.one_head_sizes, dim=-1)
            q, k, values, *rest = columns
            projected = rest[0] if rest else None
        else:  # every graph's heads as one batch
            qk, values, *rest = product.split(self.sizes, dim=1)
            qk = qk.view(-1, V, 2, H, D).permute(2, 0, 3, 1, 4).reshape(2, -1, V, D)
            q, k = qk[0], qk[1]  # [B·H, V, D]
            projected = rest[0] if rest else None
        # the attention is made transposed, att_t[j, i] = att[i, j]: a softmax over dim -2 of
        # a V × V matrix runs several times faster than one over its short last dim
        att_t = torch.softmax(torch.bmm(k, q.transpose(1, 2)), dim=-2)  # [B·H, V, V]
        # x'_i = sum over the pairs (j, m) of att^m[i, j] v^m_j: one product for all heads
        if H == 1:
            if self.topology_t is not None:
                att_t = att_t.mul_(self.topology_t)
            pairs = att_t.transpose(1, 2)
        else:
            att_t = att_t.view(-1, H, V, V)
            if self.topology_t is not None:
                att_t = att_t.mul_(self.topology_t)
            pairs = att_t.permute(0, 3, 2, 1).reshape(-1, V, V * H)  # [B, i, (j, m)]
            values = values.reshape(-1, V * H, C_out)  # [B, (j, m), C']
        if self.lin_bias is None:
            h = torch.bmm(pairs, values, out=direct)
        else:
            h = torch.baddbmm(self.lin_bias, pairs, values, out=direct)
        if x.dim() == 2:
            h = h.view(V, C_out)
        if last:
            return h
        h = self._finish(h, x, projected)
        return h if out is None else out.copy_(h)

    def _finish(self, h: Tensor, x: Tensor, projected: Tensor | None) -> Tensor:
        """Normalisation, residual (``projected``: the residual projection of ``x``, when the
        layer has one) and activation of the aggregated ``h``."""
        if self.layer_norm is not None:
            h = F.layer_norm(h, *self.layer_norm)
        elif self.norm is not None:
            h = self.norm(h)
        if projected is not None:
            h = h.add_(projected.view_as(h))
        elif self.residual:
            h = x + h
        return h.relu_() if self.activation else h
