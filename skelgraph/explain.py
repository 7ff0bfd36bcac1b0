"""Export skeleton graphs, one frame of a sample and attention maps to :mod:`networkx`."""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from skelgraph.layouts import Layout, get_layout

__all__ = ["to_networkx"]

_COORDS = {3: ("x", "y"), 4: ("x", "y", "z")}


def to_networkx(
    obj: Layout | str | Data,
    *,
    layout: Layout | str | None = None,
    frame: int | None = None,
    adjacency: Tensor | np.ndarray | None = None,
    threshold: float = 0.0,
    directed: bool = False,
) -> nx.Graph | nx.DiGraph:
    r"""A skeleton as a :class:`networkx.Graph` (or :class:`~networkx.DiGraph`).

    Nodes are joint indices ``0 … V-1`` with attribute ``name`` (the joint name, or the index as a
    string for a sample without layout). For a sample and a :obj:`frame`, nodes also carry ``x``,
    ``y`` (``z`` when ``C = 4``) and ``confidence`` from ``data.x[:, frame]``.

    Edges carry ``weight``. Without :obj:`adjacency` the edges are the bones (of the layout, or
    ``data.edge_index`` for a sample) with weight 1.0. With :obj:`adjacency` (e.g. a learnt
    topology or an attention map; ``adjacency[i, j]`` weighs the message ``j → i``) every pair
    with weight ``> threshold`` becomes an edge, self-loops included; an undirected graph keeps the
    larger of the two directions.

    Args:
        obj (Layout or str or Data): A layout (or its name), or a sample with ``x`` of shape
            ``[V, T, C]`` and ``edge_index`` of shape ``[2, E]``.
        layout (Layout or str, optional): The layout of a sample, for joint names; defaults to
            ``data.layout`` when the sample has one.
        frame (int, optional): Frame of the sample whose coordinates become node attributes;
            negative values count from the end. Only for a sample.
        adjacency (Tensor or np.ndarray, optional): Edge weights of shape ``[V, V]``.
        threshold (float): Keep :obj:`adjacency` edges with weight ``> threshold``.
            (default: ``0.0``)
        directed (bool): Return a :class:`~networkx.DiGraph` with edges ``j → i``.
            (default: :obj:`False`)

    Returns:
        networkx.Graph or networkx.DiGraph: ``V`` nodes; the graph attribute ``layout`` holds the
        layout name (or :obj:`None`).
    """
    data = obj if isinstance(obj, Data) else None
    if data is None:
        if layout is not None:
            raise ValueError(
                "to_networkx: layout: expected None when obj is a layout, got a layout"
            )
        if frame is not None:
            raise ValueError(f"to_networkx: frame: expected None for a layout, got {frame}")
        layout = get_layout(obj)
        num_nodes = layout.num_joints
    else:
        layout = layout if layout is not None else getattr(data, "layout", None)
        layout = None if layout is None else get_layout(layout)
        num_nodes = _num_nodes(data, layout)

    graph: nx.Graph = nx.DiGraph() if directed else nx.Graph()
    graph.graph["layout"] = None if layout is None else layout.name
    names = layout.joints if layout is not None else [str(v) for v in range(num_nodes)]
    graph.add_nodes_from((v, {"name": names[v]}) for v in range(num_nodes))
    if data is not None and frame is not None:
        _add_frame(graph, data, frame)

    if adjacency is not None:
        _add_weighted_edges(graph, adjacency, num_nodes, threshold)
    else:
        if layout is not None:
            bones = torch.tensor(layout.bones, dtype=torch.long).reshape(-1, 2)
            edges = torch.cat([bones, bones.flip(1)]).tolist()
        else:
            edges = data.edge_index.t().tolist()
        graph.add_edges_from(edges, weight=1.0)
    return graph


def _num_nodes(data: Data, layout: Layout | None) -> int:
    x = getattr(data, "x", None)
    if x is None or x.dim() != 3:
        shape = None if x is None else tuple(x.shape)
        raise ValueError(f"to_networkx: data.x: expected shape [V, T, C], got {shape}")
    if layout is not None and x.size(0) != layout.num_joints:
        raise ValueError(
            f"to_networkx: data.x: expected {layout.num_joints} joints for layout "
            f"{layout.name!r}, got {x.size(0)}"
        )
    return x.size(0)


def _add_frame(graph: nx.Graph, data: Data, frame: int) -> None:
    _, T, C = data.x.shape
    if not -T <= frame < T:
        raise ValueError(f"to_networkx: frame: expected an index in [{-T}, {T}), got {frame}")
    if C not in _COORDS:
        raise ValueError(f"to_networkx: data.x: expected C = 3 or 4 channels, got {C}")
    values = data.x[:, frame].detach().cpu().tolist()
    keys = (*_COORDS[C], "confidence")
    for v, row in enumerate(values):
        attrs: dict[str, Any] = dict(zip(keys, row, strict=True))
        graph.nodes[v].update(attrs)


def _add_weighted_edges(
    graph: nx.Graph, adjacency: Tensor | np.ndarray, num_nodes: int, threshold: float
) -> None:
    weight = torch.as_tensor(adjacency).detach().cpu().double()
    if tuple(weight.shape) != (num_nodes, num_nodes):
        raise ValueError(
            f"to_networkx: adjacency: expected shape [{num_nodes}, {num_nodes}] (average attention "
            f"heads and batch first), got {list(weight.shape)}"
        )
    keep = weight > threshold
    if not graph.is_directed():
        weight = torch.maximum(weight, weight.t())
        keep = (weight > threshold).triu()
    target, source = torch.nonzero(keep, as_tuple=True)
    values = weight[target, source].tolist()
    graph.add_weighted_edges_from(zip(source.tolist(), target.tolist(), values, strict=True))
