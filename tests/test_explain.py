from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from skelgraph.explain import explanation_graph, space_time_graph, to_networkx
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
    assert "layout" not in graph.graph
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


# -- attention from the models -------------------------------------------------------------


def _models():
    from skelgraph.models import create

    torch.manual_seed(0)
    small = {"channels": [8, 8], "strides": [1, 2]}
    return {
        "infogcn2": create("infogcn2", num_classes=4, layout="penn13", channels=16, depth=2),
        "stgcn": create("stgcn", num_classes=4, layout="penn13", **small),
        "agcn2s": create("agcn2s", num_classes=4, layout="penn13", **small),
        "agcn2s_causal": create("agcn2s", num_classes=4, layout="penn13", causal=True, **small),
    }


@pytest.mark.parametrize("name", ["infogcn2", "stgcn", "agcn2s", "agcn2s_causal"])
def test_attention_output_equals_forward(name):
    model = _models()[name].eval()
    x = torch.randn(2, 13, 8, 3)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 6:] = False
    maps = model.attention(x, mask)
    torch.testing.assert_close(maps.output.logits, model(x, mask).logits, atol=1e-5, rtol=1e-5)
    assert maps.graphs and maps.topology
    for graph in maps.graphs.values():
        assert graph.dim() == 5 and graph.shape[0] == 2 and graph.shape[-2:] == (13, 13)


def test_infogcn2_attention_is_what_the_layers_used():
    from skelgraph.models.infogcn2 import InfoGCN2

    model = _models()["infogcn2"].eval()
    assert isinstance(model, InfoGCN2)
    x = torch.randn(2, 13, 8, 3)
    maps = model.attention(x)
    names = ["encoder.0.spatial", "encoder.1.spatial", "head.0", "head.1"]
    assert sorted(maps.attention) == sorted(names)
    for name in names:
        layer = model.get_submodule(name)
        attention = maps.attention[name]
        # rows of softmax(QK^T) sum to 1 before the product with the topology
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))
        torch.testing.assert_close(maps.graphs[name], attention * layer.topology)
    assert maps.temporal["encoder.0.temporal"].shape == (2, 13, 4, 8, 8)
    torch.testing.assert_close(maps.temporal["encoder.1.temporal"].sum(-1), torch.ones(2, 13, 4, 8))
    assert "dynamics.layers.0" in maps.topology


def test_sagc_attention_reproduces_the_fused_output():
    from skelgraph.layouts.graph import adjacency as layout_adjacency
    from skelgraph.nn.sagc import SAGC

    torch.manual_seed(0)
    layer = SAGC(6, 6, 3, adjacency=layout_adjacency("penn13"), norm="layer").eval()
    x = torch.randn(2, 13, 5, 6)
    out, attention = layer.forward_dense(x, return_attention=True)
    torch.testing.assert_close(out, layer.forward_dense(x))
    effective = attention * layer.topology  # [B, T, H, V, V]
    messages = torch.einsum("bthij,bjtc->btihc", effective, x).flatten(-2)
    expected = torch.relu(layer.norm(layer.lin(messages)) + x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_temporal_attention_matches_the_fused_kernel():
    from skelgraph.nn.temporal import CausalTemporalAttention

    torch.manual_seed(0)
    layer = CausalTemporalAttention(16, 4, window=3).eval()
    x = torch.randn(5, 7, 16)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[0, 4:] = False
    out, weights = layer(x, mask, return_attention=True)
    torch.testing.assert_close(out, layer(x, mask), atol=1e-5, rtol=1e-5)
    assert weights.shape == (5, 4, 7, 7)
    assert torch.all(weights.triu(1) == 0) and torch.all(weights.tril(-3) == 0)


# -- networkx export of explanations ---------------------------------------------------------


def test_explanation_graph_graphml_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    heads = rng.random((3, 13, 13))
    coords = rng.random((13, 3))
    importance = rng.random(13)
    graph = explanation_graph("penn13", adjacency=heads, coordinates=coords, importance=importance)
    for write, read in ((nx.write_graphml, nx.read_graphml), (nx.write_gexf, nx.read_gexf)):
        path = tmp_path / f"graph.{write.__name__}"
        write(graph, path)
        back = read(path)
        assert back.nodes["4"]["name"] == "right_elbow"
        assert back.nodes["4"]["importance"] == pytest.approx(importance[4])
        edge = back.edges["3", "5"]  # message 3 -> 5: adjacency[5, 3]
        assert edge["weight"] == pytest.approx(heads[:, 5, 3].mean())
        assert edge["weight_2"] == pytest.approx(heads[2, 5, 3])
        assert edge["kind"] == "bone" and back.edges["0", "12"]["kind"] == "learned"


def test_space_time_graph_and_sample_graph_write(tmp_path):
    temporal = torch.rand(13, 4, 4).tril()
    graph = space_time_graph("penn13", temporal, importance=torch.rand(4, 13), threshold=0.5)
    assert graph.number_of_nodes() == 52
    kinds = nx.get_edge_attributes(graph, "kind")
    assert sum(k == "temporal" for k in kinds.values()) == int((temporal > 0.5).sum())
    nx.write_graphml(graph, tmp_path / "st.graphml")
    assert nx.read_graphml(tmp_path / "st.graphml").number_of_nodes() == 52
    sample = _sample()
    nx.write_graphml(to_networkx(sample, frame=0), tmp_path / "sample.graphml")  # no layout


def test_dataset_samples_carry_their_layout(tmp_path):
    from skelgraph.clip import SkeletonClip
    from skelgraph.data import SkeletonFolder, example_clips, write_skeleton_folder

    clips = [SkeletonClip.load(p) for p in example_clips("penn_action")[:2]]
    write_skeleton_folder(tmp_path, [(c, f"c{i}", "") for i, c in enumerate(clips)])
    dataset = SkeletonFolder(tmp_path, window=8, cache_dir=tmp_path / "cache", progress=False)
    graph = to_networkx(dataset[0], frame=0)
    assert graph.graph["layout"] == "penn13" and graph.nodes[0]["name"] == "head"


# -- attribution and the command ---------------------------------------------------------------


def test_deletion_top_k_beats_random_on_the_shipped_model():
    pytest.importorskip("captum")
    from skelgraph.clip import SkeletonClip
    from skelgraph.data import example_clips
    from skelgraph.explain import attribution
    from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint

    model, meta = load_checkpoint(resolve_checkpoint("penn-action"))
    model.eval()
    reduce = meta["inference"]["reduce"]
    inputs = [
        attribution.clip_input(SkeletonClip.load(p), model.layout, meta)
        for p in example_clips("penn_action")
    ]
    x, mask = torch.cat([i[0] for i in inputs]), torch.cat([i[1] for i in inputs])
    target = attribution.predicted_class(model, x, mask, reduce)
    importance = attribution.joint_importance(
        model, x, mask, target=target, method="gradient_x_input", reduce=reduce
    )
    assert importance.shape == (15, x.size(2), 13)
    top = attribution.deletion_curve(
        model, x, mask, attribution.joint_ranking(importance), target, reduce=reduce
    )
    generator = torch.Generator().manual_seed(0)
    random = attribution.deletion_curve(
        model, x, mask, attribution.random_rankings(15, 13, generator), target, reduce=reduce
    )
    torch.testing.assert_close(top[:, 0], random[:, 0])  # nothing deleted yet
    assert attribution.deletion_area(top).mean() < 0.8 * attribution.deletion_area(random).mean()


def test_explain_command_writes_every_file(tmp_path):
    pytest.importorskip("captum")
    from skelgraph.cli import main
    from skelgraph.cli.explain import CLIP_FILES
    from skelgraph.data import example_clips

    clip = next(p for p in example_clips("penn_action") if p.stem == "jumping_jacks")
    options = ["--top-k", "4", "--method", "gradient_x_input", "--frame", "10"]
    code = main(["explain", "penn-action-fast", str(clip), "--out", str(tmp_path), *options])
    assert code == 0
    written = {p.name for p in tmp_path.iterdir()}
    assert set(CLIP_FILES) <= written
    assert {"temporal_attention.png", "space_time.graphml", "graph_head.0.graphml"} <= written
    graph = nx.read_graphml(tmp_path / "graph.graphml")
    assert graph.nodes["0"]["name"] == "head" and "importance" in graph.nodes["0"]
    summary = json.loads((tmp_path / "explanation.json").read_text())
    assert len(summary["top_edges"]) == 4 and summary["frame"] == 10
