"""Hostile and careless input for the service and the loaders: the messages and files that once
killed a stream, exhausted memory, ran code or gave a 500. Used by the regression tests and by
``benchmarks/serve_attack.py``."""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib

import numpy as np

#: one 600-byte message whose 400-digit integer overflowed float32 and killed its stream
OVERFLOW_MESSAGE = '{"keypoints": [[' + "9" * 400 + ", 0, 1]" + ", [0, 0, 0]" * 16 + "]}"
#: brackets nested past Python's recursion limit
NESTED_MESSAGE = "[" * 20_000 + "]" * 20_000
#: finite but extreme coordinates, which made every output NaN
EXTREME_MESSAGE = json.dumps({"keypoints": [[1e15 * (-1) ** j, 1e15, 1] for j in range(17)]})
#: every malformed text message a stream must answer with an error reply
HOSTILE_MESSAGES = [
    OVERFLOW_MESSAGE,
    NESTED_MESSAGE,
    EXTREME_MESSAGE,
    '{"keypoints": [[5]]}',
    '{"keypoints": [[NaN, 0, 1]]}',
    '{"keypoints": [[1e400, 0, 1]]}',
    '{"keypoints": ' + "[" * 40 + "]" * 40 + "}",
    '{"reset": true, "layout": ' + "9" * 400 + "}",
    "not json",
]


def zip_bomb(unpacked: int = 200_000_000) -> bytes:
    """An ``.npz`` (zip) whose ``keypoints.npy`` member unpacks to :obj:`unpacked` bytes of zeros
    (compressed about 1000:1)."""
    buffer = io.BytesIO()
    header = _npy_header((unpacked // 12, 1, 3), "<f4")
    chunk = bytes(1 << 22)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("keypoints.npy", "w", force_zip64=True) as member:
            member.write(header)
            for _ in range((unpacked - len(header)) // len(chunk)):
                member.write(chunk)
        archive.writestr("layout.npy", _npy_array(np.array("coco17")))
    return buffer.getvalue()


def false_npz_header() -> bytes:
    """An ``.npz`` whose ``keypoints`` header declares 10^12 frames but holds 12 bytes: reading it
    as declared raised MemoryError."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("keypoints.npy", _npy_header((10**12, 1, 3), "<f4") + bytes(12))
        archive.writestr("layout.npy", _npy_array(np.array("coco17")))
    return buffer.getvalue()


def extreme_npz(value: float = 1e15) -> bytes:
    """A ``coco17`` clip of 10 frames whose coordinates are ±:obj:`value` (written without the
    clip's validation, as a careless exporter would)."""
    kp = np.ones((10, 17, 3), np.float32)
    kp[..., :2] = value * (-1.0) ** np.arange(17)[None, :, None]
    buffer = io.BytesIO()
    np.savez(buffer, keypoints=kp, layout=np.array("coco17"))
    return buffer.getvalue()


def mat_bomb(unpacked: int = 150_000_000) -> bytes:
    """A MAT v5 file with Penn Action's fields whose ``bbox`` variable is :obj:`unpacked` bytes of
    doubles, zlib-compressed about 1000:1 (``loadmat`` read all of it, then made it a list)."""
    import scipy.io

    small = io.BytesIO()
    frames = 3
    scipy.io.savemat(
        small,
        {
            "action": "squat",
            "pose": "front",
            "x": np.full((frames, 13), 50.0),
            "y": np.full((frames, 13), 50.0),
            "visibility": np.ones((frames, 13)),
            "train": 1,
            "dimensions": np.array([[480, 640, frames]]),
        },
        do_compression=True,
    )
    rows = unpacked // 32
    name = b"bbox\0\0\0\0"
    data_tag = struct.pack("<II", 9, rows * 32)  # miDOUBLE
    matrix = (
        struct.pack("<IIII", 6, 8, 6, 0)  # array flags: double
        + struct.pack("<IIii", 5, 8, rows, 4)  # dimensions
        + struct.pack("<II", 1, 4)
        + name  # name
        + data_tag
    )
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(struct.pack("<II", 14, len(matrix) + rows * 32) + matrix)]
    chunk = bytes(1 << 22)
    for _ in range(rows * 32 // len(chunk)):
        parts.append(compressor.compress(chunk))
    parts.append(compressor.compress(bytes(rows * 32 % len(chunk))))
    parts.append(compressor.flush())
    element = b"".join(parts)
    return small.getvalue() + struct.pack("<II", 15, len(element)) + element


def big_video(path, size: int = 7680) -> None:
    """A one-frame MJPEG video of :obj:`size` × :obj:`size` pixels (1.8 GB to decode and pose)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size, size))
    assert writer.isOpened(), "OpenCV cannot write MJPEG"
    writer.write(np.zeros((size, size, 3), np.uint8))
    writer.release()


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _npy_array(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
