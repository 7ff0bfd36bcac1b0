"""benchmarks/robustness.py: the perturbations, and a whole run on two small checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CLASSES, synthetic_folder

from skelgraph.models import create
from skelgraph.models.checkpoint import make_meta, save_checkpoint
from skelgraph.preprocess import PreprocessConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def robustness(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import robustness

    return robustness


def test_jitter_and_drop_touch_only_the_real_frames(robustness):
    x = torch.rand(3, 13, 10, 3) + 0.5
    x[0, 2] = 0.0  # a joint never seen, as the preprocessing leaves it
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False
    jittered = robustness.perturb(x, mask, sigma=0.1, generator=torch.Generator().manual_seed(0))
    moved = jittered - x
    assert moved[..., -1].abs().max() == 0 and moved[0, 2].abs().max() == 0
    assert moved[1, :, 6:].abs().max() == 0
    assert 0.09 < float(moved[..., :-1][moved[..., :-1] != 0].std()) < 0.11
    dropped = robustness.perturb(x, mask, drop=0.3, generator=torch.Generator().manual_seed(0))
    gone = dropped[..., -1] == 0
    assert torch.equal(dropped[gone], torch.zeros_like(dropped[gone]))
    assert 0.2 < float(gone[2].float().mean()) < 0.4 and not gone[1, :, 6:].any()
    again = robustness.perturb(x, mask, drop=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, dropped)


def test_parse_checkpoints_names_them(robustness, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    assert robustness.parse_checkpoints([f"A={path}", str(path)]) == {"A": path, "model": path}
    with pytest.raises(ValueError, match="expected NAME=PATH of a checkpoint file"):
        robustness.parse_checkpoints([f"A={tmp_path / 'missing.pt'}"])
    with pytest.raises(ValueError, match="the name 'A' is given twice"):
        robustness.parse_checkpoints([f"A={path}", f"A={path}"])


def checkpoint(path: Path, name: str, **args) -> Path:
    torch.manual_seed(0)
    model = create(name, num_classes=len(CLASSES), layout="penn13", **args)
    meta = make_meta(
        model=name,
        model_args=model.config,
        classes=sorted(CLASSES),
        layout="penn13",
        in_channels=3,
        window=16,
        preprocess=PreprocessConfig().to_dict(),
        inference={"sampling": "clip", "stride": None, "p_interval": [1.0], "reduce": "mean"},
    )
    save_checkpoint(path, model, meta)
    return path


def test_run_writes_the_tables_the_results_and_the_plot(tmp_path):
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    stgcn = checkpoint(tmp_path / "stgcn.pt", "stgcn", channels=[8], strides=[1])
    posec3d = checkpoint(
        tmp_path / "posec3d.pt",
        "posec3d",
        resolution=16,
        frames=8,
        base_channels=4,
        stage_blocks=[1],
        inflate=[True],
        spatial_strides=[2],
        temporal_strides=[1],
    )
    out = tmp_path / "results"
    command = [
        sys.executable,
        str(BENCHMARKS / "robustness.py"),
        "--data",
        str(data),
        "--checkpoints",
        f"ST-GCN={stgcn}",
        f"PoseC3D={posec3d}",
        "--sigmas",
        "0",
        "0.3",
        "--drops",
        "0",
        "0.5",
        "--threads",
        "1",
        "--quiet",
        "--output-dir",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Top-1 % under Gaussian jitter" in done.stdout and "| PoseC3D |" in done.stdout
    record = json.loads((out / "robustness.json").read_text())
    assert [m["name"] for m in record["models"]] == ["ST-GCN", "PoseC3D"]
    for model in record["models"]:
        assert model["clips"] == 6  # the test clips of the folder
        assert model["jitter"]["levels"] == [0.0, 0.3] and model["drop"]["levels"] == [0.0, 0.5]
        assert model["jitter"]["top1"][0] == model["drop"]["top1"][0]  # the clean accuracy
    assert record["models"][1]["model"] == "posec3d"
    assert (out / "robustness.png").stat().st_size > 10_000
