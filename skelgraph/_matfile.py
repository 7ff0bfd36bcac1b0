"""MATLAB v5 ``.mat`` files from untrusted sources, read within bounds.

:func:`scipy.io.loadmat` unpacks every variable of a file, whatever its size, before the caller
can look at any of them: a small compressed file can unpack to gigabytes. :func:`read_variables`
first measures what the file unpacks to (stopping as soon as it is too much), then reads only the
named variables, and turns whatever a malformed file makes scipy raise into a
:class:`ValueError`.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence

import numpy as np
import scipy.io

from skelgraph._limits import check_unpacked, unpack_limit

__all__ = ["read_variables"]

#: MAT v5 data types of the top-level elements: a variable, or a zlib-compressed one
_MI_MATRIX, _MI_COMPRESSED = 14, 15
#: the MAT v5 header: 116 bytes of text, 8 of subsystem offset, version and byte-order mark
_HEADER_BYTES = 128
#: the variable classes read (never cells, structs, objects or function handles)
_PLAIN_CLASSES = {
    "double", "single", "logical", "char",
    "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
}  # fmt: skip
#: bytes unpacked per step while measuring
_STEP = 1 << 20


def read_variables(data: bytes, names: Sequence[str], where: str) -> dict[str, np.ndarray]:
    """The named variables of the MAT v5 file :obj:`data`.

    Args:
        data (bytes): The file's content.
        names (Sequence[str]): The variables to read; every one must be in the file.
        where (str): The file, for the messages.

    Raises:
        ValueError: ``"{where}: ..."`` when the file is not a MAT v5 file (v4 and the HDF5-based
            v7.3 are not read), lacks a variable, holds one that is not a plain array or
            character string, or is corrupt.
        skelgraph._limits.TooLarge: A :class:`ValueError` for a file that unpacks to too much
            (:func:`~skelgraph._limits.check_unpacked`).
    """
    little = _byte_order(data, where)
    limit = unpack_limit(len(data))
    check_unpacked(_unpacked_size(data, little, limit, where), len(data), f"{where}: ")
    try:
        found = {name: cls for name, _, cls in scipy.io.whosmat(io.BytesIO(data))}
    except Exception as e:  # scipy raises many kinds of error for malformed files
        raise ValueError(f"{where}: corrupt MATLAB file ({type(e).__name__}: {e})") from None
    for name in names:
        if name not in found:
            raise ValueError(f"{where}: missing field {name!r}")
        if found[name] not in _PLAIN_CLASSES:
            raise ValueError(
                f"{where}: field {name!r} expected a numeric array or a string, got a "
                f"MATLAB {found[name]}"
            )
    try:
        return scipy.io.loadmat(io.BytesIO(data), variable_names=list(names))
    except Exception as e:
        raise ValueError(f"{where}: corrupt MATLAB file ({type(e).__name__}: {e})") from None


def _byte_order(data: bytes, where: str) -> bool:
    """Whether the MAT v5 file is little-endian; :class:`ValueError` for anything else."""
    if len(data) < _HEADER_BYTES or data[126:128] not in (b"IM", b"MI"):
        version = "a v7.3 (HDF5) file" if b"HDF" in data[512:520] else "no MAT v5 header"
        raise ValueError(f"{where}: expected a MATLAB v5 .mat file, got {version}")
    return data[126:128] == b"IM"


def _unpacked_size(data: bytes, little: bool, limit: int, where: str) -> int:
    """The bytes the file's variables unpack to, counted up to just past :obj:`limit`."""
    tag = struct.Struct("<II" if little else ">II")
    view = memoryview(data)
    pos, total = _HEADER_BYTES, 0
    while pos + tag.size <= len(data) and total <= limit:
        mdtype, count = tag.unpack_from(data, pos)
        pos += tag.size
        if mdtype == _MI_COMPRESSED:
            inflater = zlib.decompressobj()
            pending: memoryview | bytes = view[pos : pos + count]
            try:
                while total <= limit:  # until the input is used up and no output is held back
                    out = inflater.decompress(pending, _STEP)
                    total += len(out)
                    pending = inflater.unconsumed_tail
                    if not pending and len(out) < _STEP:
                        break
            except zlib.error as e:
                raise ValueError(f"{where}: corrupt compressed variable ({e})") from None
        elif mdtype == _MI_MATRIX:
            total += count
        else:
            raise ValueError(
                f"{where}: expected MATLAB variables at byte {pos - tag.size}, got data type "
                f"{mdtype}"
            )
        pos += count
    return total
