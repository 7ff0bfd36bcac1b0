from __future__ import annotations

import pytest
import torch
from torch import nn

from skelgraph.layouts.graph import spatial_partitions
from skelgraph.nn.stgcn import STGCNBlock, STGCNConv, aggregate, graph_partitions

V = 17


def to_nodes(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, V] -> [B·V, T, C]"""
    b, c, t, v = x.shape
    return x.permute(0, 3, 2, 1).reshape(b * v, t, c)


@pytest.mark.parametrize(("strategy", "k"), [("spatial", 3), ("distance", 2), ("uniform", 1)])
def test_graph_partitions(strategy: str, k: int) -> None:
    parts = graph_partitions("coco17", strategy)
    assert parts.shape == (k, V, V)
    torch.testing.assert_close(parts.sum(0), spatial_partitions("coco17").sum(0))
    with pytest.raises(ValueError, match="partition: expected one of"):
        graph_partitions("coco17", "nearest")


def test_conv_shapes_and_repr() -> None:
    conv = STGCNConv(3, 8, "coco17")
    assert conv(torch.randn(2 * V, 10, 3)).shape == (2 * V, 10, 8)
    assert conv.forward_dense(torch.randn(2, 3, 10, V)).shape == (2, 8, 10, V)
    assert str(conv) == "STGCNConv(3, 8, layout=coco17, partition=spatial)"
    custom = STGCNConv(3, 8, torch.rand(2, 5, 5))
    assert str(custom) == "STGCNConv(3, 8, num_subsets=2, num_joints=5)"
    with pytest.raises(ValueError, match=r"expected node features of shape \(B\*17, T, C\)"):
        conv(torch.randn(20, 10, 3))
    with pytest.raises(ValueError, match=r"expected dense features of shape \(B, 3, T, 17\)"):
        conv.forward_dense(torch.randn(2, 3, 10, 13))
    with pytest.raises(ValueError, match=r"expected a tensor of shape \[K, V, V\]"):
        STGCNConv(3, 8, torch.rand(5, 5))


@pytest.mark.parametrize("in_channels", [3, 6])  # aggregation first / convolution first
def test_conv_matches_formula(in_channels: int) -> None:
    torch.manual_seed(0)
    conv = STGCNConv(in_channels, 4, "penn13")
    with torch.no_grad():
        conv.edge_importance.uniform_(0.5, 1.5)
    x = torch.randn(2, in_channels, 6, 13)
    graph = conv.partitions * conv.edge_importance
    weight = conv.conv.weight.view(3, 4, in_channels)
    bias = conv.conv.bias.view(3, 4)
    expected = sum(
        torch.einsum("ij,oc,bctj->boti", graph[k], weight[k], x)
        + torch.einsum("ij,o->oi", graph[k], bias[k])[None, :, None, :]
        for k in range(3)
    )
    torch.testing.assert_close(conv.forward_dense(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(conv(to_nodes(x)), to_nodes(expected), atol=1e-5, rtol=1e-5)


def test_aggregate_direction() -> None:
    graph = torch.zeros(1, 4, 4)
    graph[0, 2, 1] = 1.0  # message from joint 1 to joint 2
    x = torch.zeros(1, 1, 1, 4)
    x[..., 1] = 1.0
    assert aggregate(x, graph).flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    per_frame = graph.expand(1, 1, 1, 4, 4)
    assert aggregate(x, per_frame).flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


def test_edge_importance_is_learnable() -> None:
    torch.manual_seed(0)
    conv = STGCNConv(3, 8, "coco17")
    assert torch.equal(conv.edge_importance, torch.ones(3, V, V))
    conv(torch.randn(2 * V, 5, 3)).square().sum().backward()
    grad = conv.edge_importance.grad
    assert grad[conv.partitions != 0].abs().min() > 0
    assert grad[conv.partitions == 0].abs().max() == 0
    assert STGCNConv(3, 8, "coco17", edge_importance=False).edge_importance is None


def test_block_shapes_and_residual() -> None:
    block = STGCNBlock(3, 8, "coco17", stride=2)
    assert block(torch.randn(2 * V, 21, 3)).shape == (2 * V, 11, 8)
    assert block.forward_dense(torch.randn(2, 3, 20, V)).shape == (2, 8, 10, V)
    assert str(block) == "STGCNBlock(3, 8, layout=coco17, kernel_size=9, stride=2, causal=False)"
    assert isinstance(block.residual, nn.Sequential)
    assert isinstance(STGCNBlock(8, 8, "coco17").residual, nn.Identity)
    assert STGCNBlock(8, 8, "coco17", residual=False).residual is None
    with pytest.raises(ValueError, match="must be odd"):
        STGCNBlock(3, 8, "coco17", kernel_size=4)


def test_block_reset_parameters_keeps_edge_importance_at_ones() -> None:
    block = STGCNBlock(3, 8, "coco17")
    with torch.no_grad():
        block.gcn.edge_importance.fill_(2.0)
        block.bn.weight.fill_(2.0)
    block.reset_parameters()
    assert torch.equal(block.gcn.edge_importance, torch.ones(3, V, V))
    assert torch.equal(block.bn.weight, torch.ones(8))


def make_stack(causal: bool) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        STGCNBlock(3, 8, "coco17", causal=causal, kernel_size=5),
        STGCNBlock(8, 8, "coco17", causal=causal, kernel_size=5),
    ).eval()


def test_causal_stack_ignores_future_frames() -> None:
    stack = make_stack(causal=True)
    x = torch.randn(2 * V, 16, 3)
    out = stack(x)
    for t in (0, 7, 14):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 5
        torch.testing.assert_close(stack(changed)[:, : t + 1], out[:, : t + 1])


def test_non_causal_stack_sees_future_frames() -> None:
    stack = make_stack(causal=False)
    x = torch.randn(2 * V, 16, 3)
    changed = x.clone()
    changed[:, 8:] = torch.randn_like(changed[:, 8:]) * 5
    assert (stack(changed)[:, 7] - stack(x)[:, 7]).abs().max() > 1e-3


def test_causal_block_with_stride() -> None:
    torch.manual_seed(0)
    block = STGCNBlock(3, 8, "coco17", causal=True, stride=2).eval()
    x = torch.randn(2, 3, 15, V)
    out = block.forward_dense(x)
    assert out.shape == (2, 8, 8, V)
    for j in (0, 3, 6):  # output j depends on input frames <= 2 j
        changed = x.clone()
        changed[:, :, 2 * j + 1 :] = torch.randn_like(changed[:, :, 2 * j + 1 :])
        torch.testing.assert_close(block.forward_dense(changed)[:, :, : j + 1], out[:, :, : j + 1])


def test_block_gradient_flows() -> None:
    torch.manual_seed(0)
    block = STGCNBlock(3, 8, "coco17", stride=2, dropout=0.1)
    x = torch.randn(2 * V, 12, 3, requires_grad=True)
    block(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
