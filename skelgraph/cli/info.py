"""``skelgraph info``: library versions, compute capabilities and the registered layouts."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from pathlib import Path

import torch

from skelgraph.allocator import applied_settings
from skelgraph.layouts import get_layout, list_layouts

#: distributions whose versions are reported, in this order
PACKAGES = ("skelgraph", "torch", "torch_geometric", "torchdiffeq", "numpy")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show versions, CPU/CUDA capabilities and the registered layouts",
        description="Show library versions, CPU/CUDA/bfloat16 support and the registered layouts.",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # imported here so that `skelgraph --help` does not load the training stack
    from skelgraph.train.distributed import cpu_supports_bf16

    print(f"python           {platform.python_version()} ({sys.executable})")
    for name in PACKAGES:
        print(f"{name:<16} {_version(name)}")
    print()
    print(
        f"CPU              {_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    )
    print(f"CPU capability   {torch.backends.cpu.get_cpu_capability()}")
    print(f"CPU native bf16  {_yes_no(cpu_supports_bf16())}")
    kept = applied_settings()
    allocator = (
        f"keeps freed memory ({_settings(kept)})" if kept else "glibc's or the system's defaults"
    )
    print(f"allocator        {allocator}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            print(f"CUDA device {i:<4} {torch.cuda.get_device_name(i)}")
        print(f"CUDA bf16        {_yes_no(torch.cuda.is_bf16_supported())}")
    else:
        print("CUDA             not available")
    print()
    print(f"{'layout':<16} {'joints':>6} {'bones':>6}")
    for name in list_layouts():
        layout = get_layout(name)
        print(f"{name:<16} {layout.num_joints:>6} {layout.num_bones:>6}")
    return 0


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution.replace("_", "-"))
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _settings(settings: dict[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in settings.items())


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"
