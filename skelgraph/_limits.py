"""How far a file from an untrusted source may unpack: the guard against decompression bombs
shared by the ``.npz`` and ``.mat`` readers."""

from __future__ import annotations

__all__ = ["MAX_UNPACK_RATIO", "TooLarge", "check_unpacked", "unpack_limit"]

#: A file may unpack to at most this many times its size (and at least 1 MiB): skeleton data
#: compresses about 10 times at best, so anything far above it is a decompression bomb.
MAX_UNPACK_RATIO = 64


class TooLarge(ValueError):
    """Input that would unpack to more than its limit (HTTP 413 in the service)."""


def unpack_limit(packed: int) -> int:
    """The most bytes a file of :obj:`packed` bytes may unpack to."""
    return MAX_UNPACK_RATIO * max(packed, 1 << 14)


def check_unpacked(unpacked: int, packed: int, where: str) -> None:
    """Raises :class:`TooLarge` naming :obj:`where` when :obj:`unpacked` bytes are past
    :func:`unpack_limit` of :obj:`packed`."""
    if unpacked > unpack_limit(packed):
        raise TooLarge(
            f"{where}unpacks to more than {unpack_limit(packed)} bytes, {MAX_UNPACK_RATIO} "
            f"times its {packed} bytes"
        )
