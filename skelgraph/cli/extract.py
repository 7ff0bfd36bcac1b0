"""``skelgraph extract``: videos to a skeleton folder (``.npz`` clips + ``labels.csv``), YOLO pose.

::

    skelgraph extract VIDEO | DIR | LIST.txt --out DST [--labels CSV] [--model yolo11x-pose.pt]
        [--device cpu] [--augment mirror,color,tempo] [--shard i/n] [--fps 30]

Input: one video, a folder searched recursively for videos, or a text file listing videos (one
path a line, relative to the list's folder; blank lines and ``#`` comments skipped). Paths are
taken relative to the *input root*: the folder, the video's folder, or the list's folder (the
deepest folder holding every listed video when some lie outside it). Labels come from
``--labels`` (columns ``path,label[,split]``, ``path`` relative to the input root) or else from
folder names: the label is the video's folder name, the split its parent folder's name when that
is ``train``, ``val`` or ``test``.

Output in ``DST``:

* ``clips/<path without suffix>.npz``: one :class:`~skelgraph.clip.SkeletonClip` per video
  (``coco17``, label, fps, ``source`` = the video path relative to the input root, ``meta`` with
  the split, frame size, source fps and model); with ``--augment``, one more clip per
  augmentation, ``<path without suffix>__<name>.npz``, extracted from the augmented video, with
  the same label and split (so variants of one video never straddle splits) and the random
  parameters in ``meta["augment"]`` (seeded by ``--seed``, the path and the augmentation).
* ``labels.csv`` (``path,label,split``, sorted by path): every clip of this input that exists,
  plus the rows of an earlier ``labels.csv`` whose clips still exist (with the ``group`` column
  when an earlier row has a group: the groups are kept).
* ``failures.csv`` (``path,reason``): videos that could not be read or processed; the run goes on
  without them and a re-run retries them.

Clips are written atomically and a re-run skips the clips that exist, so a killed run is resumed
by running it again. ``--shard i/n`` processes every ``n``-th video of the sorted list starting at
``i``; shards may run at the same time (several machines on a shared folder): clip files never
overlap, each shard keeps its failures in ``DST/.extract/failures-<i>-of-<n>.csv``, and
``labels.csv`` / ``failures.csv`` are rebuilt from the files that exist and rewritten until a
re-read agrees, so the last shard to finish leaves both complete.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from skelgraph.data.folder import COLUMNS, GROUP_COLUMN, LABELS_FILE, SPLITS, read_labels_csv
from skelgraph.utils import progress_bar

if TYPE_CHECKING:
    from skelgraph.pose import PoseEstimator

FAILURES_FILE = "failures.csv"
STATE_DIR = ".extract"
CLIPS_DIR = "clips"
#: an input file with this suffix is a list of videos
LIST_SUFFIX = ".txt"

Row = tuple[str, ...]


@dataclass(frozen=True)
class Video:
    """One input video: the file, its path relative to the input root (POSIX), label and split
    (``label`` is :obj:`None` when no label was found)."""

    path: Path
    source: str
    label: str | None
    split: str


@dataclass(frozen=True)
class Output:
    """One clip to write: the video, the augmentation (:obj:`None` for the original) and the clip
    path relative to the output folder."""

    video: Video
    augment: str | None
    path: str


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "extract",
        help="extract skeletons from videos with a YOLO pose model into a skeleton folder",
        description="Extract one tracked person's coco17 skeletons from videos into a skeleton "
        "folder (.npz clips + labels.csv). Resumable (a re-run skips finished clips) and "
        "shardable; unreadable videos are listed in DST/failures.csv.",
    )
    parser.add_argument(
        "input", type=Path, metavar="VIDEO|DIR|LIST.txt", help="a video, a folder or a list file"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DST", help="output folder")
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="CSV",
        help="labels as path,label[,split] (default: the videos' folder names)",
    )
    parser.add_argument(
        "--model", default="yolo11x-pose.pt", help="YOLO pose model: name, path or .yaml"
    )
    parser.add_argument("--device", help="inference device, e.g. cpu, cuda:0 (default: auto)")
    parser.add_argument(
        "--augment",
        type=_augmentations,
        default=(),
        metavar="A,B",
        help="also extract augmented videos: any of mirror,color,tempo",
    )
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed (default: 0)")
    parser.add_argument(
        "--shard", type=_shard, default=(0, 1), metavar="i/n", help="process shard i of n"
    )
    parser.add_argument("--fps", type=float, help="resample the skeletons to this frame rate")
    parser.add_argument("--imgsz", type=int, help="inference image size (default: the model's)")
    parser.add_argument("--conf", type=float, help="minimum person box confidence")
    parser.add_argument(
        "--keypoint-threshold",
        type=float,
        default=0.3,
        help="joints below this confidence get confidence 0 (default: 0.3)",
    )
    parser.add_argument(
        "--tracker",
        default="bytetrack.yaml",
        help="ultralytics tracker config, or 'none' (default: bytetrack.yaml)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="frames per model call (default: 1)"
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress (off a terminal progress is written as plain lines)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    index, count = args.shard
    try:
        videos = find_videos(args.input, args.labels)
        outputs = plan_outputs(videos, args.augment)
        if args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out}: exists and is not a folder")
    except (ImportError, OSError, ValueError) as e:
        print(f"skelgraph extract: error: {e}", file=sys.stderr)
        return 1
    dst = args.out
    clips: dict[str, list[Output]] = {}  # by video source; labelled videos only
    for out in outputs:
        clips.setdefault(out.video.source, []).append(out)
    mine = videos[index::count]
    remove_stale_temps(dst, [out for v in mine for out in clips.get(v.source, [])])
    todo = [v for v in mine if v.source not in clips or _pending(dst, clips[v.source])]
    written, failures = 0, []
    if todo:
        try:
            estimator = _estimator(args)
        except Exception as e:
            print(f"skelgraph extract: error: model {args.model}: {e}", file=sys.stderr)
            return 1
        bar = progress_bar(todo, desc=f"extract {index}/{count}", unit="video", disable=args.quiet)
        for video in bar:
            try:
                if video.source not in clips:
                    raise ValueError(f"no label for {video.source!r} in {args.labels}")
                pending = _pending(dst, clips[video.source])
                written += extract_video(
                    estimator, video, pending, dst, seed=args.seed, model=str(args.model)
                )
            except Exception as e:
                failures.append((video.source, " ".join(f"{type(e).__name__}: {e}".split())))
                bar.set_postfix(failed=len(failures))
    tag = f"{index}-of-{count}"
    write_csv(dst / STATE_DIR / f"failures-{tag}.csv", ("path", "reason"), failures, tag)
    rows = publish(
        dst / LABELS_FILE,
        lambda rows: (*COLUMNS, GROUP_COLUMN)[: max(map(len, rows), default=len(COLUMNS))],
        lambda: label_rows(dst, outputs),
        tag,
        write_empty=False,
    )
    done = {source for source, outs in clips.items() if not _pending(dst, outs)}
    failed = publish(dst / FAILURES_FILE, ("path", "reason"), lambda: failure_rows(dst, done), tag)
    print(
        f"shard {index}/{count}: {written} clips written, {len(mine) - len(todo)} videos already "
        f"done, {len(failures)} failed; {len(rows)} clips in {dst / LABELS_FILE}, "
        f"{len(failed)} videos in {dst / FAILURES_FILE}"
    )
    return 0


def find_videos(input: Path, labels: Path | None = None) -> list[Video]:
    """The videos of a file, folder or list, sorted by their path relative to the input root,
    with labels from the ``labels`` CSV or the folder names (see the module docstring)."""
    if not input.exists():
        raise FileNotFoundError(f"{input}: input not found (expected a video, folder or list)")
    if input.is_dir():
        root, suffixes = input.resolve(), _video_suffixes()
        paths = [
            p
            for p in root.rglob("*")
            if p.suffix.lower() in suffixes
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ]
    elif input.suffix.lower() == LIST_SUFFIX:
        paths = _read_list(input)
        root = input.parent.resolve()
        if not all(p.is_relative_to(root) for p in paths):
            root = Path(os.path.commonpath([p.parent for p in paths]))
    else:
        paths = [input.resolve()]
        root = paths[0].parent
    table = read_label_table(labels) if labels is not None else None
    videos = []
    for path in paths:
        source = path.relative_to(root).as_posix()
        if table is None:
            label, split = path.parent.name, path.parent.parent.name
            label_split = (label, split if split in SPLITS else "")
        else:
            label_split = table.get(source, (None, ""))
        videos.append(Video(path, source, *label_split))
    if not videos:
        raise ValueError(
            f"{input}: no video found (suffixes {', '.join(sorted(_video_suffixes()))})"
        )
    return sorted(videos, key=lambda v: v.source)


def read_label_table(path: Path) -> dict[str, tuple[str, str]]:
    """Reads a labels CSV with columns ``path,label`` and optionally ``split``.

    Returns:
        dict[str, tuple[str, str]]: ``(label, split)`` by POSIX path (``split`` ``""`` when
        absent).
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [name.strip() for name in reader.fieldnames or []]
        if "path" not in header or "label" not in header:
            raise ValueError(
                f"{path}: header: expected columns path,label[,split], got "
                f"{','.join(header) or 'an empty file'}"
            )
        reader.fieldnames = header
        table: dict[str, tuple[str, str]] = {}
        for row in reader:
            where = f"{path} line {reader.line_num}"
            name, label, split = ((row.get(c) or "").strip() for c in ("path", "label", "split"))
            if not name or not label:
                raise ValueError(f"{where}: expected a path and a label, got {row}")
            if split not in ("", *SPLITS):
                raise ValueError(
                    f"{where}: split: expected one of {', '.join(SPLITS)} or empty, got {split!r}"
                )
            key = PurePosixPath(name.replace("\\", "/")).as_posix()
            if key in table:
                raise ValueError(f"{where}: path {key!r} listed twice")
            table[key] = (label, split)
    return table


def plan_outputs(videos: Sequence[Video], augment: Sequence[str]) -> list[Output]:
    """The clips of every labelled video: the original and one per augmentation.

    Raises:
        ValueError: When two clips would get the same file (e.g. ``a.mp4`` and ``a.avi``).
    """
    outputs: list[Output] = []
    owner: dict[str, str] = {}
    for video in videos:
        if video.label is None:
            continue
        stem = PurePosixPath(video.source).with_suffix("").as_posix()
        for name in (None, *augment):
            path = f"{CLIPS_DIR}/{stem}{f'__{name}' if name else ''}.npz"
            if path in owner:
                raise ValueError(
                    f"clip {path}: both {owner[path]!r} and {video.source!r} would be written "
                    "there; rename one of the videos"
                )
            owner[path] = video.source
            outputs.append(Output(video, name, path))
    return outputs


def extract_video(
    estimator: PoseEstimator,
    video: Video,
    outputs: Iterable[Output],
    dst: Path,
    *,
    seed: int,
    model: str,
) -> int:
    """Extracts and writes the clips :obj:`outputs` of one video into :obj:`dst`; returns how
    many. Augmentation parameters are drawn from a generator seeded by :obj:`seed`, the video's
    path and the augmentation name; :obj:`model` is recorded in the clips' ``meta``."""
    from skelgraph.video import VideoReader, augment_frames, sample_augmentation

    reader = VideoReader(video.path)
    written = 0
    for out in outputs:
        frames: Iterable[np.ndarray] = reader
        meta = {
            "split": video.split,
            "frame_size": [reader.width, reader.height],
            "source_fps": reader.fps,
            "model": model,
        }
        if out.augment is not None:
            key = zlib.crc32(f"{video.source}\0{out.augment}".encode())
            params = sample_augmentation(out.augment, np.random.default_rng([seed, key]))
            frames = augment_frames(reader, out.augment, params)
            meta["augment"] = {"name": out.augment, **params}
        sequence = estimator.estimate(frames, fps=reader.fps)
        clip = sequence.to_clip(estimator.layout, label=video.label, source=video.source, meta=meta)
        (dst / out.path).parent.mkdir(parents=True, exist_ok=True)
        clip.save(dst / out.path)
        written += 1
    return written


def remove_stale_temps(dst: Path, outputs: Iterable[Output]) -> int:
    """Removes the temporary files a killed run left beside :obj:`outputs` (named
    ``.<clip name>.<random>.tmp`` by :func:`skelgraph.io.atomic_write`); other shards' clips are
    not touched. Returns the number removed."""
    names: dict[Path, set[str]] = defaultdict(set)
    for out in outputs:
        target = dst / out.path
        names[target.parent].add(target.name)
    removed = 0
    for folder, targets in names.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            parts = entry.name[1:].rsplit(".", 2)
            if (
                entry.name[0] == "."
                and len(parts) == 3
                and parts[2] == "tmp"
                and parts[0] in targets
            ):
                os.unlink(entry.path)
                removed += 1
    return removed


def label_rows(dst: Path, outputs: Iterable[Output]) -> list[Row]:
    """``labels.csv`` rows: the existing clips of :obj:`outputs`, plus earlier rows whose clip
    file still exists; sorted by path. Rows are ``(path, label, split)``, with the group as a
    fourth value on every row when an earlier row has one (a new clip keeps the group of its
    earlier row)."""
    rows: dict[str, tuple[str, str]] = {}
    groups: dict[str, str] = {}
    if (dst / LABELS_FILE).is_file():
        for e in read_labels_csv(dst):
            if (dst / e.path).is_file():
                rows[e.path] = (e.label, e.split)
                groups[e.path] = e.group
    for out in outputs:
        if (dst / out.path).is_file():
            rows[out.path] = (str(out.video.label), out.video.split)
    if any(groups.values()):
        return [(path, *rows[path], groups.get(path, "")) for path in sorted(rows)]
    return [(path, *rows[path]) for path in sorted(rows)]


def failure_rows(dst: Path, done: set[str]) -> list[Row]:
    """``failures.csv`` rows: the failures of every shard's last run, except the videos in
    :obj:`done` (all clips exist); sorted by path."""
    rows: dict[str, str] = {}
    for path in sorted((dst / STATE_DIR).glob("failures-*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["path"], row["reason"])
    return [(path, rows[path]) for path in sorted(rows) if path not in done]


def publish(
    path: Path,
    header: Row | Callable[[list[Row]], Row],
    rows: Callable[[], list[Row]],
    tag: str,
    *,
    write_empty: bool = True,
) -> list[Row]:
    """Writes ``rows()`` to the CSV :obj:`path` (see :func:`write_csv`) until a fresh ``rows()``
    agrees with what was written, so that concurrent shards end with a complete file: the last
    writer re-reads after every other shard's last change. ``header`` is the header row, or a
    function of the rows that gives it. Returns the rows."""
    current = rows()
    while True:
        if current or write_empty:
            write_csv(path, header(current) if callable(header) else header, current, tag)
        again = rows()
        if again == current:
            return current
        current = again


def write_csv(path: Path, header: Row, rows: Iterable[Row], tag: str) -> None:
    """Writes a CSV atomically through ``.<name>.<tag>.tmp``; the temporary name is fixed per
    shard (:obj:`tag`), so a shard killed while writing overwrites it on its next run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{tag}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _pending(dst: Path, outputs: Iterable[Output]) -> list[Output]:
    return [out for out in outputs if not (dst / out.path).is_file()]


def _estimator(args: argparse.Namespace) -> PoseEstimator:
    from skelgraph.pose import UltralyticsPoseEstimator

    return UltralyticsPoseEstimator(
        args.model,
        device=args.device,
        conf=args.conf,
        imgsz=args.imgsz,
        keypoint_threshold=args.keypoint_threshold,
        tracker=None if args.tracker.lower() == "none" else args.tracker,
        batch_size=args.batch_size,
        target_fps=args.fps,
    )


def _read_list(path: Path) -> list[Path]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [(path.parent / line).resolve() for line in lines if line and not line.startswith("#")]


def _video_suffixes() -> frozenset[str]:
    from skelgraph.video import VIDEO_SUFFIXES

    return VIDEO_SUFFIXES


def _augmentations(text: str) -> tuple[str, ...]:
    from skelgraph.video import VIDEO_AUGMENTATIONS

    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in VIDEO_AUGMENTATIONS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"expected names from {','.join(VIDEO_AUGMENTATIONS)}, got {','.join(unknown)}"
        )
    return names


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected 0 <= i < n, got {text!r}")
    return index, count
