"""Faithfulness of joint importance: deletion curves on the Penn Action test split.

For every shipped Penn Action model and every importance method of
:mod:`skelgraph.explain.attribution`, joints are deleted from the most to the least important
(for the predicted class) and the class probability is recorded after each deletion; the table
gives the mean area under that curve (lower: the ranking finds what the model needs) next to
the area for random joint orders. Clips: a seeded, stratified subset of the official test split
(``--per-class`` clips of each action), sampled as ``skelgraph test`` samples them.

    python benchmarks/explain_faithfulness.py /work/shared/data/penn_action --per-class 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _common import format_table, machine, pin_threads, write_json
from torch_geometric.data import Batch

from skelgraph.data import PennAction, to_dense
from skelgraph.explain import attribution
from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint
from skelgraph.preprocess import PreprocessConfig

MODELS = ("penn-action", "penn-action-fast")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="Penn Action root (labels/*.mat)")
    parser.add_argument("--per-class", type=int, default=2, help="test clips per action")
    parser.add_argument("--random", type=int, default=2, help="random orders per clip")
    parser.add_argument("--steps", type=int, default=16, help="integrated-gradients steps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "explain_faithfulness.json"
    )
    args = parser.parse_args()
    threads = pin_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for name in MODELS:
        model, meta = load_checkpoint(resolve_checkpoint(name))
        model.eval()
        inference = meta.get("inference", {})
        dataset = PennAction(
            args.root,
            "test",
            window=meta["window"],
            p_interval=inference.get("p_interval", (0.95,)),
            preprocess=PreprocessConfig(**meta.get("preprocess", {})),
            progress=False,
        )
        generator = torch.Generator().manual_seed(args.seed)
        labels = dataset.labels
        chosen = []
        for c in range(dataset.num_classes):
            clips = torch.nonzero(torch.as_tensor(labels) == c).flatten()
            order = torch.randperm(len(clips), generator=generator)[: args.per_class]
            chosen += clips[order].tolist()
        x, mask = to_dense(Batch.from_data_list([dataset[i] for i in chosen]))
        reduce = inference.get("reduce")
        target = attribution.predicted_class(model, x, mask, reduce)
        areas = {}
        for method in (*attribution.METHODS, "random"):
            began = time.perf_counter()
            if method == "random":
                curves = [
                    attribution.deletion_curve(
                        model,
                        x,
                        mask,
                        attribution.random_rankings(len(x), x.size(1), generator),
                        target,
                        reduce=reduce,
                    )
                    for _ in range(args.random)
                ]
                area = torch.stack([attribution.deletion_area(c) for c in curves]).mean(0)
            else:
                importance = attribution.joint_importance(
                    model, x, mask, target=target, method=method, reduce=reduce, steps=args.steps
                )
                ranking = attribution.joint_ranking(importance)
                curve = attribution.deletion_curve(model, x, mask, ranking, target, reduce=reduce)
                area = attribution.deletion_area(curve)
            areas[method] = area
            rows.append(
                {
                    "model": name,
                    "method": method,
                    "clips": len(x),
                    "deletion_area": round(area.mean().item(), 4),
                    "below_random": None,
                    "seconds": round(time.perf_counter() - began, 1),
                }
            )
        for row in rows[-len(areas) :]:
            if row["method"] != "random":
                below = (areas[row["method"]] < areas["random"]).float().mean().item()
                row["below_random"] = round(below, 3)
    elapsed = time.perf_counter() - start
    columns = ["model", "method", "clips", "deletion_area", "below_random", "seconds"]
    print(format_table(rows, columns))
    print(f"total {elapsed:.0f} s on {threads} threads")
    write_json(
        args.out,
        {
            "machine": machine(),
            "threads": threads,
            "settings": vars(args) | {"root": str(args.root), "out": str(args.out)},
            "seconds": round(elapsed, 1),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
