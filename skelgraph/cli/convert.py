"""``skelgraph convert``: datasets to a skeleton folder (``.npz`` clips + ``labels.csv``).

::

    skelgraph convert penn-action SRC DST            # SRC holds labels/*.mat; official split
    skelgraph convert pyskl SRC.pkl DST [--layout coco17] [--classes FILE] [--splits A,B]
        [--trust-pickle]

The result is read by :class:`skelgraph.data.SkeletonFolder`. An existing ``DST`` that is a
previous skeleton folder is replaced as a whole; one holding other files is refused unless
``--overwrite`` (see :func:`skelgraph.data.write_skeleton_folder`). pyskl pickles are read
without running code unless ``--trust-pickle`` (see :func:`skelgraph.io.load_pyskl`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from skelgraph.clip import SkeletonClip
from skelgraph.data.folder import read_class_names, write_skeleton_folder
from skelgraph.data.penn_action import penn_action_files, read_penn_action
from skelgraph.io import load_pyskl

Item = tuple[SkeletonClip, str, str]  # (clip, class name, split)

#: a pyskl split name → its folder split (``xsub_train`` → train, ``test1`` → test, ...)
_SPLIT_NAME = re.compile(r"(train|training|val|valid|validation|test|testing)\d*$")
_CANONICAL = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
#: class indices above this are malformed (the classes are named after the indices up to the
#: largest one)
MAX_CLASSES = 100_000


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a dataset to a folder of .npz clips + labels.csv",
        description="Convert a dataset to a skeleton folder (.npz clips + labels.csv) that "
        "skelgraph.data.SkeletonFolder reads. DST is written only when every clip converted; an "
        "existing DST that is a previous skeleton folder is replaced, one holding other files is "
        "refused unless --overwrite.",
    )
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)

    penn = formats.add_parser(
        "penn-action",
        help="Penn Action annotations (SRC/labels/*.mat), with the official split",
    )
    penn.add_argument("src", type=Path, metavar="SRC", help="Penn Action root holding labels/")
    penn.add_argument("dst", type=Path, metavar="DST", help="output folder")

    pyskl = formats.add_parser("pyskl", help="an mmaction2/pyskl skeleton annotation pickle")
    pyskl.add_argument("src", type=Path, metavar="SRC.pkl", help="the annotation pickle")
    pyskl.add_argument("dst", type=Path, metavar="DST", help="output folder")
    pyskl.add_argument(
        "--layout", default="coco17", help="joint layout of the keypoints (default: coco17)"
    )
    pyskl.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="class names in label-index order, one a line (default: the label indices)",
    )
    pyskl.add_argument(
        "--splits",
        metavar="A,B",
        help="use only these split names of the pickle (e.g. xsub_train,xsub_val); names ending "
        "in train / val / test (optionally followed by digits) map to those splits",
    )
    pyskl.add_argument(
        "--trust-pickle",
        action="store_true",
        help="WARNING: unpickle with no restriction, which runs any code the file names; only "
        "for a file you trust whose objects are not arrays and builtin values (default: only "
        "arrays, numbers, strings and containers are loaded)",
    )
    for sub in (penn, pyskl):
        sub.add_argument(
            "--overwrite",
            action="store_true",
            help="replace DST even when it holds files other than a skeleton folder's "
            "(they are deleted)",
        )
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    splits: Counter[str] = Counter()
    labels: set[str] = set()

    def counted(items: Iterable[Item]) -> Iterator[Item]:
        for clip, label, split in items:
            splits[split] += 1
            labels.add(label)
            yield clip, label, split

    try:
        if args.format == "penn-action":
            files = penn_action_files(args.src)
            items, total, classes = map(read_penn_action, files), len(files), None
        else:
            selected = args.splits.split(",") if args.splits else None
            items, total, classes = _pyskl_items(
                args.src, args.layout, args.classes, selected, args.trust_pickle
            )
        count = write_skeleton_folder(
            args.dst,
            counted(items),
            classes=classes,
            total=total,
            progress=not args.quiet,
            overwrite=args.overwrite,
        )
    except (OSError, ValueError) as e:
        print(f"skelgraph convert: error: {e}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{n} {split or 'unsplit'}" for split, n in sorted(splits.items()))
    num_classes = len(classes) if classes is not None else len(labels)
    print(f"wrote {count} clips ({summary}; {num_classes} classes) to {args.dst}")
    return 0


def _pyskl_items(
    src: Path,
    layout: str,
    classes_file: Path | None,
    selected: Sequence[str] | None,
    trust_pickle: bool,
) -> tuple[Iterator[Item], int, list[str]]:
    """The clips of a pyskl pickle as folder items (lazily labelled and split), their number and
    the class names (from ``classes_file``, else the label indices)."""
    clips = load_pyskl(src, layout, trust_pickle=trust_pickle)
    if not clips:
        raise ValueError(f"{src}: expected at least one annotation, got none")
    if classes_file is not None:
        classes = read_class_names(classes_file)
    else:
        classes = [str(i) for i in range(max(_label_index(c, src) for c in clips) + 1)]

    def items() -> Iterator[Item]:
        for clip in clips:
            index = _label_index(clip, src)
            if index >= len(classes):
                raise ValueError(
                    f"{src}: {clip.source!r}: label: expected an index below {len(classes)} "
                    f"(the classes of {classes_file}), got {index}"
                )
            yield clip, classes[index], _folder_split(clip, selected, src)

    return items(), len(clips), classes


def _label_index(clip: SkeletonClip, src: Path) -> int:
    if not isinstance(clip.label, int) or not 0 <= clip.label < MAX_CLASSES:
        raise ValueError(
            f"{src}: {clip.source!r}: label: expected a class index in [0, {MAX_CLASSES}), got "
            f"{clip.label!r}"
        )
    return clip.label


def _folder_split(clip: SkeletonClip, selected: Sequence[str] | None, src: Path) -> str:
    """The folder split (train / val / test / "") of a clip from the pickle's split names."""
    names = [n for n in clip.meta.get("splits", []) if selected is None or n in selected]
    found = {}
    for name in names:
        match = _SPLIT_NAME.search(name.lower())
        if match:
            found.setdefault(_CANONICAL.get(match[1], match[1]), name)
    if len(found) > 1:
        raise ValueError(
            f"{src}: {clip.source!r}: in the splits {sorted(found.values())}, which map to "
            f"different folder splits; choose the split names with --splits"
        )
    return next(iter(found), "")
