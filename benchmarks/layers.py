"""Speed and memory of the skeleton graph layers on one batch of COCO-17 skeleton sequences.

Every layer maps ``[N, T, C] = [B·V, T, 64]`` features of ``B`` skeletons to ``64`` channels:

* ``SAGC fused``: :class:`~skelgraph.nn.sagc.SAGC` given the canonical all-pairs ``edge_index``
  (``complete_edge_index(V, B)``); :meth:`forward` detects it and runs the dense path.
* ``dense reference``: the same math as straightforward ``einsum`` code on the same parameters
  (:func:`dense_reference`); the fused path should cost at most 1.2× its time and 1.5× its memory.
* ``SAGC edge-wise (all pairs)``: the same layer and graph with the edge order reversed, which is
  not the canonical order, so message passing runs over all ``B·V²`` edges.
* ``SAGC edge-wise (bones)``: the same layer over the bones plus self-loops; attention per frame
  through the extra ``T`` dimension, the learned topology looked up per edge.
* ``STGCNConv``, ``AdaptiveGraphConv``: take ``[N, T, C]`` directly (dense ``[B, V, T, C]``
  inside).
* PyG's ``GCNConv``, ``GATConv``, ``TransformerConv`` accept only ``[nodes, C]``: every
  (joint, frame) pair becomes a node through the free view ``[N·T, C]`` (node ``n·T + t``), and
  the bone graph is repeated for every frame, i.e. ``B·T`` disjoint skeletons. The heads of
  ``GATConv`` / ``TransformerConv`` are averaged (``concat=False``) to keep 64 channels.

Times are medians of repeated calls measured round-robin over all layers (so load from other
processes spreads evenly): ``forward`` in eval mode under :func:`torch.no_grad`, ``fwd+bwd`` in
training mode, backward of the output sum into the parameters and the input. The fused /
reference time ratio is the median over back-to-back pairs of fwd+bwd calls. Peak memory is
measured separately as described by :data:`_common.MEMORY_METHOD`. The glibc malloc variables
are recorded, not set: run e.g. ``MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=
4294967296 MALLOC_TOP_PAD_=1073741824 python benchmarks/layers.py`` to compare.

torch runs with 2 intra-op threads (``torch.set_num_threads``; ``--threads``). Usage:
``python benchmarks/layers.py [--threads 2] [--repeat 7] [--pairs 15] [--check]``; prints a table
and writes ``benchmarks/results/layers.json`` (about 2–3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import (
    MEMORY_METHOD,
    format_table,
    interleaved_times,
    machine,
    malloc_settings,
    median_ms,
    paired_ratio,
    peak_memory,
    pin_threads,
    write_json,
)
from torch import Tensor
from torch.nn import Module
from torch_geometric.nn import GATConv, GCNConv, TransformerConv
from torch_geometric.utils import add_self_loops

from skelgraph.layouts.graph import adjacency, bone_edge_index, complete_edge_index
from skelgraph.nn.agcn import AdaptiveGraphConv
from skelgraph.nn.sagc import SAGC
from skelgraph.nn.stgcn import STGCNConv

LAYOUT = "coco17"
TIME_RATIO_LIMIT = 1.2
MEMORY_RATIO_LIMIT = 1.5
FUSED, REFERENCE = "SAGC fused", "dense reference"


def dense_reference(conv: SAGC, x: Tensor) -> Tensor:
    """SAGC's math written directly with ``einsum`` on the parameters of :obj:`conv`.

    ``x``: ``[B, V, T, C]`` → ``[B, V, T, C']``; batch norm, identity residual and ReLU as in
    ``SAGC(C, C, num_nodes=V, adjacency=...)``.
    """
    H, D, C, O = conv.heads, conv.attention_channels, conv.in_channels, conv.out_channels
    w_q, w_k = conv.lin_qk.weight.view(2, H, D, C).unbind(0)
    b_q, b_k = conv.lin_qk.bias.view(2, H, 1, D).unbind(0)
    q = torch.einsum("bvtc,hdc->bthvd", x, w_q) + b_q
    k = torch.einsum("bvtc,hdc->bthvd", x, w_k) + b_k
    att = torch.softmax(torch.einsum("bthid,bthjd->bthij", q, k) / D**0.5, dim=-1)
    z = torch.einsum("bthij,bjtc->bithc", att * conv.topology, x)
    out = torch.einsum("bithc,ohc->bito", z, conv.lin.weight.view(O, H, C)) + conv.lin.bias
    bn = conv.norm
    out = F.batch_norm(
        out.reshape(-1, O), bn.running_mean, bn.running_var, bn.weight, bn.bias,
        bn.training, bn.momentum, bn.eps,
    ).view(out.shape)  # fmt: skip
    return F.relu(out + x)


def per_frame_edge_index(edge_index: Tensor, num_frames: int) -> Tensor:
    """Repeats a graph over ``[N, T]`` nodes flattened to ``N·T`` (node ``n·T + t``)."""
    frames = torch.arange(num_frames)
    return (edge_index[:, :, None] * num_frames + frames).reshape(2, -1)


def batched(edge_index: Tensor, num_nodes: int, num_graphs: int) -> Tensor:
    """Disjoint copies of a graph, as PyG batching builds them."""
    offsets = torch.arange(num_graphs) * num_nodes
    return (edge_index[:, None, :] + offsets[None, :, None]).reshape(2, -1)


def build_layers(
    B: int, T: int, channels: int, heads: int
) -> dict[str, tuple[Module, Callable[[Tensor], Tensor]]]:
    """Each layer with a function from the ``[B·V, T, C]`` input to its output."""
    V = adjacency(LAYOUT).size(0)
    N = B * V
    sagc = SAGC(channels, channels, heads, num_nodes=V, adjacency=adjacency(LAYOUT))
    complete = complete_edge_index(V, B)
    reversed_complete = complete.flip(1)
    bones = batched(bone_edge_index(LAYOUT), V, B)
    bones_loops = add_self_loops(bones, num_nodes=N)[0]
    frame_bones = per_frame_edge_index(bones, T)
    stgcn = STGCNConv(channels, channels, LAYOUT)
    agcn = AdaptiveGraphConv(channels, channels, LAYOUT)
    gcn = GCNConv(channels, channels)
    gat = GATConv(channels, channels, heads=heads, concat=False)
    transformer = TransformerConv(channels, channels, heads=heads, concat=False)

    def flat(conv: Module) -> Callable[[Tensor], Tensor]:
        return lambda x: conv(x.reshape(-1, x.size(-1)), frame_bones).view(x.shape)

    return {
        FUSED: (sagc, lambda x: sagc(x, complete)),
        REFERENCE: (sagc, lambda x: dense_reference(sagc, x.view(B, V, T, -1)).view(x.shape)),
        "SAGC edge-wise (all pairs)": (sagc, lambda x: sagc(x, reversed_complete)),
        "SAGC edge-wise (bones)": (sagc, lambda x: sagc(x, bones_loops)),
        "STGCNConv": (stgcn, stgcn),
        "AdaptiveGraphConv": (agcn, agcn),
        "GCNConv (per frame)": (gcn, flat(gcn)),
        "GATConv (per frame)": (gat, flat(gat)),
        "TransformerConv (per frame)": (transformer, flat(transformer)),
    }


def forward_step(module: Module, fn: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], Any]:
    def step() -> None:
        module.eval()
        with torch.no_grad():
            fn(x)

    return step


def train_step(module: Module, fn: Callable[[Tensor], Tensor], x: Tensor) -> Callable[[], Any]:
    x = x.detach().requires_grad_()

    def step() -> None:
        module.train()
        module.zero_grad(set_to_none=True)
        x.grad = None
        fn(x).sum().backward()

    return step


def measure(
    layers: dict[str, tuple[Module, Callable[[Tensor], Tensor]]],
    x: Tensor,
    *,
    repeat: int,
    budget: float,
    pairs: int,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """The table rows, and the fwd+bwd samples of back-to-back fused/reference pairs."""
    forward = {name: forward_step(m, fn, x) for name, (m, fn) in layers.items()}
    train = {name: train_step(m, fn, x) for name, (m, fn) in layers.items()}
    steps = {
        **{("forward", n): f for n, f in forward.items()},
        **{("train", n): f for n, f in train.items()},
    }
    times = interleaved_times(steps, repeat=repeat, budget_s=budget)
    rows = [
        {
            "layer": name,
            "params": sum(p.numel() for p in module.parameters()),
            "forward ms": median_ms(times["forward", name]),
            "fwd+bwd ms": median_ms(times["train", name]),
            "peak MiB fwd": peak_memory(forward[name]) / 2**20,
            "peak MiB fwd+bwd": peak_memory(train[name]) / 2**20,
            "forward samples ms": [round(1e3 * t, 2) for t in times["forward", name]],
            "fwd+bwd samples ms": [round(1e3 * t, 2) for t in times["train", name]],
        }
        for name, (module, _) in layers.items()
    ]
    # The target ratio comes from back-to-back pairs (the order alternates), so that load from
    # other processes affects both sides of every pair alike.
    pair_times = interleaved_times(
        {FUSED: train[FUSED], REFERENCE: train[REFERENCE]}, repeat=pairs, warmup=0
    )
    return rows, pair_times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeat", type=int, default=7, help="timed rounds per layer")
    parser.add_argument(
        "--budget",
        type=float,
        default=8.0,
        help="timed seconds after which a slow layer is not run again (it keeps 3 runs)",
    )
    parser.add_argument(
        "--pairs", type=int, default=15, help="back-to-back fused/reference pairs for the ratio"
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "layers.json"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target ratio is missed"
    )
    args = parser.parse_args(argv)

    started = time.perf_counter()
    threads = pin_threads(args.threads)
    torch.manual_seed(0)
    layers = build_layers(args.batch, args.frames, args.channels, args.heads)
    V = adjacency(LAYOUT).size(0)
    x = torch.randn(args.batch * V, args.frames, args.channels)

    sagc, _ = layers[FUSED]
    with torch.no_grad():  # a trained topology is dense: make every V×V entry count
        sagc.topology.add_(0.1 * torch.rand_like(sagc.topology))
        max_diff = (layers[FUSED][1](x) - layers[REFERENCE][1](x)).abs().max().item()
    if max_diff > 1e-4:
        raise RuntimeError(f"SAGC fused and the dense reference differ by {max_diff:.3g}")

    rows, pairs = measure(layers, x, repeat=args.repeat, budget=args.budget, pairs=args.pairs)
    by_name = {row["layer"]: row for row in rows}
    ratios = {
        "time": paired_ratio(pairs[FUSED], pairs[REFERENCE]),
        "memory": by_name[FUSED]["peak MiB fwd+bwd"] / by_name[REFERENCE]["peak MiB fwd+bwd"],
        "time_of_table_medians": by_name[FUSED]["fwd+bwd ms"] / by_name[REFERENCE]["fwd+bwd ms"],
    }
    passed = ratios["time"] <= TIME_RATIO_LIMIT and ratios["memory"] <= MEMORY_RATIO_LIMIT

    columns = ["layer", "params", "forward ms", "fwd+bwd ms", "peak MiB fwd", "peak MiB fwd+bwd"]
    print(
        f"batch {args.batch} × COCO-17 (V = {V}), T = {args.frames}, "
        f"{args.channels} → {args.channels} channels, {args.heads} heads; "
        f"{threads} threads; malloc: {malloc_settings()}"
    )
    print(format_table(rows, columns))
    print(
        f"SAGC fused / dense reference, fwd+bwd: time {ratios['time']:.2f}× (median of "
        f"{args.pairs} back-to-back pairs; limit {TIME_RATIO_LIMIT}), peak memory "
        f"{ratios['memory']:.2f}× (limit {MEMORY_RATIO_LIMIT}): {'pass' if passed else 'FAIL'}"
    )
    result = {
        "config": {
            "layout": LAYOUT,
            "batch": args.batch,
            "frames": args.frames,
            "joints": V,
            "channels": args.channels,
            "heads": args.heads,
            "threads": threads,
            "repeat": args.repeat,
            "budget_s": args.budget,
            "pairs": args.pairs,
        },
        "machine": machine(),
        "malloc": malloc_settings(),
        "memory_method": MEMORY_METHOD,
        "fused_vs_reference_max_abs_diff": max_diff,
        "layers": rows,
        "pair_samples_ms": {name: [round(1e3 * t, 2) for t in ts] for name, ts in pairs.items()},
        "ratios": ratios,
        "limits": {"time": TIME_RATIO_LIMIT, "memory": MEMORY_RATIO_LIMIT},
        "passed": passed,
        "seconds": time.perf_counter() - started,
    }
    print(f"wrote {write_json(args.out, result)} in {result['seconds']:.0f} s")
    return 0 if passed or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
