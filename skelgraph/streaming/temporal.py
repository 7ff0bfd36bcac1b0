r"""Causal temporal attention frozen for one frame at inference: on a growing key/value cache, or
on window rings given as tensors (so that a frame can be traced)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skelgraph.nn.temporal import CausalTemporalAttention, KVCache, alibi_bias, alibi_ring_bias

__all__ = ["TemporalFrame"]


class TemporalFrame:
    r"""A :class:`~skelgraph.nn.temporal.CausalTemporalAttention` layer frozen for
    :meth:`~skelgraph.nn.temporal.CausalTemporalAttention.step` at inference: the query scale
    folded into the query weights, the transposed weights made once and the attention of every
    node and head one batched product with the cache. Equal to the layer's step in evaluation mode
    to float rounding. The constants are detached: build a new one after the weights change.

    A call steps a growing cache (no window); :meth:`ring` steps window rings given as tensors.

    Args:
        layer (CausalTemporalAttention): the layer.

    Shapes:
        - **input:** :math:`(N, C)` and the layer's :class:`~skelgraph.nn.temporal.KVCache` over
          :math:`N` nodes
        - **output:** :math:`(N, C)`
    """

    def __init__(self, layer: CausalTemporalAttention) -> None:
        C = layer.channels
        scale = layer.head_channels**-0.5
        with torch.no_grad():
            weight, bias = layer.qkv.weight.detach(), layer.qkv.bias
            self.query_t = (weight[:C] * scale).t().contiguous()
            self.key_value_t = weight[C:].t().contiguous()
            zeros = weight.new_zeros(3 * C)
            bias = zeros if bias is None else bias.detach()
            self.query_bias, self.key_value_bias = bias[:C] * scale, bias[C:]
            # GELU(a) = (a / √2)(1 + erf(a / √2)): fc1 makes u = a / √2 and fc2 takes the last
            # 1 / √2, so that the MLP's activation is u + u·erf(u) (the exact GELU; the fused
            # GELU kernel costs several times more on a frame's few thousand elements)
            root_half = 0.5**0.5
            self.linears = [
                _transposed(layer.proj, zeros),
                _transposed(layer.fc1, zeros, out_scale=root_half),
                _transposed(layer.fc2, zeros, in_scale=root_half),
            ]
        self.norms = [
            (norm.normalized_shape, _detached(norm.weight), _detached(norm.bias), norm.eps)
            for norm in (layer.norm1, layer.norm2)
        ]
        self.channels = C
        self.heads, self.head_channels = layer.heads, layer.head_channels
        self.window = layer.window
        self.slopes = layer.slopes.detach()
        # the position bias of growing caches for every node and head, made when first needed
        self._node_bias: Tensor | None = None

    def __call__(self, x: Tensor, cache: KVCache) -> Tensor:
        """The step on a growing cache (no window): stores the frame's key and value in
        ``cache`` and attends over all frames held."""
        q, k, v = self._project(x)
        N, H, _, D = cache.key.shape
        _, held = cache.write(k.view(N, H, D), v.view(N, H, D))
        keys = cache.key[:, :, :held].view(N * H, held, D)
        values = cache.value[:, :, :held].view(N * H, held, D)
        return self._attend(x, q, keys, values, self._held_bias(N, cache.capacity, held))

    def ring_bias(self, num_nodes: int) -> Tensor:
        r"""The bias argument of :meth:`ring` for every slot of the new frame, :math:`(W, N H, 1,
        W)`: entry ``[s, n H + h, 0, j]`` is :func:`~skelgraph.nn.temporal.alibi_ring_bias`
        ``[s, h, j]``, for ring slot :math:`j` of node :math:`n` when the new frame goes to slot
        :math:`s`."""
        bias = alibi_ring_bias(self.slopes, self.window)  # [W, H, W]
        return bias.repeat(1, num_nodes, 1).unsqueeze(2).contiguous()

    def ring(
        self,
        x: Tensor,
        key: Tensor,
        value: Tensor,
        bias: Tensor,
        slot: Tensor,
        keep: Tensor | None = None,
    ) -> Tensor:
        r"""The step with window ring buffers given as tensors, so that it can be traced
        (:func:`torch.jit.trace`): writes every node's new key and value to its slot of ``key``
        and ``value`` :math:`(N, H, W, D)` in place (a cache's buffers after
        :meth:`~skelgraph.nn.temporal.KVCache.claim`, or the rings of several streams, each at
        its own frame, stacked along the nodes) and attends over all :math:`W` slots with
        ``bias`` :math:`(N H, 1, W)` (of :meth:`ring_bias`, :math:`-\infty` for the slots not
        written yet). ``slot`` (long) is the slot of every node, :math:`(1,)`, or each node's
        own, :math:`(N, 1, 1, 1)`.

        ``keep`` :math:`(N, 1, 1, 1)` (bool) marks nodes whose ring must not change (streams
        not stepped this time): their slot keeps its content, and their output is meaningless.
        """
        H, W, D = self.heads, self.window, self.head_channels
        q, k, v = self._project(x)
        k, v = k.view(-1, H, 1, D), v.view(-1, H, 1, D)
        if slot.dim() == 1:  # one slot: a copy, several times cheaper than a scatter
            key.index_copy_(2, slot, k)
            value.index_copy_(2, slot, v)
        else:
            index = slot.expand(-1, H, 1, D)
            if keep is not None:
                k = torch.where(keep, key.gather(2, index), k)
                v = torch.where(keep, value.gather(2, index), v)
            key.scatter_(2, index, k)
            value.scatter_(2, index, v)
        return self._attend(x, q, key.view(-1, W, D), value.view(-1, W, D), bias)

    def _held_bias(self, num_nodes: int, capacity: int, held: int) -> Tensor:
        r"""The bias :math:`(N H, 1, L)` of the :math:`L` = ``held`` frames of a growing cache of
        ``capacity`` slots: the last :math:`L` columns of a table of the distances
        :math:`L_{max} - 1 \dots 0`, made again when a cache outgrows it."""
        table = self._node_bias
        if table is None or table.size(0) != num_nodes * self.heads or table.size(2) < held:
            distance = torch.arange(capacity - 1, -1, -1, device=self.slopes.device)
            bias = alibi_bias(self.slopes, distance)  # [H, L_max], row n·H + h below: head h
            table = self._node_bias = bias.repeat(num_nodes, 1).unsqueeze(1)
        return table[:, :, table.size(2) - held :]

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Scaled queries, keys and values :math:`(N, C)` of the normalised frame."""
        C = self.channels
        h = F.layer_norm(x, *self.norms[0])
        q = torch.addmm(self.query_bias, h, self.query_t)
        kv = torch.addmm(self.key_value_bias, h, self.key_value_t)
        return q, kv[:, :C], kv[:, C:]

    def _attend(self, x: Tensor, q: Tensor, keys: Tensor, values: Tensor, bias: Tensor) -> Tensor:
        """Attention over ``keys``, ``values`` :math:`(N H, L, D)` with ``bias``
        :math:`(N H, 1, L)`, then the residual and the MLP."""
        (proj_t, proj_b), (fc1_t, fc1_b), (fc2_t, fc2_b) = self.linears
        scores = torch.baddbmm(bias, q.view(-1, 1, self.head_channels), keys.transpose(1, 2))
        attended = torch.bmm(torch.softmax(scores, dim=-1), values).view(-1, self.channels)
        x = torch.addmm(proj_b, attended, proj_t).add_(x)
        u = torch.addmm(fc1_b, F.layer_norm(x, *self.norms[1]), fc1_t)
        return torch.addmm(fc2_b, torch.addcmul(u, u, torch.erf(u)), fc2_t).add_(x)


def _transposed(
    linear: nn.Linear, zeros: Tensor, out_scale: float = 1.0, in_scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``(W^T, b)`` of ``linear`` as :func:`torch.addmm` reads them, for inputs multiplied by
    ``in_scale`` and outputs by ``out_scale`` (a missing bias taken from ``zeros``)."""
    weight = (linear.weight.detach() * (out_scale * in_scale)).t().contiguous()
    bias = zeros[: linear.out_features] if linear.bias is None else linear.bias.detach()
    return weight, bias * out_scale


def _detached(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach()
