"""Reading and writing skeleton clips: ``.npz``, mmaction2/pyskl pickles, Penn Action ``.mat``.

The ``.npz`` format is the clip's own (:meth:`SkeletonClip.save <skelgraph.clip.SkeletonClip.save>`
and :meth:`~skelgraph.clip.SkeletonClip.load`); :func:`save_npz` and :func:`load_npz` are their
function forms. Every writer goes through :func:`atomic_write`: the data is written to a temporary
file in the destination's directory and moved over the destination with :func:`os.replace`, so a
failed write never leaves a partial file behind.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skelgraph._matfile import read_variables
from skelgraph._unpickle import load_data
from skelgraph.clip import SkeletonClip
from skelgraph.layouts import Layout
from skelgraph.utils import PathLike, atomic_write

__all__ = [
    "PENN_ACTION_FIELDS",
    "PENN_ACTION_FPS",
    "load_npz",
    "load_penn_action_mat",
    "load_pyskl",
    "save_npz",
    "save_pyskl",
]


#: Frame rate of the Penn Action videos.
PENN_ACTION_FPS = 30.0
#: The fields of a Penn Action annotation file that are read.
PENN_ACTION_FIELDS = ("action", "pose", "x", "y", "visibility", "train", "bbox", "dimensions")


# ------------------------------------------------------------------------------------------------
# .npz


def save_npz(clip: SkeletonClip, path: PathLike) -> None:
    """Writes a clip to an ``.npz`` archive, atomically; see :meth:`SkeletonClip.save`."""
    clip.save(path)


def load_npz(path: PathLike) -> SkeletonClip:
    """Reads a clip written by :func:`save_npz`; see :meth:`SkeletonClip.load`."""
    return SkeletonClip.load(path)


# ------------------------------------------------------------------------------------------------
# mmaction2 / pyskl annotation pickles


def load_pyskl(
    path: PathLike, layout: Layout | str = "coco17", *, trust_pickle: bool = False
) -> list[SkeletonClip]:
    r"""Imports an mmaction2/pyskl skeleton annotation pickle.

    The pickle is a list of annotations or a dict ``{"split": {name: [frame_dir, ...]},
    "annotations": [...]}``. Each annotation holds ``keypoint`` :obj:`(M, T, V, D)` with
    :obj:`D \in \{2, 3\}`, ``keypoint_score`` :obj:`(M, T, V)`, ``label`` (int), ``frame_dir`` and
    ``total_frames``, optionally ``img_shape`` / ``original_shape``. Only the first person
    (:obj:`M = 0`) is kept. Scores are clipped to :math:`[0, 1]` (heat-map maxima can exceed 1
    slightly); without ``keypoint_score`` (as in pyskl's 3D NTU files) every confidence is 1.

    The clip's ``source`` is ``frame_dir``; ``meta`` holds ``img_shape`` and ``original_shape`` when
    present, and ``splits`` (the names of the splits listing ``frame_dir``) for the dict format.

    The file is unpickled by :func:`skelgraph._unpickle.load_data`, which builds NumPy arrays and
    builtin values only and refuses any other object before it is made: unpickling runs the code
    a pickle names, so a crafted file could otherwise run anything.

    Args:
        path (str or os.PathLike): The ``.pkl`` file.
        layout (Layout or str, optional): The joint layout of the keypoints.
            (default: :obj:`"coco17"`)
        trust_pickle (bool, optional): Unpickle with :func:`pickle.load`, allowing any object:
            only for a file you trust, whose objects are not arrays and builtin values.
            (default: :obj:`False`)

    Returns:
        list[SkeletonClip]: One clip per annotation, in file order.

    Raises:
        ValueError: When the file is not a pickle, names a callable that is not allowed, or an
            annotation or field is malformed; the message names the file, the annotation and the
            field.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            content = pickle.load(f) if trust_pickle else load_data(f)
        except (  # what malformed pickles raise
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
            KeyError,
            OverflowError,
            RecursionError,
        ) as e:
            hint = "" if trust_pickle else "; pass trust_pickle=True only for a file you trust"
            raise ValueError(f"{path}: cannot be unpickled as annotations ({e}){hint}") from None
    if isinstance(content, dict):
        if "annotations" not in content:
            raise ValueError(
                f"{path}: expected a list of annotations or a dict with 'annotations', "
                f"got a dict with keys {sorted(map(str, content))}"
            )
        annotations, split = content["annotations"], content.get("split") or {}
    elif isinstance(content, list):
        annotations, split = content, {}
    else:
        raise ValueError(
            f"{path}: expected a list of annotations or a dict with 'annotations', "
            f"got {type(content).__name__}"
        )
    if not isinstance(annotations, list):
        raise ValueError(
            f"{path}: 'annotations': expected a list, got {type(annotations).__name__}"
        )
    splits_of = _pyskl_splits(split, path)
    with_splits = isinstance(content, dict) and "split" in content
    return [
        _clip_from_pyskl(annotation, f"{path}: annotations[{i}]", layout, splits_of, with_splits)
        for i, annotation in enumerate(annotations)
    ]


def _pyskl_splits(split: Any, path: Path) -> dict[str, list[str]]:
    """``frame_dir`` → the names of the splits listing it, from a pyskl ``split`` dict."""
    if not isinstance(split, dict) or not all(
        isinstance(members, (list, tuple)) for members in split.values()
    ):
        raise ValueError(
            f"{path}: 'split': expected a dict of split name to a list of frame_dir names, got "
            f"{type(split).__name__}"
        )
    splits_of: dict[str, list[str]] = {}
    for split_name, members in split.items():
        for frame_dir in members:
            splits_of.setdefault(str(frame_dir), []).append(str(split_name))
    return splits_of


def _pyskl_array(annotation: dict, key: str, where: str) -> np.ndarray:
    """The annotation's field as a float32 array; :class:`ValueError` naming it otherwise."""
    try:
        return np.asarray(annotation[key], dtype=np.float32)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"{where}: field {key!r} expected a numeric array ({e})") from None


def _pyskl_int(annotation: dict, key: str, where: str) -> int:
    value = annotation[key]
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{where}: field {key!r} expected an integer, got {value!r:.60}")
    return int(value)


def _clip_from_pyskl(
    annotation: Any,
    where: str,
    layout: Layout | str,
    splits_of: Mapping[str, list[str]],
    with_splits: bool,
) -> SkeletonClip:
    if not isinstance(annotation, dict):
        raise ValueError(f"{where}: expected a dict, got {type(annotation).__name__}")
    missing = [k for k in ("keypoint", "label", "frame_dir", "total_frames") if k not in annotation]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    keypoint = _pyskl_array(annotation, "keypoint", where)
    if keypoint.ndim != 4 or keypoint.shape[0] == 0 or keypoint.shape[-1] not in (2, 3):
        raise ValueError(
            f"{where}: field 'keypoint' expected shape (M, T, V, 2 or 3) with M >= 1, "
            f"got {keypoint.shape}"
        )
    if "keypoint_score" in annotation:
        score = _pyskl_array(annotation, "keypoint_score", where)
        if score.shape != keypoint.shape[:3]:
            raise ValueError(
                f"{where}: field 'keypoint_score' expected shape {keypoint.shape[:3]}, "
                f"got {score.shape}"
            )
        score = np.clip(score[0], 0.0, 1.0)
    else:
        score = np.ones(keypoint.shape[1:3], dtype=np.float32)
    total_frames = _pyskl_int(annotation, "total_frames", where)
    if total_frames != keypoint.shape[1]:
        raise ValueError(
            f"{where}: field 'total_frames' expected {keypoint.shape[1]} (frames in 'keypoint'), "
            f"got {total_frames}"
        )
    frame_dir = annotation["frame_dir"]
    if not isinstance(frame_dir, str):
        raise ValueError(f"{where}: field 'frame_dir' expected a str, got {frame_dir!r:.60}")
    meta: dict[str, Any] = {}
    for key in ("img_shape", "original_shape"):
        if key in annotation:
            shape = _pyskl_array(annotation, key, where)
            if shape.shape != (2,) or not np.isfinite(shape).all():
                raise ValueError(
                    f"{where}: field {key!r} expected (height, width), got {annotation[key]!r:.60}"
                )
            meta[key] = [int(s) for s in shape]
    if with_splits:
        meta["splits"] = list(splits_of.get(frame_dir, []))
    keypoints = np.concatenate([keypoint[0], score[..., None]], axis=-1)
    label = annotation["label"]
    if isinstance(label, np.integer):
        label = int(label)
    try:
        return SkeletonClip(keypoints, layout, label=label, source=frame_dir, meta=meta)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where} ({frame_dir!r}): {e}") from e


def save_pyskl(
    clips: Sequence[SkeletonClip],
    path: PathLike,
    split: Mapping[str, Sequence[str]] | None = None,
    *,
    classes: Sequence[str] | None = None,
) -> None:
    r"""Exports clips as an mmaction2/pyskl annotation pickle, atomically (:func:`atomic_write`).

    Each clip becomes one annotation with :obj:`M = 1`: ``keypoint`` :obj:`(1, T, V, C - 1)`
    (missing joints' non-finite coordinates written as 0), ``keypoint_score`` :obj:`(1, T, V)`,
    ``label``, ``frame_dir`` (the clip's ``source``, or ``clip_<index>`` when it has none),
    ``total_frames`` and ``img_shape`` / ``original_shape`` when the clip's ``meta`` has them.

    Args:
        clips (Sequence[SkeletonClip]): The clips; their ``frame_dir`` names must be unique.
        path (str or os.PathLike): The destination ``.pkl`` file.
        split (Mapping[str, Sequence[str]], optional): Split name to ``frame_dir`` names; when
            given, the file is ``{"split": split, "annotations": [...]}``, otherwise the list of
            annotations. (default: :obj:`None`)
        classes (Sequence[str], optional): Class names, to turn string labels into indices.
            (default: :obj:`None`)
    """
    annotations = []
    for i, clip in enumerate(clips):
        coords = clip.keypoints[..., :-1]
        annotation: dict[str, Any] = {
            "frame_dir": clip.source if clip.source is not None else f"clip_{i:06d}",
            "label": _class_index(clip.label, classes, i),
            "total_frames": clip.num_frames,
            "keypoint": np.where(np.isfinite(coords), coords, 0.0)[None],
            "keypoint_score": clip.keypoints[None, ..., -1].copy(),
        }
        for key in ("img_shape", "original_shape"):
            if key in clip.meta:
                annotation[key] = tuple(int(s) for s in clip.meta[key])
        annotations.append(annotation)
    names = [a["frame_dir"] for a in annotations]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise ValueError(
            f"clips: expected unique frame_dir (source) names, got {duplicate!r} twice"
        )
    content: Any = annotations
    if split is not None:
        known = set(names)
        for split_name, members in split.items():
            unknown = [m for m in members if m not in known]
            if unknown:
                raise ValueError(
                    f"split[{split_name!r}]: expected frame_dir names of the clips, "
                    f"got unknown {unknown[:5]}"
                )
        content = {"split": {k: list(v) for k, v in split.items()}, "annotations": annotations}
    with atomic_write(path) as f:
        pickle.dump(content, f, protocol=pickle.HIGHEST_PROTOCOL)


def _class_index(label: int | str | None, classes: Sequence[str] | None, i: int) -> int:
    if isinstance(label, int):
        return label
    if label is None:
        raise ValueError(f"clips[{i}].label: expected a class index or name, got None")
    if classes is None:
        raise ValueError(
            f"clips[{i}].label: expected an int class index (pass classes= to map names), "
            f"got {label!r}"
        )
    if label not in classes:
        raise ValueError(
            f"clips[{i}].label: expected one of classes {list(classes)}, got {label!r}"
        )
    return list(classes).index(label)


# ------------------------------------------------------------------------------------------------
# Penn Action


def load_penn_action_mat(path: PathLike, *, occluded_confidence: float = 0.5) -> SkeletonClip:
    r"""Reads one Penn Action annotation file (``labels/NNNN.mat``) as a :obj:`penn13` clip.

    The keypoints are :math:`(x, y, c)` per frame and joint, shape :obj:`(T, 13, 3)`. Penn Action
    annotators placed most occluded joints by hand (``visibility = 0`` with coordinates inside the
    image); the rest of the invisible joints sit at the placeholder :math:`(0, 0)` or outside the
    image. The confidence is therefore 1 for visible joints, :obj:`occluded_confidence` for
    occluded joints with an annotated position, and 0 for unannotated ones (treated as missing by
    :func:`~skelgraph.preprocess.interpolate_missing`). ``label`` is the action name,
    ``source`` the file stem (e.g. ``"0001"``), ``fps`` is 30, and ``meta`` holds ``split``
    (``"train"`` when the file's ``train`` field is 1, else ``"test"``), ``view`` (the ``pose``
    field: front, back, left or right), ``bbox`` (per-frame person boxes as a list of
    ``[x1, y1, x2, y2]``; two files of the dataset have one box fewer than frames, kept as stored)
    and ``dimensions`` (``[height, width, frames]``).

    Args:
        path (str or os.PathLike): The ``.mat`` file.
        occluded_confidence (float, optional): Confidence of occluded but annotated joints; 0
            treats them as missing. (default: :obj:`0.5`)

    Only these fields are read, after checking what the file unpacks to
    (:func:`~skelgraph._matfile.read_variables`), so a hostile file is refused before it costs
    memory.

    Raises:
        FileNotFoundError: When :obj:`path` does not exist.
        ValueError: When the file is not a MATLAB v5 file, is corrupt, unpacks to far more than
            its size, or a field is missing or ill-shaped; the message names the file and the
            field.
    """
    path = Path(path)
    mat = read_variables(path.read_bytes(), PENN_ACTION_FIELDS, str(path))
    x = np.asarray(mat["x"], dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != 13:
        raise ValueError(f"{path}: field 'x' expected shape (T, 13), got {x.shape}")
    channels = [x]
    for key in ("y", "visibility"):
        value = np.asarray(mat[key], dtype=np.float32)
        if value.shape != x.shape:
            raise ValueError(
                f"{path}: field {key!r} expected shape {x.shape} (as 'x'), got {value.shape}"
            )
        channels.append(value)
    dimensions = np.asarray(mat["dimensions"], dtype=np.float64).ravel()
    if dimensions.size != 3:
        raise ValueError(
            f"{path}: field 'dimensions' expected [height, width, frames], got {dimensions.size} "
            "values"
        )
    bbox = np.asarray(mat["bbox"], dtype=np.float64)
    if bbox.ndim != 2 or bbox.shape[1] != 4 or len(bbox) not in (len(x), len(x) - 1):
        raise ValueError(
            f"{path}: field 'bbox' expected shape ({len(x)}, 4) (a box per frame), got {bbox.shape}"
        )
    height, width = dimensions[:2]
    x, y, visible = channels
    if not np.isin(visible, (0.0, 1.0)).all():
        raise ValueError(
            f"{path}: field 'visibility' expected values in {{0, 1}}, "
            f"got {np.unique(visible[~np.isin(visible, (0.0, 1.0))])[:5].tolist()}"
        )
    annotated = (x > 1) & (y > 1) & (x <= width) & (y <= height)
    channels[2] = np.where(visible > 0, 1.0, np.where(annotated, occluded_confidence, 0.0)).astype(
        np.float32
    )
    meta = {
        "split": "train" if int(_penn_scalar(mat, "train", path)) == 1 else "test",
        "view": str(_penn_scalar(mat, "pose", path)).strip(),
        "bbox": bbox.tolist(),
        "dimensions": [int(d) for d in dimensions],
    }
    try:
        return SkeletonClip(
            np.stack(channels, axis=-1),
            "penn13",
            label=str(_penn_scalar(mat, "action", path)).strip(),
            fps=PENN_ACTION_FPS,
            source=path.stem,
            meta=meta,
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _penn_scalar(mat: Mapping[str, Any], key: str, path: Path) -> Any:
    value = np.asarray(mat[key]).ravel()
    if value.size != 1:
        raise ValueError(
            f"{path}: field {key!r} expected a single value, got shape {mat[key].shape}"
        )
    return value[0]
