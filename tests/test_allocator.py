"""The allocator settings every command applies: freed tensor memory stays in the process."""

import json
import os
import subprocess
import sys

import pytest

from skelgraph.allocator import SETTINGS, _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="the C library is not glibc")

# Resident memory after a 200 MB tensor was written and freed, with and without the settings.
PROBE = """
import json, sys
import torch
from skelgraph.allocator import keep_freed_memory

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1e6

applied = keep_freed_memory() if sys.argv[1] == "kept" else {}
before = resident_mb()
x = torch.ones(50_000_000)
del x
print(json.dumps({"applied": applied, "kept_mb": resident_mb() - before}))
"""


def _probe(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "SKELGRAPH_MALLOC"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        env=clean | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_freed_memory_stays_in_the_process_only_with_the_settings():
    default, kept = _probe("default"), _probe("kept")
    assert kept["applied"] == {name: value for name, (_, value) in SETTINGS.items()}
    assert default["kept_mb"] < 20  # glibc's own mmap: handed back on free
    assert kept["kept_mb"] > 150  # from the heap, kept for the next tensors


def test_the_users_variables_and_the_opt_out_win():
    partial = _probe("kept", MALLOC_TOP_PAD_="0")
    assert set(partial["applied"]) == set(SETTINGS) - {"MALLOC_TOP_PAD_"}
    opted_out = _probe("kept", SKELGRAPH_MALLOC="system")
    assert opted_out["applied"] == {} and opted_out["kept_mb"] < 20
