"""Atomic file writes: a failed write never leaves a partial file behind.

The lowest layer of the package (it imports nothing from it), so that :mod:`skelgraph.clip` can
write its own files; :mod:`skelgraph.io` re-exports :func:`atomic_write`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    r"""Opens a temporary file beside :obj:`path` and moves it onto :obj:`path` on success.

    When the body of the ``with`` block raises, the temporary file is removed and an existing file
    at :obj:`path` is left untouched.

    Args:
        path (str or os.PathLike): The destination file.
        mode (str, optional): ``"wb"`` for bytes or ``"w"`` for text. (default: :obj:`"wb"`)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
