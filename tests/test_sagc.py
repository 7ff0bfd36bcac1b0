from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import Tensor
from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
from torch_geometric.utils import scatter

from skelgraph.layouts.graph import adjacency, bone_edge_index, complete_edge_index
from skelgraph.nn.sagc import SAGC

V = 17  # COCO-17


def batched(edge_index: Tensor, num_nodes: int, num_graphs: int) -> Tensor:
    offsets = torch.arange(num_graphs) * num_nodes
    return (edge_index[:, None, :] + offsets[None, :, None]).reshape(2, -1)


def add_loops(edge_index: Tensor, num_nodes: int) -> Tensor:
    loops = torch.arange(num_nodes).expand(2, -1)
    return torch.cat([edge_index, loops], dim=1)


def coco_conv(in_channels: int = 8, out_channels: int = 16, **kwargs) -> SAGC:
    """A layer with a dense, non-uniform learned topology (as after training)."""
    conv = SAGC(in_channels, out_channels, num_nodes=V, adjacency=adjacency("coco17"), **kwargs)
    with torch.no_grad():
        conv.topology.add_(torch.rand_like(conv.topology))
    return conv


def dense_formula(conv: SAGC, x: Tensor, edge_index: Tensor) -> Tensor:
    """The docstring's formula with dense masked matrices; ``x``: ``[N, T, C]``, whole skeletons."""
    N, _, C = x.shape
    H, D = conv.heads, conv.attention_channels
    w_q, w_k = conv.lin_qk.weight.view(2, H, D, C).unbind(0)
    b_q, b_k = conv.lin_qk.bias.view(2, H, D).unbind(0)
    q = torch.einsum("ntc,hdc->thnd", x, w_q) + b_q[:, None]
    k = torch.einsum("ntc,hdc->thnd", x, w_k) + b_k[:, None]
    mask = torch.zeros(N, N, dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    score = (q @ k.transpose(-1, -2) / D**0.5).masked_fill(~mask, float("-inf"))
    att = torch.softmax(score, dim=-1).nan_to_num()  # rows without neighbours: zero
    topology = conv.topology[:, torch.arange(N) % V][:, :, torch.arange(N) % V]
    z = torch.einsum("thij,jtc->ithc", att * topology, x)
    return torch.einsum("ithc,ohc->ito", z, conv.lin.weight.view(-1, H, C)) + conv.lin.bias


@pytest.mark.parametrize("extra", [(), (5,), (2, 3)])
def test_sagc_shapes(extra: tuple[int, ...]) -> None:
    x = torch.randn(4, *extra, 8)
    edge_index = torch.tensor([[0, 1, 2, 3, 0], [1, 0, 3, 2, 0]])
    conv = SAGC(8, 32, heads=2)
    assert str(conv) == "SAGC(8, 32, heads=2)"
    out = conv(x, edge_index)
    assert out.shape == (4, *extra, 32)
    out, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert out.shape == (4, *extra, 32)
    assert ei is edge_index
    assert alpha.shape == (5, *extra, 2)
    assert conv(x, edge_index, edge_weight=torch.rand(5)).shape == (4, *extra, 32)


def test_sagc_repr_and_options() -> None:
    conv = SAGC(64, 64, heads=3, num_nodes=V)
    assert str(conv) == "SAGC(64, 64, heads=3, num_nodes=17)"
    assert conv.attention_channels == 8 and conv.topology.shape == (3, V, V)
    assert torch.equal(conv.topology, torch.ones(3, V, V))  # no adjacency: plain attention
    fixed = SAGC(3, 64, num_nodes=V, adjacency=adjacency("coco17"), learn_topology=False)
    assert "topology" in dict(fixed.named_buffers())
    assert "topology" not in dict(fixed.named_parameters())
    assert SAGC(3, 64, num_nodes=V, learn_topology=False).topology is None
    conv = SAGC(3, 64, norm="layer", residual=True)
    out = conv(torch.randn(5, 7, 3), torch.tensor([[0, 1], [1, 2]]))
    assert out.shape == (5, 7, 64) and (out >= 0).all()
    out = SAGC(3, 64, norm=False, activation=False)(torch.randn(5, 3), torch.empty(2, 0).long())
    assert (out < 0).any()


def test_sagc_validation() -> None:
    with pytest.raises(ValueError, match=r"adjacency: expected shape \[17, 17\] or \[3, 17, 17\]"):
        SAGC(8, 8, num_nodes=V, adjacency=torch.ones(16, 16))
    with pytest.raises(ValueError, match="expected 3 per-head matrices, got 2"):
        SAGC(8, 8, adjacency=torch.ones(2, V, V))
    with pytest.raises(ValueError, match="norm: expected a bool, 'batch' or 'layer', got 'group'"):
        SAGC(8, 8, norm="group")
    conv = SAGC(8, 8, num_nodes=V)
    with pytest.raises(ValueError, match=r"x: expected shape \[N, \*, 8\], got \[34, 5, 7\]"):
        conv(torch.randn(34, 5, 7), complete_edge_index(V, 2))
    with pytest.raises(ValueError, match="multiple of num_nodes=17 nodes"):
        conv(torch.randn(20, 8), torch.tensor([[0], [1]]))
    with pytest.raises(ValueError, match=r"expected 17 joints in dimension 1, got 16"):
        conv.forward_dense(torch.randn(2, 16, 5, 8))


def test_sagc_attention_weights() -> None:
    edge_index = torch.tensor([[0, 1, 2, 3, 0, 1, 2], [1, 0, 3, 2, 0, 2, 2]])
    conv = SAGC(8, 16, heads=3)
    _, (ei, alpha) = conv(torch.randn(4, 6, 8), edge_index, return_attention_weights=True)
    assert ei is edge_index and alpha.shape == (7, 6, 3)
    assert alpha.min() >= 0 and alpha.max() <= 1
    sums = scatter(alpha, edge_index[1], dim=0, dim_size=4, reduce="sum")
    assert torch.allclose(sums, torch.ones_like(sums))

    # The fused path returns the weights in the order of the given complete edge_index.
    conv = coco_conv()
    edge_index = complete_edge_index(V, 2)
    x = torch.randn(2 * V, 6, 8)
    _, (ei, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert ei is edge_index and alpha.shape == (2 * V * V, 6, 3)
    sums = scatter(alpha, edge_index[1], dim=0, dim_size=2 * V, reduce="sum")
    assert torch.allclose(sums, torch.ones_like(sums))
    _, att = conv.forward_dense(x.view(2, V, 6, 8), return_attention=True)
    b, i, j = 1, 4, 11  # edge j → i of graph b
    e = (b * V + i) * V + j
    assert edge_index[:, e].tolist() == [b * V + j, b * V + i]
    assert torch.allclose(alpha[e], att[b, :, :, i, j])


def test_sagc_matches_formula() -> None:
    torch.manual_seed(0)
    conv = coco_conv(norm=False, residual=False, activation=False)
    x = torch.randn(2 * V, 4, 8)
    bones = add_loops(batched(bone_edge_index("coco17"), V, 2), 2 * V)
    expected = dense_formula(conv, x, bones)
    torch.testing.assert_close(conv(x, bones), expected, atol=1e-5, rtol=1e-5)
    complete = complete_edge_index(V, 2)
    torch.testing.assert_close(conv(x, complete), dense_formula(conv, x, complete))


def test_sagc_edge_weight_scales_messages() -> None:
    conv = SAGC(8, 16, norm=False, residual=False, activation=False)
    x, edge_index = torch.randn(4, 3, 8), torch.tensor([[0, 1, 2, 3, 0], [1, 0, 3, 2, 0]])
    weight = torch.rand(5)
    bias = conv.lin.bias
    one = conv(x, edge_index, weight) - bias
    torch.testing.assert_close(conv(x, edge_index, 2 * weight) - bias, 2 * one)
    torch.testing.assert_close(conv(x, edge_index, torch.ones(5)), conv(x, edge_index))


@pytest.mark.parametrize("graph", ["bones", "complete"])
def test_sagc_permutation_equivariance(graph: str) -> None:
    torch.manual_seed(1)
    perm = torch.randperm(V)  # new joint a is old joint perm[a]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(V)
    conv = coco_conv().eval()
    permuted = coco_conv().eval()
    state = conv.state_dict()
    state["topology"] = state["topology"][:, perm][:, :, perm]
    permuted.load_state_dict(state)

    x = torch.randn(2, V, 5, 8)
    if graph == "bones":
        edge_index = batched(bone_edge_index("coco17"), V, 2)
        node = inverse[edge_index % V] + edge_index // V * V
        permuted_edge_index = node
    else:
        edge_index = permuted_edge_index = complete_edge_index(V, 2)
    out = conv(x.view(-1, 5, 8), edge_index).view(2, V, 5, 16)
    out_permuted = permuted(x[:, perm].reshape(-1, 5, 8), permuted_edge_index)
    torch.testing.assert_close(out_permuted.view(2, V, 5, 16), out[:, perm])


def test_sagc_empty_edge_index() -> None:
    x = torch.randn(3, 4, 8)
    edge_index = torch.empty(2, 0, dtype=torch.long)
    conv = SAGC(8, 16, norm=False, residual=False, activation=False)
    out, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert torch.equal(out, conv.lin.bias.expand(3, 4, 16))
    assert alpha.shape == (0, 4, 3)
    conv = coco_conv()
    assert conv(torch.randn(0, 4, 8), edge_index).shape == (0, 4, 16)
    assert conv(torch.randn(V, 4, 8), edge_index).shape == (V, 4, 16)


def test_sagc_directed_graph_without_incoming_edges() -> None:
    # Nodes 0 and 3 receive no message.
    edge_index = torch.tensor([[0, 0, 3, 1], [1, 2, 2, 2]])
    x = torch.randn(4, 5, 8)
    conv = SAGC(8, 16, norm=False, residual=False, activation=False)
    out, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
    assert torch.isfinite(out).all()
    assert torch.equal(out[[0, 3]], conv.lin.bias.expand(2, 5, 16))
    assert not torch.equal(out[[1, 2]], conv.lin.bias.expand(2, 5, 16))
    assert torch.allclose(alpha[0], torch.ones(5, 3))
    assert torch.allclose(alpha[1:].sum(0), torch.ones(5, 3))


@pytest.mark.parametrize("extra", [(), (6,)])
@pytest.mark.parametrize(("residual", "norm"), [(True, "batch"), (False, "layer")])
def test_sagc_fused_matches_edgewise(extra: tuple[int, ...], residual: bool, norm: str) -> None:
    torch.manual_seed(2)
    conv = coco_conv(8, 16 if residual else 8, residual=residual, norm=norm)
    B = 3
    complete = complete_edge_index(V, B)
    shuffled = complete[:, torch.randperm(complete.size(1))]  # not canonical: edge-wise
    x = torch.randn(B * V, *extra, 8, requires_grad=True)
    grad = torch.randn(B * V, *extra, conv.out_channels)

    def run(edge_index: Tensor) -> dict[str, Tensor]:
        out, (_, alpha) = conv(x, edge_index, return_attention_weights=True)
        names, params = zip(*conv.named_parameters(), strict=True)
        grads = torch.autograd.grad(out, [x, *params], grad)
        return dict(zip(["out", "alpha", "x", *names], [out, alpha, *grads], strict=True))

    fused, edgewise = run(complete), run(shuffled)
    dense = conv.forward_dense(x.view(B, V, -1, 8)).view_as(fused["out"])
    assert torch.equal(fused["out"], dense)  # forward() took the fused path
    edgewise["alpha"] = edgewise["alpha"][torch.argsort(shuffled[1] * B * V + shuffled[0])]
    if norm == "batch":  # batch norm cancels the bias: its gradient is 0 plus rounding noise
        for result in (fused, edgewise):
            assert result.pop("lin.bias").abs().max() < 1e-4
    for name, value in fused.items():
        torch.testing.assert_close(value, edgewise[name], atol=1e-5, rtol=1e-5, msg=name)


def test_sagc_fused_path_cache() -> None:
    conv = coco_conv().eval()
    edge_index = complete_edge_index(V, 2)
    x = torch.randn(2 * V, 3, 8)
    out = conv(x, edge_index)
    assert torch.equal(conv(x, edge_index), out)
    # Same tensor, changed in place: the check runs again and takes the edge-wise path.
    edge_index[:, [0, 1]] = edge_index[:, [1, 0]]
    torch.testing.assert_close(conv(x, edge_index), out)
    assert not torch.equal(
        conv(x, edge_index), conv.forward_dense(x.view(2, V, 3, 8)).view(2 * V, 3, 16)
    )
    # Modules with a cached check still copy and pickle.
    assert torch.equal(copy.deepcopy(conv)(x, edge_index), conv(x, edge_index))
    assert torch.equal(pickle.loads(pickle.dumps(conv))(x, edge_index), conv(x, edge_index))


def test_sagc_hooks_and_explain_use_messages() -> None:
    conv = coco_conv().eval()
    edge_index = complete_edge_index(V, 2)
    x = torch.randn(2 * V, 3, 8)
    seen = []
    handle = conv.register_message_forward_hook(lambda m, inputs, out: seen.append(out.shape))
    out = conv(x, edge_index)
    handle.remove()
    assert seen == [(2 * V * V, 3, 3, 8)]
    torch.testing.assert_close(out, conv(x, edge_index))
    # An explainer's edge mask of (almost) zero removes every message.
    set_masks(conv, torch.full((edge_index.size(1),), -50.0), edge_index, apply_sigmoid=True)
    masked = conv(x, edge_index)
    clear_masks(conv)
    torch.testing.assert_close(masked, conv(x, torch.empty(2, 0, dtype=torch.long)))


def test_sagc_reset_parameters() -> None:
    conv = coco_conv()
    conv.reset_parameters()
    assert torch.equal(conv.topology, adjacency("coco17").expand(3, V, V))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_sagc_torchscript_not_supported() -> None:
    conv = SAGC(8, 16, num_nodes=V)
    with pytest.raises(RuntimeError, match=r"SAGC does not support torch\.jit\.script"):
        torch.jit.script(conv)


class DenseSAGC(torch.nn.Module):
    def __init__(self, conv: SAGC) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        return self.conv.forward_dense(x)


def test_sagc_export() -> None:
    conv = coco_conv().eval()
    complete = complete_edge_index(V, 2)
    x = torch.randn(2 * V, 3, 8)
    for edge_index in (complete, batched(bone_edge_index("coco17"), V, 2)):
        exported = torch.export.export(conv, (x, edge_index)).module()
        torch.testing.assert_close(exported(x + 1, edge_index), conv(x + 1, edge_index))
    exported = torch.export.export(DenseSAGC(conv), (x.view(2, V, 3, 8),)).module()
    torch.testing.assert_close(exported(x.view(2, V, 3, 8)), conv(x, complete).view(2, V, 3, 16))


@pytest.mark.parametrize("graph", ["complete", pytest.param("bones", marks=pytest.mark.slow)])
def test_sagc_compile(graph: str) -> None:
    torch.manual_seed(3)
    conv = coco_conv().eval()
    compiled = torch.compile(conv)
    for call in range(2):
        x = torch.randn(2 * V, 3, 8)
        if graph == "complete":
            edge_index = complete_edge_index(V, 2)
        else:
            edge_index = batched(bone_edge_index("coco17"), V, 2)
        # A new edge_index tensor, as every batch brings, must not recompile.
        with torch._dynamo.config.patch(error_on_recompile=call > 0):
            torch.testing.assert_close(compiled(x, edge_index), conv(x, edge_index))
