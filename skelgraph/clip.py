"""A validated skeleton sequence (keypoints, joint layout, label and provenance) and its file."""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skelgraph._limits import TooLarge, check_unpacked
from skelgraph._safe_json import loads as safe_json_loads
from skelgraph.layouts import Layout, get_layout, list_layouts
from skelgraph.utils import atomic_write

__all__ = ["MAX_COORDINATE", "SkeletonClip", "check_coordinates"]

#: Largest coordinate magnitude a clip may hold: pixels of any video and metres or millimetres of
#: any motion capture fit, while coordinates near float32's range make the models' features
#: overflow (±1e15 already gives NaN everywhere).
MAX_COORDINATE = 1e6


@dataclass(eq=False)
class SkeletonClip:
    r"""One skeleton sequence of one person, validated on construction.

    The keypoints hold, per frame :math:`t` and joint :math:`v`, the coordinates followed by a
    confidence :math:`c_{t,v} \in [0, 1]` in the last channel: :math:`(x, y, c)` in 2D
    (:math:`C = 3`) or :math:`(x, y, z, c)` in 3D (:math:`C = 4`). A joint with :math:`c_{t,v} = 0`
    is missing in that frame and may hold non-finite coordinates (``NaN``); every other joint must
    have finite ones.

    Args:
        keypoints (numpy.ndarray): Array of shape :obj:`(T, V, C)`, cast to :obj:`float32` (no copy
            when it already is one).
        layout (Layout or str): The joint layout, or the name of a registered one; :obj:`V` must
            equal :obj:`layout.num_joints`.
        label (int or str, optional): Class index or class name. (default: :obj:`None`)
        fps (float, optional): Frame rate in frames per second, positive. (default: :obj:`None`)
        source (str, optional): Where the clip comes from (a video or file name).
            (default: :obj:`None`)
        meta (dict, optional): Free-form, JSON-serialisable extra information (e.g. dataset split,
            camera view). (default: :obj:`{}`)

    Raises:
        ValueError: On an unknown layout, a keypoint array that is not of rank 3, has no frames,
            has :obj:`C` not in :obj:`{3, 4}` or a joint count other than the layout's, a
            confidence outside :math:`[0, 1]`, non-finite coordinates or coordinates beyond
            :data:`MAX_COORDINATE` on a joint whose confidence is not 0, or a non-positive
            frame rate. The message names the field, the expected and
            the actual value.
        TypeError: When :obj:`layout`, :obj:`label`, :obj:`source` or :obj:`meta` has the wrong
            type.
    """

    keypoints: np.ndarray
    layout: Layout
    label: int | str | None = None
    fps: float | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.layout = _resolve_layout(self.layout)
        self.keypoints = _validate_keypoints(self.keypoints, self.layout)
        self.label = _validate_label(self.label)
        if self.fps is not None:
            fps = float(self.fps)
            if not (math.isfinite(fps) and fps > 0):
                raise ValueError(
                    f"clip.fps: expected a positive finite frame rate, got {self.fps!r}"
                )
            self.fps = fps
        if self.source is not None and not isinstance(self.source, str):
            raise TypeError(f"clip.source: expected str or None, got {type(self.source).__name__}")
        if not isinstance(self.meta, dict):
            raise TypeError(f"clip.meta: expected dict, got {type(self.meta).__name__}")

    @property
    def num_frames(self) -> int:
        """The number of frames :obj:`T`."""
        return self.keypoints.shape[0]

    @property
    def num_joints(self) -> int:
        """The number of joints :obj:`V`."""
        return self.keypoints.shape[1]

    @property
    def num_channels(self) -> int:
        """The number of channels :obj:`C` (coordinates plus confidence)."""
        return self.keypoints.shape[2]

    @property
    def is_3d(self) -> bool:
        """Whether the clip holds 3D coordinates (:obj:`C = 4`)."""
        return self.num_channels == 4

    def save(self, path: str | os.PathLike[str]) -> None:
        r"""Writes the clip to an ``.npz`` archive, atomically (a temporary file beside
        :obj:`path` moved onto it when complete).

        The archive holds ``keypoints`` (:obj:`(T, V, C)` float32), ``layout`` (the layout name),
        ``layout_json`` (the full layout, so that layouts that are not registered when loading
        still round-trip), ``meta`` (JSON; numpy arrays are stored as nested lists), and
        ``label``, ``fps``, ``source`` when they are not :obj:`None`. The file name is used as
        given (no ``.npz`` suffix is appended).

        Args:
            path (str or os.PathLike): The destination file.
        """
        fields: dict[str, np.ndarray] = {
            "keypoints": self.keypoints,
            "layout": np.array(self.layout.name),
            "layout_json": np.array(json.dumps(self.layout.to_dict())),
        }
        for key in ("label", "fps", "source"):
            value = getattr(self, key)
            if value is not None:
                fields[key] = np.array(value)
        with atomic_write(path) as f:
            fields["meta"] = np.array(json.dumps(self.meta, default=_json_default))
            np.savez(f, **fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SkeletonClip:
        r"""Reads a clip written by :meth:`save`.

        The layout is rebuilt from ``layout_json`` (:meth:`Layout.from_dict`, equal by value to
        the registered layout of that name when the definitions agree, and not registered); files
        without ``layout_json`` name a registered layout.

        Nothing is unpickled, and the sizes are checked before anything is unpacked: the
        archive may unpack to at most :data:`~skelgraph._limits.MAX_UNPACK_RATIO` times its
        size, and every field must hold the bytes its header declares.

        Args:
            path (str or os.PathLike): The ``.npz`` file.

        Raises:
            FileNotFoundError: When :obj:`path` does not exist.
            ValueError: When the file is not an ``.npz`` archive, a field is missing or
                ill-shaped, or the keypoints fail validation; the message names the file and the
                field.
            skelgraph._limits.TooLarge: A :class:`ValueError` for an archive that unpacks to too
                much.
        """
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                fields = _read_npz_fields(archive, path.stat().st_size, f"{path}: ")
        except (FileNotFoundError, TooLarge):
            raise
        except _ZIP_ERRORS as e:
            raise ValueError(f"{path}: expected an .npz archive of a skeleton clip ({e})") from e

        if "keypoints" not in fields:
            raise ValueError(f"{path}: missing field 'keypoints' (found {sorted(fields)})")
        label = _npz_scalar(fields, "label", path, "iU", "an int or str")
        fps = _npz_scalar(fields, "fps", path, "fiu", "a number")
        source = _npz_scalar(fields, "source", path, "U", "a str")
        meta_json = _npz_scalar(fields, "meta", path, "U", "a JSON str")
        meta = {} if meta_json is None else safe_json_loads(meta_json, f"{path}: field 'meta'")
        if not isinstance(meta, dict):
            raise ValueError(
                f"{path}: field 'meta' expected a JSON object, got {type(meta).__name__}"
            )
        layout = _npz_layout(fields, path)
        try:
            return cls(fields["keypoints"], layout, label=label, fps=fps, source=source, meta=meta)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    def __repr__(self) -> str:
        shape = "x".join(str(s) for s in self.keypoints.shape)
        return (
            f"{type(self).__name__}(keypoints=[{shape}], layout={self.layout.name!r}, "
            f"label={self.label!r}, fps={self.fps!r}, source={self.source!r})"
        )


def _resolve_layout(layout: Layout | str) -> Layout:
    if isinstance(layout, Layout):
        return layout
    if not isinstance(layout, str):
        raise TypeError(
            f"clip.layout: expected a Layout or a layout name, got {type(layout).__name__}"
        )
    try:
        return get_layout(layout)
    except ValueError:
        known = ", ".join(list_layouts())
        raise ValueError(
            f"clip.layout: expected a registered layout name (one of: {known}), got {layout!r}"
        ) from None


def _validate_keypoints(keypoints: Any, layout: Layout) -> np.ndarray:
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim != 3:
        raise ValueError(
            f"clip.keypoints: expected rank 3 (T, V, C), got rank {kp.ndim} with shape {kp.shape}"
        )
    num_frames, num_joints, num_channels = kp.shape
    if num_frames == 0:
        raise ValueError(f"clip.keypoints: expected at least 1 frame, got 0 (shape {kp.shape})")
    if num_channels not in (3, 4):
        raise ValueError(
            "clip.keypoints: expected 3 (x, y, confidence) or 4 (x, y, z, confidence) channels, "
            f"got {num_channels}"
        )
    if num_joints != layout.num_joints:
        raise ValueError(
            f"clip.keypoints: expected {layout.num_joints} joints for layout {layout.name!r}, "
            f"got {num_joints}"
        )
    conf = kp[..., -1]
    bad = ~((conf >= 0.0) & (conf <= 1.0))
    if bad.any():
        t, v = np.argwhere(bad)[0]
        raise ValueError(
            f"clip.keypoints: expected confidence in [0, 1], got {conf[t, v]} at frame {t}, "
            f"joint {v} ({layout.joints[v]!r})"
        )
    bad = ~np.isfinite(kp[..., :-1]).all(axis=-1) & (conf != 0.0)
    if bad.any():
        t, v = np.argwhere(bad)[0]
        raise ValueError(
            "clip.keypoints: expected finite coordinates where confidence is not 0, got "
            f"{kp[t, v, :-1].tolist()} with confidence {conf[t, v]} at frame {t}, "
            f"joint {v} ({layout.joints[v]!r})"
        )
    where = check_coordinates(kp)
    if where is not None:
        t, v = where
        raise ValueError(
            f"clip.keypoints: expected coordinates within ±{MAX_COORDINATE:g}, got "
            f"{kp[t, v, :-1].tolist()} at frame {t}, joint {v} ({layout.joints[v]!r})"
        )
    return kp


def check_coordinates(keypoints: np.ndarray) -> tuple[int, ...] | None:
    r"""The index (all but the channel) of the first joint of :obj:`(..., V, C)` keypoints with a
    coordinate beyond :data:`MAX_COORDINATE` where its confidence is not 0; :obj:`None` when there
    is none. Non-finite coordinates are not counted here."""
    coords = np.abs(keypoints[..., :-1])
    with np.errstate(invalid="ignore"):
        bad = (coords > MAX_COORDINATE).any(axis=-1) & (keypoints[..., -1] != 0.0)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _validate_label(label: Any) -> int | str | None:
    if label is None:
        return None
    if isinstance(label, str):
        return str(label)
    if isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_)):
        return int(label)
    raise TypeError(
        f"clip.label: expected an int class index, a str class name or None, "
        f"got {type(label).__name__}"
    )


#: what reading a malformed or foreign zip archive raises
_ZIP_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    NotImplementedError,  # a compression method zipfile lacks
    RuntimeError,  # an encrypted member
    zlib.error,
    struct.error,
)
#: the .npy header readers by format version (np.savez writes 1.0, or 2.0 for a header over 64 KiB)
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _read_npz_fields(archive: zipfile.ZipFile, file_size: int, where: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive, read after checking the sizes it declares.

    Raises:
        TooLarge: When the archive unpacks to too much (:func:`~skelgraph._limits.check_unpacked`).
        ValueError: When a member's header declares another size than the member holds.
    """
    members = archive.infolist()
    check_unpacked(sum(member.file_size for member in members), file_size, where)
    fields = {}
    for member in members:
        key = member.filename.removesuffix(".npy")
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version not in _NPY_HEADER_READERS:
                raise ValueError(f"field {key!r}: unsupported .npy format version {version}")
            shape, fortran, dtype = _NPY_HEADER_READERS[version](f)
            declared = math.prod(shape) * dtype.itemsize
            if dtype.hasobject:
                raise ValueError(f"field {key!r}: expected plain arrays, got Python objects")
            data = bytearray(min(declared, member.file_size))
            if declared > member.file_size or f.readinto(data) != declared:
                raise ValueError(
                    f"field {key!r}: its header declares shape {shape} of {dtype} "
                    f"({declared} bytes), the archive holds {member.file_size} bytes"
                )
        order = "F" if fortran else "C"
        fields[key] = np.frombuffer(data, dtype=dtype).reshape(shape, order=order)
    return fields


def _npz_scalar(
    fields: Mapping[str, np.ndarray], key: str, path: Path, kinds: str, expected: str
) -> Any:
    """The field :obj:`key` as a Python scalar (:obj:`None` when absent); ``kinds``: dtype kinds."""
    if key not in fields:
        return None
    value = fields[key]
    if value.ndim != 0 or value.dtype.kind not in kinds:
        raise ValueError(
            f"{path}: field {key!r} expected {expected} scalar, "
            f"got shape {value.shape} and dtype {value.dtype}"
        )
    return value.item()


def _npz_layout(fields: Mapping[str, np.ndarray], path: Path) -> Layout | str:
    stored = _npz_scalar(fields, "layout_json", path, "U", "a JSON str")
    if stored is None:
        name = _npz_scalar(fields, "layout", path, "U", "a str")
        if name is None:
            raise ValueError(f"{path}: missing field 'layout' (and 'layout_json')")
        return name
    try:
        return Layout.from_dict(safe_json_loads(stored, "layout_json"))
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise ValueError(f"{path}: field 'layout_json' is not a valid layout ({e})") from e


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    raise TypeError(f"clip.meta: value of type {type(value).__name__} is not JSON-serialisable")
