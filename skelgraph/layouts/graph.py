r"""Graph structures derived from a :class:`~skelgraph.layouts.Layout`: torch tensors, and the
joints' :func:`parents`.

Dense matrices follow the message-passing convention of PyG: ``A[i, j]`` is the weight of the
message from source joint ``j`` to target joint ``i``, so a graph convolution is ``A @ X``. Results
are cached per layout and returned as fresh clones, so callers may modify them freely.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

from skelgraph.layouts import Layout, get_layout

__all__ = [
    "adjacency",
    "bone_edge_index",
    "complete_edge_index",
    "hop_distance",
    "k_hop_adjacency",
    "normalize_adjacency",
    "parents",
    "part_graph",
    "spatial_partitions",
]

Normalization = Literal["sym", "row"] | None


def bone_edge_index(layout: Layout | str) -> Tensor:
    r"""The bones as a PyG ``edge_index`` in both directions, without self-loops.

    The first ``num_bones`` columns are ``child → parent``, the next ``num_bones`` columns
    ``parent → child``.

    Returns:
        LongTensor: ``[2, 2 * num_bones]``.
    """
    return _bone_edge_index(get_layout(layout)).clone()


@lru_cache(maxsize=64)
def _bone_edge_index(layout: Layout) -> Tensor:
    bones = torch.tensor(layout.bones, dtype=torch.long).reshape(-1, 2).t()
    return torch.cat([bones, bones.flip(0)], dim=1)


def complete_edge_index(num_nodes: int, num_graphs: int = 1, *, self_loops: bool = True) -> Tensor:
    r"""All-pairs edges within each of :obj:`num_graphs` graphs of :obj:`num_nodes` nodes.

    Canonical order: graph-major, then target ``i``, then source ``j``; edge ``e = (g, i, j)`` is
    ``edge_index[:, e] = (g·V + j, g·V + i)``. Without self-loops the pairs ``i == j`` are skipped
    and the order is otherwise the same.

    Returns:
        LongTensor: ``[2, G·V·V]`` (``[2, G·V·(V-1)]`` without self-loops).
    """
    if num_nodes < 0 or num_graphs < 0:
        raise ValueError(
            f"complete_edge_index: expected num_nodes >= 0 and num_graphs >= 0, "
            f"got {num_nodes} and {num_graphs}"
        )
    return _complete_edge_index(num_nodes, num_graphs, self_loops).clone()


@lru_cache(maxsize=32)
def _complete_edge_index(num_nodes: int, num_graphs: int, self_loops: bool) -> Tensor:
    nodes = torch.arange(num_nodes)
    target = nodes.repeat_interleave(num_nodes)
    source = nodes.repeat(num_nodes)
    if not self_loops:
        keep = target != source
        target, source = target[keep], source[keep]
    offset = (torch.arange(num_graphs) * num_nodes).repeat_interleave(target.numel())
    return torch.stack([source.repeat(num_graphs) + offset, target.repeat(num_graphs) + offset])


def normalize_adjacency(A: Tensor, normalize: Normalization = "sym") -> Tensor:
    r"""Normalises a dense ``[V, V]`` adjacency by the degrees ``D = diag(A.sum(1))``.

    ``"sym"``: :math:`D^{-1/2} A D^{-1/2}`; ``"row"``: :math:`D^{-1} A` (rows sum to 1, mean
    aggregation); :obj:`None`: unchanged. Joints of degree 0 keep zero rows.
    """
    if normalize is None:
        return A
    deg = A.sum(dim=1)
    if normalize == "sym":
        inv_sqrt = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
        return inv_sqrt[:, None] * A * inv_sqrt[None, :]
    if normalize == "row":
        return A * deg.reciprocal().masked_fill(deg == 0, 0.0)[:, None]
    raise ValueError(f"normalize: expected 'sym', 'row' or None, got {normalize!r}")


def adjacency(
    layout: Layout | str, *, self_loops: bool = True, normalize: Normalization = "sym"
) -> Tensor:
    r"""The bone adjacency ``A[i, j] = 1`` when ``j → i`` is a bone (symmetric), optionally ``+ I``.

    Args:
        layout (Layout or str): The layout.
        self_loops (bool): Add the identity. (default: :obj:`True`)
        normalize (str, optional): ``"sym"`` (:math:`D^{-1/2} A D^{-1/2}`), ``"row"``
            (:math:`D^{-1} A`) or :obj:`None`; see :func:`normalize_adjacency`. (default: ``"sym"``)

    Returns:
        Tensor: ``[V, V]`` float32.
    """
    return _adjacency(get_layout(layout), self_loops, normalize).clone()


@lru_cache(maxsize=64)
def _adjacency(layout: Layout, self_loops: bool, normalize: Normalization) -> Tensor:
    V = layout.num_joints
    A = torch.zeros(V, V)
    edge_index = _bone_edge_index(layout)
    A[edge_index[1], edge_index[0]] = 1.0
    if self_loops:
        A += torch.eye(V)
    return normalize_adjacency(A, normalize)


def hop_distance(layout: Layout | str) -> Tensor:
    r"""Shortest-path lengths in bones between every pair of joints; ``-1`` when unreachable.

    Returns:
        LongTensor: ``[V, V]``, symmetric, zero on the diagonal.
    """
    return _hop_distance(get_layout(layout)).clone()


@lru_cache(maxsize=64)
def _hop_distance(layout: Layout) -> Tensor:
    V = layout.num_joints
    step = _adjacency(layout, True, None) > 0
    reached = torch.eye(V, dtype=torch.bool)
    dist = torch.where(reached, 0, -1)
    for d in range(1, V):
        grown = (step.float() @ reached.float()) > 0
        new = grown & ~reached
        if not new.any():
            break
        dist[new] = d
        reached = grown
    return dist


def parents(layout: Layout | str) -> list[int]:
    """The parent of every joint, the neighbour one hop closer to the centre joints; ``-1`` for
    the centre joints themselves (whose parent is the centre point). Ties go to the lower index.

    The parents follow the graph, not the order or direction of the pairs in ``layout.bones``.

    Raises:
        ValueError: when a joint cannot reach the centre joints along the bones.
    """
    layout = get_layout(layout)
    hops = _hop_distance(layout)
    V = layout.num_joints
    to_centre = torch.stack([hops[:, c] for c in layout.center], dim=1)
    to_centre = torch.where(to_centre < 0, torch.full_like(to_centre, V + 1), to_centre).amin(1)
    neighbours: list[set[int]] = [set() for _ in range(V)]
    for child, parent in layout.bones:
        neighbours[child].add(parent)
        neighbours[parent].add(child)
    result = []
    for v in range(V):
        if to_centre[v] == 0:
            result.append(-1)
            continue
        if to_centre[v] > V:
            raise ValueError(
                f"layout {layout.name!r}: joint {layout.joints[v]!r} is not connected to the "
                f"centre joints {[layout.joints[c] for c in layout.center]}"
            )
        result.append(min(u for u in neighbours[v] if to_centre[u] == to_centre[v] - 1))
    return result


def k_hop_adjacency(layout: Layout | str, k: int, *, normalize: Normalization = None) -> Tensor:
    r"""``A_k[i, j] = 1`` where the hop distance between ``i`` and ``j`` is exactly :obj:`k`.

    ``k = 0`` gives the identity, ``k = 1`` the bones without self-loops.

    Args:
        layout (Layout or str): The layout.
        k (int): The hop distance, ``>= 0``.
        normalize (str, optional): As in :func:`adjacency`. (default: :obj:`None`)

    Returns:
        Tensor: ``[V, V]`` float32.
    """
    if k < 0:
        raise ValueError(f"k_hop_adjacency: k: expected an integer >= 0, got {k}")
    A = (_hop_distance(get_layout(layout)) == k).float()
    return normalize_adjacency(A, normalize)


def spatial_partitions(layout: Layout | str, *, max_hop: int = 1) -> Tensor:
    r"""ST-GCN's spatial partitions of every joint's neighbourhood (hop distance ``<= max_hop``).

    For target ``i`` and neighbour ``j``, compare their hop distances to the centre (the minimum
    over ``layout.center``, or ``layout.root`` when set):

    * ``P[0]`` root: ``j`` is as far from the centre as ``i`` (``i`` itself included),
    * ``P[1]`` centripetal: ``j`` is closer to the centre,
    * ``P[2]`` centrifugal: ``j`` is farther from the centre.

    All three share the normalisation of ST-GCN's ``normalize_digraph``: each entry is divided by
    the size of the target's neighbourhood, so ``P.sum(0)`` equals
    ``normalize_adjacency(A_{<=max_hop}, "row")``. (ST-GCN indexes ``[source, target]`` and so
    normalises columns; here rows are targets.) Joints that cannot reach the centre count as
    infinitely far.

    Returns:
        Tensor: ``[3, V, V]`` float32.
    """
    if max_hop < 1:
        raise ValueError(f"spatial_partitions: max_hop: expected an integer >= 1, got {max_hop}")
    return _spatial_partitions(get_layout(layout), max_hop).clone()


@lru_cache(maxsize=64)
def _spatial_partitions(layout: Layout, max_hop: int) -> Tensor:
    hops = _hop_distance(layout)
    near = (hops >= 0) & (hops <= max_hop)
    A = normalize_adjacency(near.float(), "row")
    centre = (layout.root,) if layout.root is not None else layout.center
    to_centre = hops[:, list(centre)].float()
    to_centre = to_centre.masked_fill(to_centre < 0, float("inf")).min(dim=1).values
    d_target, d_source = to_centre[:, None], to_centre[None, :]
    groups = (d_source == d_target, d_source < d_target, d_source > d_target)
    return torch.stack([A * g for g in groups])


def part_graph(layout: Layout | str) -> tuple[Tensor, Tensor]:
    r"""The body-part graph of ``layout.parts`` (``P`` parts, in their mapping order).

    Returns:
        (Tensor, Tensor): the assignment ``S`` of shape ``[V, P]`` (``S[v, p] = 1 / n_v`` when joint
        ``v`` is in part ``p`` and in ``n_v`` parts, so rows sum to 1, or to 0 for a joint in no
        part; one-hot for disjoint parts) and the binary part adjacency ``[P, P]`` (1 where two
        different parts share a joint or are linked by a bone).
    """
    S, A = _part_graph(get_layout(layout))
    return S.clone(), A.clone()


@lru_cache(maxsize=64)
def _part_graph(layout: Layout) -> tuple[Tensor, Tensor]:
    if not layout.parts:
        raise ValueError(f"layout {layout.name!r}: parts: expected at least one part, got {{}}")
    member = torch.zeros(layout.num_joints, len(layout.parts))
    for p, joints in enumerate(layout.parts.values()):
        member[list(joints), p] = 1.0
    S = normalize_adjacency(member, "row")
    linked = member.t() @ _adjacency(layout, True, None) @ member
    A = (linked > 0).float().fill_diagonal_(0.0)
    return S, A
