"""Regenerates the example clips shipped in ``skelgraph/data/examples/penn_action``.

For every Penn Action class, the first clip of the official test split (by clip id, i.e. file
name) is read with the library's loader (:func:`skelgraph.io.load_penn_action_mat`) and written
with its ``.npz`` writer (:func:`skelgraph.io.save_npz`) as ``<class>.npz``: keypoints, layout,
label, fps, source and the ``meta`` fields ``split``, ``view`` and ``dimensions``; the per-frame
person boxes (``meta["bbox"]``, only of use with the video frames, which are not shipped) are left
out, which halves the files. Clips of the training split are never shipped, so a model trained on
that split can be demonstrated on them fairly.

Usage: ``python examples/make_example_clips.py [--penn-action ../shared/data/penn_action]
[--out skelgraph/data/examples/penn_action]``
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from skelgraph.data.penn_action import penn_action_files, read_penn_action
from skelgraph.io import save_npz

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "penn_action"
DEFAULT_OUT = REPO / "skelgraph" / "data" / "examples" / "penn_action"
#: ``meta`` fields of the loader that are not shipped.
DROPPED_META = ("bbox",)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--penn-action", type=Path, default=DEFAULT_SOURCE, help="root holding labels/*.mat"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="destination folder")
    args = parser.parse_args(argv)

    chosen = {}
    for path in penn_action_files(args.penn_action):  # sorted by clip id
        clip, label, split = read_penn_action(path)
        if split == "test" and label not in chosen:
            meta = {k: v for k, v in clip.meta.items() if k not in DROPPED_META}
            chosen[label] = dataclasses.replace(clip, meta=meta)
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


if __name__ == "__main__":
    sys.exit(main())
