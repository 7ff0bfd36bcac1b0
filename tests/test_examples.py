"""The README's "Bring your own dataset" section, run as written by its example script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "bring_your_own_dataset.py"


@pytest.mark.slow
def test_bring_your_own_dataset_section_runs(tmp_path):
    work = tmp_path / "byod"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--work-dir", str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = (work / "data/mine/labels.csv").read_text().splitlines()
    assert rows[0] == "path,label,split" and len(rows) == 1 + 72
    assert "clips/wave_v2_0.npz,wave,test" in rows
    for name in ("best.pt", "log.jsonl", "test/metrics.json"):
        assert (work / "work" / name).is_file(), name
    records = [json.loads(line) for line in (work / "work/log.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 4  # the quick run's --max-steps
    report = json.loads((work / "eval-best-test/metrics.json").read_text())
    assert report["num_samples"] == 24 and len(report["early_recognition"]["accuracy"]) == 10
    assert "final: " in run.stdout  # recognize's last line
    assert "cross-view top-1 of the quick run" in run.stdout


def test_the_section_has_the_blocks_the_script_runs():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from bring_your_own_dataset import readme_section
    finally:
        sys.path.remove(str(SCRIPT.parent))
    python, commands = readme_section(ROOT / "README.md")
    assert "write_skeleton_folder(" in python and "parts=" in python and "root=" in python
    assert [c.split()[:2] for c in commands] == [
        ["skelgraph", "train"],
        ["skelgraph", "test"],
        ["skelgraph", "recognize"],
    ]
    assert "--max-steps" in commands[0] and "--limit" in commands[0]
