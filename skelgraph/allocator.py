r"""glibc allocator settings that keep the memory of freed tensors for the next ones.

By default glibc serves every allocation above a threshold (128 KiB, raised dynamically up to
32 MiB) with its own ``mmap`` and returns it to the system when it is freed, and it trims the top
of the heap whenever more than 128 KiB is free there. A training step or a batch of inference
frees and allocates the same large tensors again and again (a ``[32 · 64 · 17, 288]`` float
tensor is 40 MB), so every one of them is faulted in page by page on every use. With the settings
below, the default InfoGCN++'s batch-32 training step took 0.59× and 0.76× the time in two runs
on a 2-core machine (``benchmarks/allocator.py``); models whose tensors stay under glibc's
threshold gain nothing.

:func:`keep_freed_memory` sets, through ``mallopt``, what the variables ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_`` would: allocations up to 1 GiB come from the
heap, the top of the heap is trimmed only when more than 1 GiB is free there, and the heap grows
256 MiB at a time. The price is memory: the process keeps its peak heap instead of handing it
back. The command line calls it once at start, except ``skelgraph serve`` (a service would keep
the peak of its largest uploads for good); a variable the user set wins over it, and
``SKELGRAPH_MALLOC=system`` keeps glibc's defaults. Elsewhere than glibc (macOS, Windows, musl)
it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

__all__ = ["SETTINGS", "applied_settings", "keep_freed_memory"]

#: ``mallopt`` parameter numbers of glibc's ``malloc.h`` and the values set, by the name of the
#: environment variable that sets the same parameter.
SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_TRIM_THRESHOLD_": (-1, 1 << 30),  # M_TRIM_THRESHOLD
    "MALLOC_TOP_PAD_": (-2, 1 << 28),  # M_TOP_PAD
    "MALLOC_MMAP_THRESHOLD_": (-3, 1 << 30),  # M_MMAP_THRESHOLD
}
#: Set to ``system`` to keep glibc's defaults.
OPT_OUT = "SKELGRAPH_MALLOC"
_applied: dict[str, int] = {}


def keep_freed_memory() -> dict[str, int]:
    """Applies :data:`SETTINGS` to this process (see the module description).

    Returns:
        dict[str, int]: the settings applied, by variable name; empty when glibc is absent,
        when ``SKELGRAPH_MALLOC=system``, or for the variables the environment already sets.
    """
    if os.environ.get(OPT_OUT, "").lower() == "system":
        return {}
    libc = _glibc()
    if libc is None:
        return {}
    applied: dict[str, int] = {}
    for name, (parameter, value) in SETTINGS.items():
        if name not in os.environ and libc.mallopt(parameter, value) == 1:
            applied[name] = value
    _applied.update(applied)
    return applied


def applied_settings() -> dict[str, int]:
    """What :func:`keep_freed_memory` has applied in this process so far, by variable name."""
    return dict(_applied)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (``gnu_get_libc_version`` exists), else :obj:`None`."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
