"""Small generic helpers shared by every layer: atomic file writes, seeding, device selection,
the user cache folder and progress reporting.

The lowest layer of the package: it imports nothing from it, and torch only inside the functions
that need it, so that what imports this module alone (the clip, ``skelgraph serve`` before it
listens) starts without torch's second of import time.
"""

from __future__ import annotations

import os
import random
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import torch

__all__ = [
    "LineProgress",
    "PathLike",
    "atomic_write",
    "epoch_seed",
    "progress_bar",
    "resolve_device",
    "seed_everything",
    "seed_worker",
    "user_cache_dir",
]

#: a file system path as the public functions accept it
PathLike = str | os.PathLike[str]


def seed_everything(seed: int) -> None:
    """Seeds Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    import torch

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
    import torch

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
    import torch

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


def user_cache_dir() -> Path:
    """skelgraph's folder in the user's cache: ``$XDG_CACHE_HOME/skelgraph``, else
    ``~/.cache/skelgraph`` (datasets are often read-only or shared, so nothing is cached beside
    them)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "skelgraph"


class LineProgress:
    """Progress as whole lines, for output that is not a terminal (a log file, CI): a tqdm bar
    redraws itself with carriage returns, which a log keeps as one line per redraw.

    A line ``desc: n/total unit (p%), t s, postfix`` is written at most every ``interval``
    seconds, and a last line with the final count when the loop ends if ``leave`` is set or a line
    was written before (a short inner loop stays silent). It has the bar's interface as far as
    skelgraph uses it: iteration, :meth:`update`, :meth:`set_postfix`, :meth:`write`,
    :meth:`close` and ``with``.

    Args:
        iterable: What to iterate over (:obj:`None`: call :meth:`update`).
        desc: What progresses.
        total: The number of steps (default: ``len(iterable)`` when it has one).
        unit: The name of a step.
        leave: Write the last line even when no line was written before.
        interval: Seconds between lines.
        file: Where the lines go (default: standard error, as for tqdm).
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        desc: str | None = None,
        total: int | None = None,
        unit: str = "it",
        leave: bool = True,
        interval: float = 30.0,
        file: TextIO | None = None,
    ) -> None:
        self.iterable = iterable
        self.desc = desc or "progress"
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.unit = unit
        self.leave = leave
        self.interval = interval
        self.file = file
        self.n = 0
        self.postfix = ""
        self._start = self._last = time.monotonic()
        self._shown: int | None = None  # the count of the last line written
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError(f"{self.desc}: LineProgress without an iterable is not iterable")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more steps; writes a line when ``interval`` has passed since the last."""
        self.n += n
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def set_postfix(self, **values: Any) -> None:
        """Values shown at the end of the next line, e.g. ``loss=0.12``."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, line: str) -> None:
        """Writes a message line to standard output, as :meth:`tqdm.write` does."""
        print(line, flush=True)

    def close(self) -> None:
        """Writes the last line (see the class docstring); later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        if (self.leave or self._shown is not None) and self._shown != self.n:
            self._line()

    def _line(self) -> None:
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        percent = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        text = f"{self.desc}: {count} {self.unit}{percent}, {time.monotonic() - self._start:.1f}s"
        if self.postfix:
            text += f", {self.postfix}"
        print(text, file=self.file or sys.stderr, flush=True)
        self._shown = self.n


def _length(iterable: Iterable[Any]) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    desc: str | None = None,
    total: int | None = None,
    unit: str = "it",
    leave: bool = True,
    disable: bool = False,
) -> tqdm | LineProgress:
    """A progress bar that suits where it is shown: a tqdm bar on a terminal (a widget in a
    notebook), plain lines (:class:`LineProgress`) when standard error is a log file or a pipe,
    nothing with ``disable`` (``--quiet``). Arguments as for :class:`tqdm.tqdm`."""
    if disable or _is_terminal(sys.stderr) or "ipykernel" in sys.modules:
        return tqdm(iterable, desc=desc, total=total, unit=unit, leave=leave, disable=disable)
    return LineProgress(iterable, desc=desc, total=total, unit=unit, leave=leave)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
