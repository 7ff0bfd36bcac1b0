"""Small generic helpers shared by every layer: atomic file writes, seeding and device selection.

The lowest layer of the package: it imports nothing from it.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "PathLike",
    "atomic_write",
    "epoch_seed",
    "resolve_device",
    "seed_everything",
    "seed_worker",
]

#: a file system path as the public functions accept it
PathLike = str | os.PathLike[str]


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A seed for one epoch on one rank, independent across ``(seed, epoch, rank)``.

    Reseeding at every epoch start makes a resumed run draw the same augmentation and shuffling as
    an uninterrupted one (exactly so with ``num_workers=0``).
    """
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_worker(worker_id: int) -> None:
    """Seeds NumPy and ``random`` in a DataLoader worker from its torch seed (a
    ``worker_init_fn``)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """The torch device a device setting (``--device``, ``config.device``) names.

    :obj:`None` and ``"auto"`` are ``cuda:<local_rank>`` when CUDA is available, else ``cpu``;
    ``"cuda"`` is ``cuda:<local_rank>``; a bare index ``"N"`` (as ultralytics writes it) is
    ``cuda:N``; any other name is read by :class:`torch.device` (``"cpu"``, ``"cuda:1"``, ...).

    Raises:
        ValueError: When a CUDA device is named but CUDA is not available.
    """
    if name is None or name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    elif name == "cuda":
        name = f"cuda:{local_rank}"
    elif name.isdigit():
        name = f"cuda:{name}"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available")
    return device


@contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
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
