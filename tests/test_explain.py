from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from skelgraph.explain import to_networkx
from skelgraph.layouts import get_layout
from skelgraph.layouts.graph import adjacency, bone_edge_index


def _sample(channels: int = 3, frames: int = 6) -> Data:
    x = torch.arange(13 * frames * channels, dtype=torch.float32).reshape(13, frames, channels)
    return Data(x=x, edge_index=bone_edge_index("penn13"))


@pytest.mark.parametrize("name", ["coco17", "penn13", "openpose18", "ntu25"])
def test_layout_graph(name):
    layout = get_layout(name)
    graph = to_networkx(name)
    assert isinstance(graph, nx.Graph) and not graph.is_directed()
    assert graph.number_of_nodes() == layout.num_joints
    assert graph.number_of_edges() == layout.num_bones
    assert graph.graph["layout"] == name
    assert [graph.nodes[v]["name"] for v in graph] == list(layout.joints)
    assert {w for *_, w in graph.edges(data="weight")} == {1.0}
    directed = to_networkx(layout, directed=True)
    assert directed.is_directed() and directed.number_of_edges() == 2 * layout.num_bones


@pytest.mark.parametrize(("channels", "keys"), [(3, ("x", "y")), (4, ("x", "y", "z"))])
def test_sample_frame_attributes(channels, keys):
    data = _sample(channels)
    graph = to_networkx(data, layout="penn13", frame=2)
    assert graph.number_of_nodes() == 13 and graph.number_of_edges() == 14
    node = graph.nodes[4]
    assert node["name"] == "right_elbow"
    expected = data.x[4, 2].tolist()
    assert [node[k] for k in (*keys, "confidence")] == expected
    last = to_networkx(data, layout="penn13", frame=-1)
    assert last.nodes[0]["confidence"] == data.x[0, -1, -1].item()


def test_sample_without_layout_uses_edge_index():
    data = _sample()
    data.edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    graph = to_networkx(data)
    assert graph.graph["layout"] is None
    assert graph.nodes[3] == {"name": "3"}
    assert sorted(graph.edges()) == [(0, 1), (1, 2)]
    assert to_networkx(data, directed=True).number_of_edges() == 4


def test_sample_layout_attribute():
    data = _sample()
    data.layout = "penn13"
    assert to_networkx(data).nodes[0]["name"] == "head"


def test_attention_weights_and_threshold():
    rng = np.random.default_rng(0)
    attention = torch.from_numpy(rng.random((13, 13))).float()
    attention = attention / attention.sum(1, keepdim=True)
    directed = to_networkx("penn13", adjacency=attention, directed=True)
    assert directed.number_of_edges() == 13 * 13
    assert directed.edges[3, 5]["weight"] == pytest.approx(attention[5, 3].item())
    kept = to_networkx("penn13", adjacency=attention, directed=True, threshold=0.08)
    assert kept.number_of_edges() == int((attention > 0.08).sum())
    assert all(w > 0.08 for *_, w in kept.edges(data="weight"))
    undirected = to_networkx("penn13", adjacency=attention, threshold=0.08)
    strongest = torch.maximum(attention, attention.t())
    assert undirected.number_of_edges() == int((strongest > 0.08).triu().sum())
    assert undirected.edges[2, 7]["weight"] == pytest.approx(strongest[2, 7].item())


def test_normalised_adjacency_edges():
    graph = to_networkx(_sample(), layout="penn13", frame=0, adjacency=adjacency("penn13"))
    assert graph.number_of_edges() == 14 + 13  # bones + self-loops
    assert graph.nodes[1]["name"] == "left_shoulder" and "x" in graph.nodes[1]


def test_errors():
    data = _sample()
    with pytest.raises(ValueError, match=r"frame: expected an index in \[-6, 6\), got 6"):
        to_networkx(data, frame=6)
    with pytest.raises(
        ValueError, match=r"adjacency: expected shape \[13, 13\].*got \[3, 13, 13\]"
    ):
        to_networkx(data, adjacency=torch.rand(3, 13, 13))
    with pytest.raises(ValueError, match="expected 17 joints for layout 'coco17', got 13"):
        to_networkx(data, layout="coco17")
    with pytest.raises(ValueError, match=r"data.x: expected shape \[V, T, C\], got \(13, 6\)"):
        to_networkx(Data(x=torch.zeros(13, 6), edge_index=data.edge_index))
    with pytest.raises(ValueError, match=r"data\.x: expected C = 3 or 4 channels, got 2"):
        to_networkx(Data(x=torch.zeros(13, 6, 2), edge_index=data.edge_index), frame=0)
    with pytest.raises(ValueError, match="frame: expected None for a layout, got 0"):
        to_networkx("penn13", frame=0)
    with pytest.raises(ValueError, match="layout: expected one of"):
        to_networkx("penn14")
