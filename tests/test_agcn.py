from __future__ import annotations

import pytest
import torch
from torch import nn

from skelgraph.nn.agcn import AdaptiveGraphConv, AGCNBlock
from skelgraph.nn.stgcn import graph_partitions

V = 17


def test_shapes_and_repr() -> None:
    conv = AdaptiveGraphConv(3, 8, "coco17")
    assert conv(torch.randn(2 * V, 10, 3)).shape == (2 * V, 10, 8)
    assert conv.forward_dense(torch.randn(2, 3, 10, V)).shape == (2, 8, 10, V)
    assert str(conv) == (
        "AdaptiveGraphConv(3, 8, layout=coco17, num_subsets=3, adaptive=True, causal=False)"
    )
    block = AGCNBlock(3, 8, "coco17", stride=2)
    assert block(torch.randn(2 * V, 10, 3)).shape == (2 * V, 5, 8)
    assert str(block) == "AGCNBlock(3, 8, layout=coco17, kernel_size=9, stride=2, causal=False)"
    assert isinstance(AGCNBlock(8, 8, "coco17").residual, nn.Identity)


def test_arguments() -> None:
    assert AdaptiveGraphConv(3, 8, "coco17", num_subsets=2).partitions.shape == (2, V, V)
    assert AdaptiveGraphConv(3, 8, torch.rand(2, 5, 5), num_subsets=2).num_joints == 5
    with pytest.raises(ValueError, match="num_subsets: expected one of"):
        AdaptiveGraphConv(3, 8, "coco17", num_subsets=4)
    with pytest.raises(ValueError, match="expected 3 partition matrices"):
        AdaptiveGraphConv(3, 8, torch.rand(2, 5, 5))


def test_initialisation() -> None:
    conv = AdaptiveGraphConv(3, 8, "coco17")
    assert torch.equal(conv.global_graph, torch.zeros(3, V, V))  # B starts at zero
    torch.testing.assert_close(conv.graph(), graph_partitions("coco17"))
    assert torch.equal(conv.bn.weight, torch.full((8,), 1e-6))
    assert conv.embed_channels == 2
    fixed = AdaptiveGraphConv(3, 8, "coco17", adaptive=False)
    assert not hasattr(fixed, "theta")
    with pytest.raises(ValueError, match="adaptive=False"):
        fixed.individual_graph(torch.randn(1, 3, 4, V))
    torch.testing.assert_close(fixed.graph(torch.randn(1, 3, 4, V)), graph_partitions("coco17"))


def reference_forward(conv: AdaptiveGraphConv, x: torch.Tensor) -> torch.Tensor:
    """The 2s-AGCN ``unit_gcn`` forward, one subset at a time, on this layer's weights (its
    matrices are ``[source, target]``, so ours enter transposed)."""
    n, c, t, v = x.shape
    k, e, o = conv.num_subsets, conv.embed_channels, conv.out_channels
    graph = (conv.partitions + conv.global_graph).mT
    theta = conv.theta(x).view(n, k, e, t, v)
    phi = conv.phi(x).view(n, k, e, t, v)
    weight = conv.conv.weight.view(k, o, c)
    y = 0
    for i in range(k):
        a1 = theta[:, i].permute(0, 3, 1, 2).reshape(n, v, e * t)
        a2 = phi[:, i].reshape(n, e * t, v)
        a1 = torch.softmax(a1 @ a2 / a1.size(-1), dim=-2) + graph[i]
        z = (x.reshape(n, c * t, v) @ a1).view(n, c, t, v)
        y = y + torch.einsum("oc,nctv->notv", weight[i], z)
    return torch.relu(conv.bn(y) + conv.down(x))


@pytest.mark.parametrize("in_channels", [4, 8])  # aggregation first / convolution first
def test_matches_reference_implementation(in_channels: int) -> None:
    torch.manual_seed(0)
    conv = AdaptiveGraphConv(in_channels, 6, "coco17").eval()
    with torch.no_grad():
        conv.global_graph.normal_(0, 0.1)
        conv.bn.weight.fill_(1.0)
    x = torch.randn(2, in_channels, 7, V)
    torch.testing.assert_close(conv.forward_dense(x), reference_forward(conv, x))


def test_individual_graph_depends_on_input() -> None:
    torch.manual_seed(0)
    conv = AdaptiveGraphConv(3, 8, "coco17")
    x = torch.randn(2, 3, 6, V)
    graph = conv.individual_graph(x)
    assert graph.shape == (2, 3, V, V)
    torch.testing.assert_close(graph.sum(-1), torch.ones(2, 3, V))
    assert (graph[0] - graph[1]).abs().max() > 1e-4
    assert (conv.individual_graph(x * 2) - graph).abs().max() > 1e-4


@pytest.mark.parametrize("in_channels", [3, 8])
def test_causal_graph_is_cumulative(in_channels: int) -> None:
    torch.manual_seed(0)
    causal = AdaptiveGraphConv(in_channels, 6, "coco17", causal=True).eval()
    full = AdaptiveGraphConv(in_channels, 6, "coco17").eval()
    full.load_state_dict(causal.state_dict())
    nn.init.ones_(full.bn.weight)
    nn.init.ones_(causal.bn.weight)
    x = torch.randn(2, in_channels, 6, V)
    graph = causal.individual_graph(x)
    assert graph.shape == (2, 3, 6, V, V)
    torch.testing.assert_close(graph[:, :, -1], full.individual_graph(x))
    torch.testing.assert_close(graph[:, :, 2], full.individual_graph(x[:, :, :3]))
    # at the last frame the causal graph is the full-window graph, so the outputs agree there
    out = causal.forward_dense(x)
    torch.testing.assert_close(out[:, :, -1], full.forward_dense(x)[:, :, -1])
    torch.testing.assert_close(out[:, :, 2], full.forward_dense(x[:, :, :3])[:, :, -1])


def make_stack(causal: bool) -> nn.Sequential:
    torch.manual_seed(0)
    stack = nn.Sequential(
        AGCNBlock(3, 8, "coco17", causal=causal, kernel_size=5),
        AGCNBlock(8, 8, "coco17", causal=causal, kernel_size=5),
    ).eval()
    for block in stack:
        nn.init.ones_(block.gcn.bn.weight)  # make the graph branch visible in the output
    return stack


def test_causal_stack_ignores_future_frames() -> None:
    stack = make_stack(causal=True)
    x = torch.randn(2 * V, 12, 3)
    out = stack(x)
    for t in (0, 5, 10):
        changed = x.clone()
        changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :]) * 5
        torch.testing.assert_close(stack(changed)[:, : t + 1], out[:, : t + 1])


def test_non_causal_stack_sees_future_frames() -> None:
    stack = make_stack(causal=False)
    x = torch.randn(2 * V, 12, 3)
    changed = x.clone()
    changed[:, 11] = torch.randn_like(changed[:, 11]) * 5  # beyond the temporal kernels' reach
    assert (stack(changed)[:, 0] - stack(x)[:, 0]).abs().max() > 1e-4


def test_gradient_flows() -> None:
    torch.manual_seed(0)
    block = AGCNBlock(3, 8, "coco17", stride=2, causal=True)
    nn.init.ones_(block.gcn.bn.weight)
    x = torch.randn(2 * V, 8, 3, requires_grad=True)
    block(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in block.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
