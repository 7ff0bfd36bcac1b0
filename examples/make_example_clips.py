"""Regenerates the example clips shipped in ``skelgraph/data/examples/penn_action``.

For every Penn Action class, the first clip of the official test split (by clip id, i.e. file
name) — with ``--checkpoint``, the first one that this model classifies correctly — is read with
the library's loader (:func:`skelgraph.io.load_penn_action_mat`) and written with its ``.npz``
writer (:func:`skelgraph.io.save_npz`) as ``<class>.npz``: keypoints, layout, label, fps, source
and the ``meta`` fields ``split``, ``view`` and ``dimensions``; the per-frame person boxes
(``meta["bbox"]``, only of use with the video frames, which are not shipped) are left
out, which halves the files. Clips of the training split are never shipped, so a model trained on
that split can be demonstrated on them fairly.

Usage: ``python examples/make_example_clips.py [--penn-action ../shared/data/penn_action]
[--out skelgraph/data/examples/penn_action]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

from skelgraph import SkeletonClip
from skelgraph.data import make_loader, write_skeleton_folder
from skelgraph.data.penn_action import penn_action_files, read_penn_action
from skelgraph.io import save_npz
from skelgraph.models.checkpoint import load_checkpoint, resolve_checkpoint
from skelgraph.train.checkpoint_data import checkpoint_folder
from skelgraph.train.evaluate import predict

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "penn_action"
DEFAULT_OUT = REPO / "skelgraph" / "data" / "examples" / "penn_action"
#: Test clips per class (in clip-id order) that ``--checkpoint`` may choose from.
CANDIDATES = 5
#: ``meta`` fields of the loader that are not shipped.
DROPPED_META = ("bbox",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--penn-action", type=Path, default=DEFAULT_SOURCE, help="root holding labels/*.mat"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="destination folder")
    parser.add_argument(
        "--checkpoint", help="a checkpoint or pretrained name: keep clips it classifies correctly"
    )
    args = parser.parse_args(argv)

    candidates: dict[str, list[SkeletonClip]] = {}
    for path in penn_action_files(args.penn_action):  # sorted by clip id
        clip, label, split = read_penn_action(path)
        if split == "test" and len(candidates.setdefault(label, [])) < CANDIDATES:
            meta = {k: v for k, v in clip.meta.items() if k not in DROPPED_META}
            candidates[label].append(dataclasses.replace(clip, meta=meta))
    chosen = {label: clips[0] for label, clips in candidates.items()}
    if args.checkpoint:
        chosen = _recognised(args.checkpoint, candidates)
    args.out.mkdir(parents=True, exist_ok=True)
    stale = {p.stem for p in args.out.glob("*.npz")} - set(chosen)
    for name in sorted(stale):
        (args.out / f"{name}.npz").unlink()
    total = 0
    for label, clip in sorted(chosen.items()):
        path = args.out / f"{label}.npz"
        save_npz(clip, path)
        total += path.stat().st_size
        print(f"{path.name}: clip {clip.source}, {clip.num_frames} frames")
    print(f"wrote {len(chosen)} clips ({total / 1024:.0f} KiB) to {args.out}")
    return 0


def _recognised(source: str, candidates: dict[str, list[SkeletonClip]]) -> dict[str, SkeletonClip]:
    """The first candidate of every class that the model classifies correctly, evaluated as
    ``skelgraph test`` does (the checkpoint's window, sampling and preprocessing)."""
    path = resolve_checkpoint(source)
    model, meta = load_checkpoint(path)
    chosen = {}
    with tempfile.TemporaryDirectory() as folder:
        clips = [clip for group in candidates.values() for clip in group]
        write_skeleton_folder(folder, [(c, str(c.label), "test") for c in clips], progress=False)
        dataset = checkpoint_folder(folder, meta, cache_dir=Path(folder) / "cache")
        preds = predict(
            model, make_loader(dataset, 16), reduce=meta["inference"]["reduce"], progress=False
        )
        right = (preds.logits.argmax(1) == preds.labels).tolist()
        by_source = {
            Path(name).stem: ok for name, ok in zip(dataset.clip_names, right, strict=True)
        }
    for label, group in candidates.items():
        good = [clip for clip in group if by_source[clip.source]]
        if not good:
            raise SystemExit(
                f"{source}: none of the first {CANDIDATES} {label} test clips is right"
            )
        chosen[label] = good[0]
    return chosen


if __name__ == "__main__":
    sys.exit(main())
