"""A folder of ``.npz`` clips with a ``labels.csv``: reading (:class:`SkeletonFolder`) and writing.

Layout of the folder::

    DIR/labels.csv      header ``path,label,split`` or ``path,label,split,group``; one row
                        per clip:
                        ``path``  the clip file relative to DIR, e.g. ``clips/0001.npz``
                        ``label`` the class name
                        ``split`` ``train``, ``val``, ``test`` or empty
                        ``group`` optional: any string naming what clips share besides their
                                  class (the subject, performer, camera or video), empty for
                                  none; validation splits and cross-validation folds keep a
                                  group whole on one side (:func:`skelgraph.data.grouped_split`)
    DIR/classes.txt     optional: class names in label-index order, one a line
                        (default: the sorted unique labels)
    DIR/clips/*.npz     the clips (:func:`skelgraph.io.save_npz`)
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from skelgraph.clip import SkeletonClip
from skelgraph.data.dataset import SkeletonDataset
from skelgraph.utils import progress_bar

__all__ = [
    "CLASSES_FILE",
    "LABELS_FILE",
    "FolderEntry",
    "SkeletonFolder",
    "read_class_names",
    "read_labels_csv",
    "write_skeleton_folder",
]

LABELS_FILE = "labels.csv"
CLASSES_FILE = "classes.txt"
COLUMNS = ("path", "label", "split")
#: the optional column of ``labels.csv``: the group of a clip
GROUP_COLUMN = "group"
SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class FolderEntry:
    """One row of ``labels.csv``: clip path (relative), class name, split (``""`` for none),
    the row's line number in the file (the header is line 1) and the clip's group (``""`` for
    none, and for every clip of a file without a ``group`` column)."""

    path: str
    label: str
    split: str
    line: int
    group: str = ""


def read_labels_csv(root: str | os.PathLike[str]) -> list[FolderEntry]:
    """Reads and checks ``root/labels.csv``.

    Columns besides ``path``, ``label``, ``split`` and the optional ``group`` are ignored.

    Raises:
        FileNotFoundError: When the file is missing.
        ValueError: On a missing or repeated column, an empty file, a row with more fields than
            the header names (e.g. a group value without a ``group`` column), an empty path or
            label, a path that leads out of the folder (absolute or through ``..``), an unknown
            split value or a path listed twice; the message names the file and line.
    """
    csv_path = Path(root) / LABELS_FILE
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path}: not found; a skeleton folder needs a {LABELS_FILE} with columns "
            f"{','.join(COLUMNS)} and optionally {GROUP_COLUMN} (see `skelgraph convert`)"
        )
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{csv_path}: header: expected columns {','.join(COLUMNS)}[,{GROUP_COLUMN}], got "
                f"{','.join(header) or 'an empty file'} (missing {', '.join(missing)})"
            )
        repeated = sorted({name for name in header if name and header.count(name) > 1})
        if repeated:
            raise ValueError(
                f"{csv_path}: header: expected every column once, got {','.join(header)} "
                f"({', '.join(repeated)} repeated)"
            )
        reader.fieldnames = header
        entries: list[FolderEntry] = []
        seen: dict[str, int] = {}
        for row in reader:
            where = f"{csv_path} line {reader.line_num}"
            if None in row:  # DictReader files the fields beyond the header under None
                raise ValueError(
                    f"{where}: expected at most {len(header)} fields like the header "
                    f"({','.join(header)}), got {len(header) + len(row[None])}; a group column "
                    f"needs its name in the header: {','.join(COLUMNS)},{GROUP_COLUMN}"
                )
            path, label, split, group = (
                (row.get(c) or "").strip() for c in (*COLUMNS, GROUP_COLUMN)
            )
            if not path or not label:
                raise ValueError(f"{where}: expected a path and a label, got {row}")
            relative = PurePosixPath(path.replace("\\", "/"))
            if relative.is_absolute() or ".." in relative.parts or Path(path).is_absolute():
                raise ValueError(
                    f"{where}: path: expected a file inside the folder (relative, without '..'), "
                    f"got {path!r}"
                )
            if split not in ("", *SPLITS):
                raise ValueError(
                    f"{where}: split: expected one of {', '.join(SPLITS)} or empty, got {split!r}"
                )
            if path in seen:
                raise ValueError(f"{where}: path {path!r} already listed on line {seen[path]}")
            seen[path] = reader.line_num
            entries.append(FolderEntry(path, label, split, reader.line_num, group))
    if not entries:
        raise ValueError(f"{csv_path}: expected at least one clip row, found none")
    return entries


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """The class names of a text file (``classes.txt``): one a line, blank lines skipped.

    Raises:
        FileNotFoundError: When the file is missing.
        ValueError: When it holds no name or a name twice.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class name file not found")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise ValueError(f"{path}: expected at least one class name, found none")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{path}: expected unique class names, got duplicates {duplicates}")
    return names


class SkeletonFolder(SkeletonDataset):
    r"""A folder of ``.npz`` clips listed in ``labels.csv`` (see the module docstring).

    The clips must share one layout, or be mapped to the ``layout`` argument. ``classes`` default
    to ``classes.txt`` when present, else the sorted unique labels of all rows (every split).
    The ``group`` column, when present, gives :attr:`clip_groups`.

    Args:
        root (str or os.PathLike): The folder.
        split (str, optional): ``"train"``, ``"val"``, ``"test"``, or :obj:`None` / ``"all"`` for
            every row. (default: :obj:`None`)
        **kwargs: See :class:`~skelgraph.data.SkeletonDataset`.

    Raises:
        FileNotFoundError: When ``labels.csv`` or a clip file is missing (naming file and line).
        ValueError: On a malformed ``labels.csv`` or ``classes.txt``, or an unreadable clip
            (naming file and line).
    """

    SPLITS = SPLITS

    def __init__(
        self, root: str | os.PathLike[str], split: str | None = None, **kwargs: Any
    ) -> None:
        root = Path(root)
        self._entries = read_labels_csv(root)
        self._paths = [root / e.path for e in self._entries]
        for entry, path in zip(self._entries, self._paths, strict=True):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{root / LABELS_FILE} line {entry.line}: clip file {entry.path!r} not found "
                    f"({path})"
                )
        super().__init__(root, split, **kwargs)

    def _sources(self) -> list[Path]:
        return self._paths

    def _key_files(self) -> list[Path]:
        return [self.root / LABELS_FILE, *self._paths]

    def _groups(self) -> list[str] | None:
        groups = [e.group for e in self._entries]
        return groups if any(groups) else None

    def _read(self, index: int) -> tuple[SkeletonClip, str, str]:
        entry = self._entries[index]
        try:
            clip = SkeletonClip.load(self._paths[index])
        except (ValueError, TypeError, OSError) as e:
            raise ValueError(f"{self.root / LABELS_FILE} line {entry.line}: {e}") from e
        return clip, entry.label, entry.split

    def _default_classes(self, cache: dict[str, Any]) -> list[str]:
        path = self.root / CLASSES_FILE
        return read_class_names(path) if path.is_file() else super()._default_classes(cache)


def write_skeleton_folder(
    dst: str | os.PathLike[str],
    items: Iterable[tuple[SkeletonClip, str, str] | tuple[SkeletonClip, str, str, str]],
    *,
    classes: Sequence[str] | None = None,
    total: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> int:
    """Writes clips as a skeleton folder that :class:`SkeletonFolder` reads.

    Everything is written to a temporary folder beside ``dst`` that then replaces ``dst``, so a
    failure leaves ``dst`` as it was and a re-run over an existing folder leaves no stale clip.
    The temporary folders of runs that were killed are removed first. Clip files are named after
    the clip's ``source`` (made file-name safe and unique), and the clip's label is set to its
    class name. ``labels.csv`` gets a ``group`` column when an item has a group.

    Args:
        dst (str or os.PathLike): The folder; if it exists it must be empty or a previous
            skeleton folder (``labels.csv``, ``classes.txt`` and ``.npz`` files under ``clips/``
            only), unless :obj:`overwrite`.
        items (Iterable[tuple]): ``(clip, class name, split)`` or ``(clip, class name, split,
            group)`` with split ``"train"``, ``"val"``, ``"test"`` or ``""`` and group any
            one-line string (the subject, performer, camera or video; ``""`` for none).
        classes (Sequence[str], optional): Class names in label-index order, written to
            ``classes.txt``. (default: :obj:`None`: no ``classes.txt``)
        total (int, optional): The number of items, for the progress bar.
        progress (bool, optional): Show a progress bar. (default: :obj:`True`)
        overwrite (bool, optional): Replace ``dst`` whatever other files it holds (they are
            deleted). (default: :obj:`False`)

    Returns:
        int: The number of clips written.

    Raises:
        FileExistsError: When ``dst`` is a file, or holds other files and not :obj:`overwrite`.
        ValueError: On an item of another length, an unknown split, or a label or group that is
            not a one-line string without surrounding spaces.
    """
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise FileExistsError(f"{dst}: exists and is a file, not a folder; refusing to replace it")
    foreign = [] if overwrite or not dst.is_dir() else _foreign_files(dst)
    if foreign:
        raise FileExistsError(
            f"{dst}: holds files that are not part of a skeleton folder (e.g. {foreign[0]}); "
            "refusing to delete them: choose an empty or new folder, or overwrite"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(dst)
    tmp = _sibling(dst, "tmp")
    try:
        (tmp / "clips").mkdir(parents=True)
        rows: list[tuple[str, str, str, str]] = []
        used: set[str] = set()
        bar = progress_bar(
            items, total=total, desc=f"writing {dst.name}", unit="clip", disable=not progress
        )
        for i, item in enumerate(bar):
            if len(item) not in (3, 4):
                raise ValueError(
                    f"items[{i}]: expected (clip, label, split) or (clip, label, split, group), "
                    f"got {len(item)} values"
                )
            clip, label, split, group = (*item, "")[:4]
            _check_item(i, label, split, group, classes)
            name = _unique_name(clip.source or f"clip_{i:06d}", used)
            if clip.label != label:
                clip = dataclasses.replace(clip, label=label)
            clip.save(tmp / "clips" / f"{name}.npz")
            rows.append((f"clips/{name}.npz", label, split, group))
        if not rows:
            raise ValueError("items: expected at least one clip, got none")
        grouped = any(row[3] for row in rows)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow((*COLUMNS, GROUP_COLUMN) if grouped else COLUMNS)
        writer.writerows(rows if grouped else (row[:3] for row in rows))
        (tmp / LABELS_FILE).write_text(text.getvalue(), encoding="utf-8")
        if classes is not None:
            (tmp / CLASSES_FILE).write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        _replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(rows)


def _check_item(i: int, label: str, split: str, group: str, classes: Sequence[str] | None) -> None:
    if split not in ("", *SPLITS):
        raise ValueError(f"items[{i}]: split: expected one of {SPLITS} or '', got {split!r}")
    if not isinstance(label, str) or not label or label != label.strip() or "\n" in label:
        raise ValueError(f"items[{i}]: label: expected a non-empty class name, got {label!r}")
    # labels.csv strips its fields: surrounding spaces would not survive a round trip
    if not isinstance(group, str) or group != group.strip() or "\n" in group or "\r" in group:
        raise ValueError(
            f"items[{i}]: group: expected a one-line string without surrounding spaces "
            f"('' for none), got {group!r}"
        )
    if classes is not None and label not in classes:
        raise ValueError(f"items[{i}]: label: expected one of {list(classes)}, got {label!r}")


def _unique_name(source: str, used: set[str]) -> str:
    """A file-name safe stem for ``source``, not yet in ``used`` (which it is added to)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", source).strip("._") or "clip"
    name, k = stem, 1
    while name in used:
        name, k = f"{stem}-{k}", k + 1
    used.add(name)
    return name


def _foreign_files(folder: Path) -> list[str]:
    """The entries of ``folder`` that :func:`write_skeleton_folder` would not have written,
    relative to it (at most a few)."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name in (LABELS_FILE, CLASSES_FILE) and entry.is_file():
            continue
        if entry.name == "clips" and entry.is_dir():
            found += [
                str(p.relative_to(folder))
                for p in sorted(entry.iterdir())
                if not (p.suffix == ".npz" and p.is_file())
            ][:3]
            continue
        found.append(entry.name)
    return found


#: the temporary folders of :func:`write_skeleton_folder`: ``.<dst>.<pid>-<random>.tmp|old``
_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{12}\.(tmp|old)")


def _sibling(dst: Path, kind: str) -> Path:
    """A new temporary folder name beside ``dst``, marked with this process's id."""
    return dst.parent / f".{dst.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.{kind}"


def _remove_stale(dst: Path) -> None:
    """Removes the temporary folders beside ``dst`` left by runs that were killed (their process
    is gone); those of a run still going are left alone."""
    for entry in dst.parent.glob(f".{glob.escape(dst.name)}.*"):
        match = _SIBLING.fullmatch(entry.name)
        if match and match["name"] == dst.name and not _alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether a process with this id runs (on this machine)."""
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _replace_dir(src: Path, dst: Path) -> None:
    """Moves the folder ``src`` onto ``dst``, removing the old ``dst`` afterwards."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = _sibling(dst, "old")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old)
