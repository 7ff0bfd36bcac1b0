"""Train InfoGCN++ on the blog's sport-14 action set and print the blog's metric table.

The blog (§2.1) pools the 14 sport actions shared by Penn Action, UCF101 and Kinetics-400. This
script builds that dataset from whichever sources it is given:

* ``--penn-action DIR`` — the Penn Action root (``labels/*.mat``);
* ``--ucf101 DIR`` / ``--kinetics DIR`` — skeleton folders (``labels.csv`` + ``.npz``, as written by
  ``skelgraph extract`` / ``skelgraph convert``) labelled with the datasets' original class names
  (``BenchPress``, ``bench pressing``, ...).

Class names are normalised with :func:`skelgraph.data.to_sport14`; clips of other classes are
dropped. All clips are mapped to one layout (``penn13`` when Penn Action is among the sources —
the joints every source has — else the sources' own), written as one skeleton folder with a
stratified 20 % test split, and trained with the blog's hyperparameters (``infogcn2_blog``): the
best checkpoint by validation accuracy (a stratified part of the training clips) is evaluated on
the test split. With only Penn Action it trains on the 8 sport-14 classes Penn Action has.

Quick run (a few minutes on 2 CPU cores)::

    python examples/train_sport14.py --penn-action ../shared/data/penn_action \\
        --epochs 3 --limit 20 --work-dir work_dirs/sport14_quick model.args.channels=32
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from skelgraph.clip import SkeletonClip
from skelgraph.data import SPORT14, stratified_split, to_sport14, write_skeleton_folder
from skelgraph.data.folder import read_labels_csv
from skelgraph.data.penn_action import penn_action_files, read_penn_action
from skelgraph.layouts import Layout, get_layout, map_keypoints
from skelgraph.train import load_config, train

#: The blog's results on its sport-14 test split (§5).
BLOG_RESULTS = {
    "macro_precision": ("Macro Precision", 0.9170),
    "macro_recall": ("Macro Recall", 0.8887),
    "macro_f1": ("Macro F1", 0.8996),
    "top1": ("Accuracy", 0.9302),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--penn-action", type=Path, help="Penn Action root (labels/*.mat)")
    parser.add_argument("--ucf101", type=Path, help="skeleton folder of UCF101 clips")
    parser.add_argument("--kinetics", type=Path, help="skeleton folder of Kinetics-400 clips")
    parser.add_argument("--work-dir", type=Path, default=Path("work_dirs/sport14"))
    parser.add_argument("--config", default="infogcn2_blog", help="config file or packaged name")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--limit", type=int, help="at most this many clips per class")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out test part")
    parser.add_argument("--layout", help="target layout (default: penn13 with Penn Action)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits and the limit")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args(argv)
    if not (args.penn_action or args.ucf101 or args.kinetics):
        parser.error("give at least one source: --penn-action, --ucf101 or --kinetics")
    return args


def penn_action_clips(root: Path) -> Iterator[tuple[SkeletonClip, str]]:
    """``(clip, sport-14 name)`` for the Penn Action clips of a sport-14 class."""
    for path in penn_action_files(root):
        clip, action, _ = read_penn_action(path)
        name = to_sport14(action)
        if name is not None:
            clip.source = f"penn_action/{path.stem}"
            yield clip, name


def folder_clips(root: Path, dataset: str) -> Iterator[tuple[SkeletonClip, str]]:
    """``(clip, sport-14 name)`` for the clips of a skeleton folder with original class names."""
    for entry in read_labels_csv(root):
        name = to_sport14(entry.label)
        if name is not None:
            clip = SkeletonClip.load(root / entry.path)
            clip.source = f"{dataset}/{Path(entry.path).stem}"
            yield clip, name


def collect(args: argparse.Namespace) -> tuple[list[tuple[SkeletonClip, str]], Counter]:
    """Every sport-14 clip of the given sources, and the clip count per (source, class)."""
    sources = []
    if args.penn_action:
        sources.append(("penn_action", penn_action_clips(args.penn_action)))
    if args.ucf101:
        sources.append(("ucf101", folder_clips(args.ucf101, "ucf101")))
    if args.kinetics:
        sources.append(("kinetics", folder_clips(args.kinetics, "kinetics")))
    items, counts = [], Counter()
    for dataset, clips in sources:
        for clip, name in clips:
            items.append((clip, name))
            counts[dataset, name] += 1
    return items, counts


def limit_per_class(
    items: list[tuple[SkeletonClip, str]], limit: int | None, seed: int
) -> list[tuple[SkeletonClip, str]]:
    """At most ``limit`` randomly chosen clips of every class (all when ``limit`` is None)."""
    if limit is None:
        return items
    rng = np.random.default_rng(seed)
    keep = []
    labels = np.array([name for _, name in items])
    for name in np.unique(labels):
        members = np.flatnonzero(labels == name)
        keep.extend(rng.permutation(members)[:limit].tolist())
    return [items[i] for i in sorted(keep)]


def to_layout(clip: SkeletonClip, layout: Layout) -> SkeletonClip:
    """``clip`` in ``layout`` (joints matched by name; absent joints get confidence 0)."""
    if clip.layout == layout:
        return clip
    keypoints = map_keypoints(clip.keypoints, clip.layout, layout)
    return SkeletonClip(keypoints, layout, label=clip.label, fps=clip.fps, source=clip.source)


def print_counts(counts: Counter, classes: Sequence[str]) -> None:
    datasets = sorted({d for d, _ in counts})
    header = f"{'action':<22}" + "".join(f"{d:>13}" for d in datasets) + f"{'count':>8}"
    print(header)
    for name in classes:
        row = [counts[d, name] for d in datasets]
        print(f"{name:<22}" + "".join(f"{n:>13}" for n in row) + f"{sum(row):>8}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    items, counts = collect(args)
    if not items:
        print("no clip of a sport-14 class in the given sources", file=sys.stderr)
        return 1
    classes = [name for name in SPORT14 if any(n == name for _, n in items)]
    print(f"sport-14 clips found ({len(classes)} of the 14 classes):")
    print_counts(counts, classes)
    items = limit_per_class(items, args.limit, args.seed)

    layout = get_layout(args.layout or ("penn13" if args.penn_action else items[0][0].layout.name))
    labels = np.array([classes.index(name) for _, name in items])
    _, test_idx = stratified_split(labels, args.test_fraction, args.seed)
    is_test = np.zeros(len(items), dtype=bool)
    is_test[test_idx] = True
    folder = args.work_dir / "data"
    write_skeleton_folder(
        folder,
        (
            (to_layout(clip, layout), name, "test" if test else "train")
            for (clip, name), test in zip(items, is_test, strict=True)
        ),
        classes=classes,
        total=len(items),
    )
    print(f"{len(items)} clips in layout {layout.name!r}: {int(is_test.sum())} held out for test")

    overrides = [f"epochs={args.epochs}"] if args.epochs is not None else []
    config = load_config(args.config, [f"seed={args.seed}", *overrides, *args.overrides])
    metrics = train(config, folder, args.work_dir)

    print("\nsport-14 test split: skelgraph vs the blog (§5)")
    print(f"| {'Metric':<16} | {'skelgraph':>9} | {'blog':>6} |")
    print(f"|{'-' * 18}|{'-' * 11}|{'-' * 8}|")
    for key, (label, blog) in BLOG_RESULTS.items():
        print(f"| {label:<16} | {metrics[key]:>9.4f} | {blog:>6.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
