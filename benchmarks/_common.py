"""Shared benchmark utilities: thread pinning, interleaved median timing, peak tensor memory,
machine and allocator description, plain-text tables, atomic JSON results and named checkpoint
arguments."""

from __future__ import annotations

import importlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

K = TypeVar("K", bound=Hashable)

MALLOC_VARIABLES = (
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
    "LD_PRELOAD",
)

MEMORY_METHOD = (
    "peak of live tensor bytes allocated by torch's CPU allocator during the call, above what "
    "was live before it (running sum of the torch.profiler memory events); excludes memory "
    "that existed before (parameters, inputs) and allocator overhead outside torch"
)


def pin_threads(num_threads: int) -> int:
    """Sets torch's intra-op thread count and returns the count in effect."""
    if num_threads < 1:
        raise ValueError(f"num_threads: expected a positive integer, got {num_threads}")
    torch.set_num_threads(num_threads)
    return torch.get_num_threads()


def interleaved_times(
    fns: Mapping[K, Callable[[], Any]],
    *,
    repeat: int,
    warmup: int = 1,
    min_repeat: int = 3,
    budget_s: float = float("inf"),
) -> dict[K, list[float]]:
    """Wall-clock seconds of each call, measured round-robin so that load from other processes
    spreads evenly over all of them (ratios measured in one run stay comparable). The order
    rotates every round, so no function always runs after the same one (allocator state).

    Every function runs :obj:`warmup` untimed calls, then up to :obj:`repeat` timed rounds; a
    function stops being timed once it has :obj:`min_repeat` samples and has used more than
    :obj:`budget_s` seconds in total.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[K, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            fn, taken = fns[name], samples[name]
            if len(taken) >= min_repeat and sum(taken) > budget_s:
                continue
            start = time.perf_counter()
            fn()
            taken.append(time.perf_counter() - start)
    return samples


def median_ms(samples: Sequence[float]) -> float:
    """The median of samples in seconds, in milliseconds."""
    return 1e3 * statistics.median(samples)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median of the ratios of samples taken in the same rounds of
    :func:`interleaved_times`: robust to load that changes between rounds."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def peak_memory(fn: Callable[[], Any]) -> int:
    """Peak bytes of torch tensors allocated while ``fn()`` runs (see :data:`MEMORY_METHOD`)."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # no start/stop lines for every trace
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def malloc_settings() -> dict[str, str]:
    """The glibc malloc tunables of this process (``"unset"`` = glibc's default)."""
    return {name: os.environ.get(name, "unset") for name in MALLOC_VARIABLES}


def machine() -> dict[str, Any]:
    """Platform, CPU, core count, thread count and library versions."""
    import torch_geometric

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": cores,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_geometric": torch_geometric.__version__,
    }


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table (Markdown pipe syntax) of the given columns; floats get 1 decimal."""

    def cell(value: Any) -> str:
        return f"{value:,.1f}" if isinstance(value, float) else str(value)

    cells = [[cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in cells:  # the first column left-aligned, numbers right-aligned
        padded = [
            c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        lines.append("| " + " | ".join(padded) + " |")
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Writes :obj:`data` as indented JSON via a temporary file in the same directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def parse_checkpoints(items: Sequence[str]) -> dict[str, Path]:
    """``NAME=PATH`` (or a bare path, named by its file; PATH may name a packaged checkpoint,
    e.g. ``penn-action-fast``) → ``{name: checkpoint file}``."""
    from skelgraph.models.checkpoint import resolve_checkpoint  # the package only when used

    checkpoints: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).stem, item
        try:
            resolved = resolve_checkpoint(path)
        except FileNotFoundError:
            resolved = None
        if not name or resolved is None:
            raise ValueError(
                f"--checkpoints {item!r}: expected NAME=PATH of a checkpoint file or of a "
                f"packaged checkpoint"
            )
        if name in checkpoints:
            raise ValueError(f"--checkpoints {item!r}: the name {name!r} is given twice")
        checkpoints[name] = resolved
    return checkpoints


ROOT = Path(__file__).resolve().parents[1]


def export_commit(commit: str, dst: str | os.PathLike[str]) -> None:
    """Writes the tree of ``commit`` of this repository into ``dst`` (no ``.git``)."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dst, filter="data")


def import_previous(commit: str, module: str) -> Any:
    """``module`` of ``skelgraph`` as it was at ``commit``, imported beside the current package.

    The commit's tree is exported to a temporary folder and imported with ``skelgraph`` taken out
    of :data:`sys.modules` meanwhile; the current package is then put back, and the previous one
    lives on through the returned module's references (its functions look their names up in
    their own modules). Both versions can then be timed in one process, call by call.
    """
    tree = tempfile.mkdtemp(prefix="skelgraph-previous-")
    export_commit(commit, tree)

    def ours(name: str) -> bool:
        return name == "skelgraph" or name.startswith("skelgraph.")

    current = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    sys.path.insert(0, tree)
    try:
        previous = importlib.import_module(module)
    finally:
        sys.path.remove(tree)
        for name in [name for name in sys.modules if ours(name)]:
            del sys.modules[name]
        sys.modules.update(current)
    return previous
