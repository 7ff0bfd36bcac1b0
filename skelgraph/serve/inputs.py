r"""Validation of what clients send to the service: keypoint frames, JPEG images and uploaded
skeleton files.

Everything here works without FastAPI. Invalid input raises :class:`InputError` with the HTTP
status that fits it and a reason that names the field, the expected and the actual value. JSON
is parsed within bounds (:func:`skelgraph._safe_json.loads`), files by readers that check sizes
before they unpack anything.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from skelgraph import _safe_json
from skelgraph._limits import TooLarge
from skelgraph.clip import MAX_COORDINATE, SkeletonClip, check_coordinates
from skelgraph.layouts import Layout, get_layout, list_layouts

__all__ = [
    "SKELETON_SUFFIXES",
    "InputError",
    "jpeg_size",
    "load_skeleton_upload",
    "parse_keypoints",
    "parse_message",
    "resolve_layout_name",
    "upload_suffix",
]

#: uploaded files read as skeletons, by suffix (anything else is treated as a video)
SKELETON_SUFFIXES = (".npz", ".mat", ".json")
#: suffixes refused on upload: unpickling a client's file can run arbitrary code
UNSAFE_SUFFIXES = (".pkl", ".pickle")
#: the largest ``.json`` upload: its parsing holds the GIL, and so stalls every stream, for as
#: long as it takes (4 MiB hold more than 3600 frames of 17 joints; longer clips go as ``.npz``)
MAX_JSON_BYTES = 4 * 2**20
#: a video's suffix (the server names its temporary copy with it, so that the reader knows the
#: container)
_VIDEO_SUFFIX = re.compile(r"\.[a-z0-9]{1,8}")


class InputError(ValueError):
    """Invalid client input.

    Args:
        reason (str): What was wrong, naming the field, the expected and the actual value.
        status (int, optional): The HTTP status that fits: 400 (malformed), 413 (too large),
            415 (unsupported type) or 422 (well-formed but invalid). (default: :obj:`422`)
    """

    def __init__(self, reason: str, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def resolve_layout_name(name: Any, field: str = "layout") -> Layout:
    """The registered layout called :obj:`name`; :class:`InputError` (400) listing the known
    names otherwise."""
    if not isinstance(name, str) or name not in list_layouts():
        raise InputError(
            f"{field}: expected one of {list_layouts()}, got {name!r}",
            status=400,
        )
    return get_layout(name)


def parse_message(text: str) -> dict[str, Any]:
    """A stream's text message as a JSON object (parsed within bounds).

    Raises:
        InputError: With status 400 for text that is not a JSON object, is nested too deeply or
            has a number too long.
    """
    try:
        obj = _safe_json.loads(text, "message")
    except ValueError as e:
        raise InputError(str(e), status=400) from None
    if not isinstance(obj, dict):
        raise InputError(f"message: expected a JSON object, got {type(obj).__name__}", status=400)
    return obj


def parse_keypoints(value: Any, layout: Layout, channels: int = 3) -> np.ndarray:
    r"""One frame of keypoints from a JSON value, checked against the layout.

    Args:
        value: A list of :math:`V` rows ``[x, y, confidence]`` (``[x, y, z, confidence]`` for
            :math:`C = 4`); a coordinate may be ``null`` where the confidence is 0 (missing joint).
        layout (Layout): The layout of the rows.
        channels (int, optional): Values per row :math:`C`, confidence last. (default: :obj:`3`)

    Returns:
        numpy.ndarray: Array of shape :obj:`(V, C)`, :obj:`float32`; missing joints (confidence
        0) have coordinates 0.

    Raises:
        InputError: With status 422, naming the row and the value that is wrong.
    """
    V = layout.num_joints
    fields = "[x, y, confidence]" if channels == 3 else f"{channels} values, confidence last"
    expected = f"a list of {V} rows {fields} for layout {layout.name!r}"
    if not isinstance(value, list):
        raise InputError(f"keypoints: expected {expected}, got {type(value).__name__}")
    if len(value) != V:
        raise InputError(f"keypoints: expected {expected}, got {len(value)} rows")
    out = np.zeros((V, channels), dtype=np.float32)
    for j, row in enumerate(value):
        if not isinstance(row, list) or len(row) != channels:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise InputError(
                f"keypoints[{j}] ({layout.joints[j]}): expected {channels} numbers, got {got}"
            )
        for c, item in enumerate(row):
            if item is None:
                out[j, c] = math.nan
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                # a value past float32's range becomes inf, which the checks below refuse
                out[j, c] = item if abs(item) < _FLOAT32_MAX else math.inf
            else:
                raise InputError(
                    f"keypoints[{j}][{c}] ({layout.joints[j]}): expected a number or null, "
                    f"got {item!r}"
                )
    conf = out[:, -1]
    bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"keypoints[{j}] ({layout.joints[j]}): expected a confidence in [0, 1], "
            f"got {value[j][-1]!r}"
        )
    bad = (conf > 0) & ~np.isfinite(out[:, :-1]).all(axis=1)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"keypoints[{j}] ({layout.joints[j]}): expected finite coordinates where the "
            f"confidence is > 0, got {value[j]!r}"
        )
    extreme = check_coordinates(out)
    if extreme is not None:
        (j,) = extreme
        raise InputError(
            f"keypoints[{j}] ({layout.joints[j]}): expected coordinates within "
            f"±{MAX_COORDINATE:g}, got {value[j]!r}"
        )
    out[conf == 0, :-1] = 0.0
    return out


#: the largest float32
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def upload_suffix(filename: str) -> str:
    """The lower-case suffix of an uploaded file's name, checked: a skeleton format, or a
    video's suffix of up to 8 letters and digits.

    Raises:
        InputError: 415 for a pickle or a suffix that is neither.
    """
    suffix = Path(filename).suffix.lower() if len(filename) <= 255 else ""
    if suffix in UNSAFE_SUFFIXES:
        raise InputError(
            f"file {filename!r}: pickle files are not accepted (loading one can run code); "
            "convert it with `skelgraph convert pyskl` and upload an .npz clip",
            status=415,
        )
    if suffix not in SKELETON_SUFFIXES and not _VIDEO_SUFFIX.fullmatch(suffix):
        raise InputError(
            f"file {filename[:64]!r}: expected a skeleton file {list(SKELETON_SUFFIXES)} or a "
            f"video (a suffix of at most 8 letters and digits, e.g. '.mp4'), got "
            f"{suffix[:16] or 'no suffix'!r}",
            status=415,
        )
    return suffix


def jpeg_size(data: bytes) -> tuple[int, int]:
    """The ``(width, height)`` in a JPEG's frame header, read without decoding the image.

    Raises:
        InputError: With status 422 when :obj:`data` is not a JPEG or has no frame header.
    """
    if data[:3] != b"\xff\xd8\xff":
        raise InputError(
            f"binary message: expected a JPEG image (bytes FF D8 FF), got {data[:3].hex(' ')!r} "
            f"({len(data)} bytes)"
        )
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            break
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        # start-of-frame markers (C0-CF except DHT C4, JPG C8, DAC CC): precision, height, width
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > len(data):
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return width, height
        i += 2 + length
    raise InputError(f"binary message: JPEG without a frame header ({len(data)} bytes)")


def load_skeleton_upload(
    data: bytes,
    filename: str,
    *,
    default_layout: str | Layout = "coco17",
    max_frames: int | None = None,
) -> SkeletonClip:
    r"""A skeleton clip from the bytes of an uploaded file.

    Accepted: ``.npz`` (:func:`skelgraph.io.load_npz`), Penn Action ``.mat``
    (:func:`skelgraph.io.load_penn_action_mat`) and ``.json`` objects
    ``{"keypoints": [[[x, y, c], ...], ...], "layout": name, "fps": number}`` (``layout`` defaults
    to :obj:`default_layout`, ``fps`` is optional). Pickles are refused.

    Args:
        data (bytes): The file's content.
        filename (str): The client's file name; its suffix picks the format.
        default_layout (str or Layout, optional): Layout of ``.json`` uploads that name none.
        max_frames (int, optional): Refuse clips with more frames (status 413).

    Raises:
        InputError: 415 for an unsupported suffix, 413 for too many frames, a ``.json`` file
            above :data:`MAX_JSON_BYTES` or a file that unpacks to far more than its size
            (:mod:`skelgraph._limits`), 422 for a file that does not parse or validate.
    """
    suffix = upload_suffix(filename)
    if suffix not in SKELETON_SUFFIXES:
        raise InputError(
            f"file {filename!r}: expected a skeleton file {list(SKELETON_SUFFIXES)}, got "
            f"{suffix!r}",
            status=415,
        )
    if suffix == ".json":
        if len(data) > MAX_JSON_BYTES:
            raise InputError(
                f"file {filename!r}: expected a .json clip of at most {MAX_JSON_BYTES} bytes, got "
                f"{len(data)}; send long clips as .npz",
                status=413,
            )
        clip = _json_clip(data, filename, default_layout, max_frames)
    else:
        from skelgraph.io import load_npz, load_penn_action_mat  # scipy: only when needed

        with tempfile.TemporaryDirectory(prefix="skelgraph-upload-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                clip = load_npz(path) if suffix == ".npz" else load_penn_action_mat(path)
            except TooLarge as e:
                raise InputError(f"file {filename!r}: {_strip_path(str(e), path)}", 413) from e
            except (ValueError, OSError, KeyError) as e:
                raise InputError(f"file {filename!r}: {_strip_path(str(e), path)}") from e
    if max_frames is not None and clip.num_frames > max_frames:
        raise InputError(
            f"file {filename!r}: expected at most {max_frames} frames, got {clip.num_frames}",
            status=413,
        )
    return clip


def _json_clip(
    data: bytes, filename: str, default_layout: str | Layout, max_frames: int | None
) -> SkeletonClip:
    try:
        obj = _safe_json.loads(data, f"file {filename!r}")
    except ValueError as e:
        raise InputError(str(e)) from None
    if not isinstance(obj, dict) or "keypoints" not in obj:
        raise InputError(
            f"file {filename!r}: expected a JSON object with 'keypoints' (and optional 'layout', "
            f"'fps'), got {type(obj).__name__}"
            + (f" with keys {sorted(obj)}" if isinstance(obj, dict) else "")
        )
    layout = (
        resolve_layout_name(obj["layout"], f"file {filename!r}: layout")
        if "layout" in obj
        else get_layout(default_layout)
    )
    fps = obj.get("fps")
    if fps is not None and (
        not isinstance(fps, (int, float)) or isinstance(fps, bool) or not fps > 0
    ):
        raise InputError(f"file {filename!r}: fps: expected a positive number, got {fps!r}")
    frames = obj["keypoints"]
    if not isinstance(frames, list) or not frames:
        raise InputError(
            f"file {filename!r}: keypoints: expected a non-empty list of frames, got {frames!r:.40}"
        )
    if max_frames is not None and len(frames) > max_frames:
        raise InputError(
            f"file {filename!r}: expected at most {max_frames} frames, got {len(frames)}",
            status=413,
        )
    first = frames[0][0] if isinstance(frames[0], list) and frames[0] else None
    channels = len(first) if isinstance(first, list) and len(first) in (3, 4) else 3
    kp = np.stack([_frame(f, layout, channels, filename, t) for t, f in enumerate(frames)])
    try:
        return SkeletonClip(kp, layout, fps=fps, source=filename)
    except ValueError as e:
        raise InputError(f"file {filename!r}: {e}") from e


def _frame(value: Any, layout: Layout, channels: int, filename: str, t: int) -> np.ndarray:
    try:
        return parse_keypoints(value, layout, channels)
    except InputError as e:
        raise InputError(f"file {filename!r}: frame {t}: {e.reason}") from e


def _strip_path(message: str, path: Path) -> str:
    """A loader's message without the server's temporary path."""
    return message.replace(f"{path}: ", "").replace(str(path), "the file")
