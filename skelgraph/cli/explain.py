"""``skelgraph explain``: what a model looked at in a clip, or in every clip of a class.

::

    skelgraph explain CHECKPOINT [CLIP] --out DIR [--class C] [--frame F] [--top-k K]
        [--method integrated_gradients|gradient_x_input|attention] [--data DIR --split test]

For a skeleton clip (``.npz``), sampled as ``skelgraph test`` samples clips, ``DIR`` receives:

* ``attention_edges.png``: the skeleton at frame ``F`` with the ``K`` strongest edges of every
  spatial layer's graph and of their mean (:attr:`~skelgraph.models.base.AttentionMaps.graphs`);
* ``importance.png``: joint importance for class ``C`` (default: the predicted one) as node
  size and colour over a small multiple of frames;
* ``temporal_attention.png``: per temporal layer, the attention averaged over joints and heads
  (models with temporal attention);
* ``probability.png``: the class probability over the frames (per-step models) or of the clip;
* ``graph.graphml`` (the mean graph at ``F``: ``weight`` the mean, ``weight_<l>`` the mean over
  the heads of the ``l``-th layer; joint coordinates and importance), ``graph_<layer>.graphml``
  (every layer, per head), ``space_time.graphml`` (joints × frames with the temporal attention,
  when the model has one) and ``explanation.json``.

With ``--data DIR --split S`` (a skeleton folder or the Penn Action root), every clip of the
split is run and ``class_graphs.png`` draws, per class, the mean effective adjacency of its clips
on the mean pose; ``class_<name>.graphml`` holds each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from skelgraph.utils import atomic_write

#: what every clip explanation writes
CLIP_FILES = (
    "attention_edges.png",
    "importance.png",
    "probability.png",
    "graph.graphml",
    "explanation.json",
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from skelgraph.explain.attribution import METHODS

    parser = subparsers.add_parser(
        "explain",
        help="draw and export what a model attended to in a clip or a dataset",
        description="Attention graphs, joint importance and class probability of a clip, as "
        "pictures and GraphML; with --data, the mean graph of every class.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint file or model name")
    parser.add_argument("clip", metavar="CLIP", nargs="?", type=Path, help="skeleton clip .npz")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--class", dest="target", metavar="C", help="class name or index")
    parser.add_argument("--frame", type=int, default=-1, metavar="F", help="frame (default: last)")
    parser.add_argument("--top-k", type=int, default=6, metavar="K", help="edges drawn")
    parser.add_argument("--method", choices=METHODS, default="integrated_gradients")
    parser.add_argument("--data", type=Path, metavar="DIR", help="dataset for class graphs")
    parser.add_argument("--split", default="test", help="split of --data (default: test)")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per batch with --data")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint

    if args.clip is None and args.data is None:
        print("skelgraph explain: expected a CLIP, --data DIR, or both", file=sys.stderr)
        return 2
    if args.top_k < 1:
        print(f"skelgraph explain: --top-k: expected >= 1, got {args.top_k}", file=sys.stderr)
        return 2
    try:
        model, meta = load_checkpoint(resolve_checkpoint(args.checkpoint))
    except (FileNotFoundError, ValueError) as e:
        print(f"skelgraph explain: {e}", file=sys.stderr)
        return 2
    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.clip is not None:
            code = _explain_clip(model, meta, args)
            if code:
                return code
        if args.data is not None:
            _explain_classes(model, meta, args)
    except NotImplementedError as e:  # e.g. PoseC3D: no graphs to draw
        print(f"skelgraph explain: {e}; the explanations draw a model's graphs", file=sys.stderr)
        return 2
    return 0


def _explain_clip(model: Any, meta: dict[str, Any], args: argparse.Namespace) -> int:
    import torch

    from skelgraph.clip import SkeletonClip
    from skelgraph.explain import attribution, plots
    from skelgraph.explain.graph import explanation_graph, space_time_graph

    try:
        clip = SkeletonClip.load(args.clip)
        x, mask = attribution.clip_input(clip, model.layout, meta)
    except (FileNotFoundError, ValueError) as e:
        print(f"skelgraph explain: {e}", file=sys.stderr)
        return 2
    classes = list(meta["classes"])
    reduce = meta.get("inference", {}).get("reduce")
    T = x.size(2)
    if not -T <= args.frame < T:
        print(
            f"skelgraph explain: --frame: expected an index in [{-T}, {T}), got {args.frame}",
            file=sys.stderr,
        )
        return 2
    frame = args.frame % T
    with torch.no_grad():
        maps = model.attention(x, mask)
    if args.target is None:
        target = int(maps.output.video_logits(reduce).argmax())
    elif args.target in classes:
        target = classes.index(args.target)
    elif args.target.isdigit() and int(args.target) < len(classes):
        target = int(args.target)
    else:
        print(
            f"skelgraph explain: --class: expected one of {classes}, got {args.target!r}",
            file=sys.stderr,
        )
        return 2
    importance = attribution.joint_importance(
        model, x, mask, target=torch.tensor([target]), method=args.method, reduce=reduce
    )[0].numpy()
    coords = x[0].transpose(0, 1).numpy()  # [T, V, C]
    layout = model.layout
    out = args.out

    layers = {name: g.numpy() for name, g in attribution.frame_graphs(maps, 0, frame).items()}
    mean = np.mean([g.mean(axis=0) for g in layers.values()], axis=0)
    shown = {name: g.mean(axis=0) for name, g in layers.items()} | {"mean": mean}
    plots.plot_edges(out / "attention_edges.png", coords[frame], layout, shown, args.top_k)
    plots.plot_importance(out / "importance.png", coords, layout, importance)
    probabilities = maps.output.logits[0].softmax(dim=-1).numpy()
    plots.plot_probability(out / "probability.png", probabilities, classes)
    graph = explanation_graph(
        layout,
        adjacency=np.stack([g.mean(axis=0) for g in layers.values()]),
        coordinates=coords[frame],
        importance=importance[frame],
    )
    _write_graphml(graph, out / "graph.graphml")
    for name, heads in layers.items():
        layer = explanation_graph(layout, adjacency=heads, coordinates=coords[frame])
        _write_graphml(layer, out / f"graph_{name}.graphml")
    if maps.temporal:
        temporal = {name: t[0].mean(dim=(0, 1)).numpy() for name, t in maps.temporal.items()}
        plots.plot_temporal_attention(out / "temporal_attention.png", temporal)
        per_joint = torch.stack([t[0].mean(dim=1) for t in maps.temporal.values()]).mean(dim=0)
        _write_graphml(
            space_time_graph(layout, per_joint, importance=importance, threshold=0.05),
            out / "space_time.graphml",
        )
    summary = {
        "clip": str(args.clip),
        "class": classes[target],
        "probability": float(maps.output.video_logits(reduce).softmax(dim=-1)[0, target]),
        "method": args.method,
        "frame": frame,
        "joints": list(layout.joints),
        "importance": np.round(importance, 6).tolist(),
        "top_edges": [
            {"source": layout.joints[j], "target": layout.joints[i], "weight": round(w, 6)}
            for j, i, w in plots.top_edges(mean, args.top_k)
        ],
    }
    with atomic_write(out / "explanation.json", "w") as f:
        json.dump(summary, f, indent=1)
    print(f"{args.clip}: {classes[target]} ({summary['probability']:.3f}); wrote {out}")
    return 0


def _explain_classes(model: Any, meta: dict[str, Any], args: argparse.Namespace) -> None:
    import torch

    from skelgraph.data import make_loader, to_dense
    from skelgraph.explain import attribution, plots
    from skelgraph.explain.graph import explanation_graph
    from skelgraph.train.config import config_from_dict
    from skelgraph.train.data import open_dataset

    inference = meta.get("inference", {})
    data = {"window": meta["window"], "preprocess": meta.get("preprocess", {}), "sampling": "clip"}
    if "p_interval" in inference:
        data["p_interval_val"] = inference["p_interval"]
    config = config_from_dict({"data": data})
    dataset = open_dataset(args.data, config.data, split=args.split, classes=meta["classes"])
    classes = list(meta["classes"])
    V = model.layout.num_joints
    sums = torch.zeros(len(classes), V, V)
    poses = torch.zeros(len(classes), V, dataset.in_channels)
    counts = torch.zeros(len(classes))
    with torch.no_grad():
        for batch in make_loader(dataset, args.batch_size, shuffle=False):
            x, mask = to_dense(batch)
            graphs = attribution.mean_graph(model.attention(x, mask), mask)
            sums.index_add_(0, batch.y, graphs)
            real = mask.to(x.dtype).view(x.size(0), 1, -1, 1)
            poses.index_add_(0, batch.y, (x * real).sum(2) / real.sum(2).clamp(min=1))
            counts.index_add_(0, batch.y, torch.ones(len(batch.y)))
    present = [c for c in range(len(classes)) if counts[c] > 0]
    means = {classes[c]: (sums[c] / counts[c]).numpy() for c in present}
    pose = (poses[present].sum(0) / counts[present].sum()).numpy()
    plots.plot_edges(args.out / "class_graphs.png", pose, model.layout, means, args.top_k)
    for name, graph in means.items():
        safe = "".join(ch if ch.isalnum() else "_" for ch in name)
        _write_graphml(
            explanation_graph(model.layout, adjacency=graph), args.out / f"class_{safe}.graphml"
        )
    clips = int(counts.sum())
    print(f"{args.data} ({args.split}): {clips} clips, {len(present)} classes; wrote {args.out}")


def _write_graphml(graph: Any, path: Path) -> None:
    import networkx as nx

    with atomic_write(path) as f:
        nx.write_graphml(graph, f)
