"""Export skeleton graphs, one frame of a sample, attention maps and explanations to
:mod:`networkx`. Every graph made here can be written with :func:`networkx.write_graphml` and
:func:`networkx.write_gexf` (attributes are strings and numbers only, never :obj:`None`)."""

from __future__ import annotations

from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data

from skelgraph.layouts import Layout, get_layout

__all__ = ["explanation_graph", "space_time_graph", "to_networkx"]

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
        layout name (absent for a sample without layout).
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
    if layout is not None:
        graph.graph["layout"] = layout.name
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


def explanation_graph(
    layout: Layout | str,
    *,
    adjacency: Tensor | np.ndarray | None = None,
    coordinates: Tensor | np.ndarray | None = None,
    importance: Tensor | np.ndarray | None = None,
    threshold: float = 0.0,
) -> nx.DiGraph:
    r"""One frame of an explanation as a :class:`networkx.DiGraph` with edges ``j → i``.

    Nodes ``0 … V-1`` carry ``name``, and ``x``, ``y`` (``z`` when ``C = 4``) and ``confidence``
    from :obj:`coordinates`, and ``importance``. Without :obj:`adjacency` the edges are the bones
    (both directions, ``weight`` 1.0). With it, every pair whose mean weight over the heads has
    magnitude ``> threshold`` is an edge with ``weight`` (the mean over heads), ``weight_<m>``
    per head :math:`m` and ``kind``: ``"bone"`` for the layout's bones and self-loops,
    ``"learned"`` for the others.

    Args:
        layout (Layout or str): The joint layout (names and bones).
        adjacency (Tensor or np.ndarray, optional): ``[V, V]`` or per head ``[H, V, V]``, with
            ``adjacency[..., i, j]`` the weight of the message ``j → i``.
        coordinates (Tensor or np.ndarray, optional): The frame's joints ``[V, C]``, confidence
            last.
        importance (Tensor or np.ndarray, optional): Importance of every joint ``[V]``.
        threshold (float): Keep edges with ``|weight| > threshold``. (default: ``0.0``)
    """
    layout = get_layout(layout)
    V = layout.num_joints
    graph = nx.DiGraph(layout=layout.name)
    graph.add_nodes_from((v, {"name": name}) for v, name in enumerate(layout.joints))
    if coordinates is not None:
        values = _array("coordinates", coordinates, (V, None))
        if values.shape[1] not in _COORDS:
            raise ValueError(
                f"explanation_graph: coordinates: expected C = 3 or 4 channels, "
                f"got {values.shape[1]}"
            )
        keys = (*_COORDS[values.shape[1]], "confidence")
        for v, row in enumerate(values.tolist()):
            graph.nodes[v].update(zip(keys, row, strict=True))
    if importance is not None:
        for v, value in enumerate(_array("importance", importance, (V,)).tolist()):
            graph.nodes[v]["importance"] = value
    bones = {(i, j) for i, j in layout.bones} | {(j, i) for i, j in layout.bones}
    if adjacency is None:
        graph.add_edges_from(bones, weight=1.0, kind="bone")
        return graph
    heads = _array("adjacency", adjacency, (None, V, V) if np.ndim(adjacency) == 3 else (V, V))
    heads = heads.reshape(-1, V, V)
    mean = heads.mean(0)
    for i, j in zip(*np.nonzero(np.abs(mean) > threshold), strict=True):
        attrs = {f"weight_{m}": float(heads[m, i, j]) for m in range(len(heads))}
        kind = "bone" if i == j or (int(i), int(j)) in bones else "learned"
        graph.add_edge(int(j), int(i), weight=float(mean[i, j]), kind=kind, **attrs)
    return graph


def space_time_graph(
    layout: Layout | str,
    temporal: Tensor | np.ndarray,
    *,
    importance: Tensor | np.ndarray | None = None,
    threshold: float = 0.0,
) -> nx.DiGraph:
    r"""The space–time graph of a clip: a node per joint and frame, the bones within every frame
    (``kind="bone"``, weight 1.0) and the temporal attention as edges from key frame :math:`s`
    to query frame :math:`t` of the same joint (``kind="temporal"``, ``weight`` > threshold).

    Node ``t · V + v`` carries ``frame`` :math:`t`, ``joint`` :math:`v`, ``name`` and, when
    given, ``importance``.

    Args:
        layout (Layout or str): The joint layout.
        temporal (Tensor or np.ndarray): Temporal attention per joint ``[V, T, T]`` (e.g. the mean
            over heads), ``temporal[v, t, s]`` the weight of frame ``s`` for frame ``t``.
        importance (Tensor or np.ndarray, optional): Importance per frame and joint ``[T, V]``.
        threshold (float): Keep temporal edges with weight ``> threshold``. (default: ``0.0``)
    """
    layout = get_layout(layout)
    V = layout.num_joints
    weights = _array("temporal", temporal, (V, None, None))
    T = weights.shape[1]
    if weights.shape[2] != T:
        raise ValueError(
            f"space_time_graph: temporal: expected shape [{V}, T, T], got {list(weights.shape)}"
        )
    scores = None if importance is None else _array("importance", importance, (T, V))
    graph = nx.DiGraph(layout=layout.name, frames=T)
    for t in range(T):
        for v, name in enumerate(layout.joints):
            attrs: dict[str, Any] = {"frame": t, "joint": v, "name": name}
            if scores is not None:
                attrs["importance"] = float(scores[t, v])
            graph.add_node(t * V + v, **attrs)
        for i, j in layout.bones:
            graph.add_edge(t * V + j, t * V + i, weight=1.0, kind="bone")
            graph.add_edge(t * V + i, t * V + j, weight=1.0, kind="bone")
    for v, t, s in zip(*np.nonzero(weights > threshold), strict=True):
        graph.add_edge(
            int(s) * V + int(v),
            int(t) * V + int(v),
            weight=float(weights[v, t, s]),
            kind="temporal",
        )
    return graph


def _array(name: str, value: Tensor | np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """``value`` as a float64 array, checked against ``shape`` (``None``: any size)."""
    array = torch.as_tensor(value).detach().cpu().double().numpy()
    if array.ndim != len(shape) or any(
        n is not None and n != m for n, m in zip(shape, array.shape, strict=True)
    ):
        expected = ", ".join("*" if n is None else str(n) for n in shape)
        raise ValueError(f"{name}: expected shape [{expected}], got {list(array.shape)}")
    return array
