r"""The window rings of several streams stacked along the nodes, for one batched frame."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from skelgraph.models.infogcn2 import InfoGCN2State

__all__ = ["Slab"]


class Slab:
    r"""The window rings of :math:`R` streams stacked along the nodes: per encoder layer one key
    and one value tensor :math:`(R V, H, W, D)`, whose row :math:`r` (nodes
    :math:`r V \dots (r + 1) V - 1`) is the :class:`~skelgraph.nn.temporal.KVCache` of the
    stream in row :math:`r`. A batched step over exactly these streams then attends with one
    product per layer, reading every ring in place.

    Making one moves the given streams' rings into it (each state's caches become views of its
    row, and the state records its slab and row). A later step of some of its streams computes
    all rows and leaves the others' rings unchanged (cheaper than moving rings around while
    streams come and go); a stream stepped alone uses its row directly.

    Args:
        states (sequence of InfoGCN2State): one-stream states, in row order.
    """

    def __init__(self, states: Sequence[InfoGCN2State]) -> None:
        self.layers = []
        for layer in range(len(states[0].caches)):
            caches = [state.caches[layer] for state in states]
            key = torch.cat([cache.key for cache in caches])
            value = torch.cat([cache.value for cache in caches])
            self.layers.append((key, value))
            rows = zip(key.chunk(len(states)), value.chunk(len(states)), strict=True)
            for cache, (row_key, row_value) in zip(caches, rows, strict=True):
                cache.key, cache.value = row_key, row_value
        for row, state in enumerate(states):
            state.slab, state.row = self, row
        self.size = len(states)

    @staticmethod
    def common(states: Sequence[InfoGCN2State]) -> Slab | None:
        """The slab holding all of ``states``, else :obj:`None`."""
        slab = states[0].slab
        return slab if slab is not None and all(s.slab is slab for s in states) else None
