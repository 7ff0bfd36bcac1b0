from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skelgraph.cli import main
from skelgraph.clip import SkeletonClip
from skelgraph.data import write_skeleton_folder

CLASSES = ("wave", "jump", "spin")
#: a small, fast InfoGCN++ for the command line runs
OVERRIDES = [
    "epochs=2",
    "data.window=12",
    "model.args.channels=16",
    "model.args.depth=1",
    "model.args.head_channels=16",
    "model.args.decoder_channels=16",
    "batch_size=4",
    "data.val_fraction=0.25",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_folder(root: Path, layout: str, joints: int, seed: int = 0) -> Path:
    """Three classes of 6 clips (4 train, 2 test), each a class-specific joint motion plus noise."""
    rng = np.random.default_rng(seed)
    items = []
    for k, name in enumerate(CLASSES):
        for i in range(6):
            frames = int(rng.integers(16, 30))
            t = np.linspace(0, 2 * np.pi, frames)[:, None]
            base = rng.normal(size=(1, joints, 2)) * 0.3
            motion = np.stack([np.sin((k + 1) * t), np.cos((k + 1) * t)], -1) * (k + 1) * 0.2
            xy = base + motion + rng.normal(size=(frames, joints, 2)) * 0.02
            kp = np.concatenate([xy, np.ones((frames, joints, 1))], -1).astype(np.float32)
            clip = SkeletonClip(kp, layout, source=f"{name}_{i}")
            items.append((clip, name, "train" if i < 4 else "test"))
    write_skeleton_folder(root, items, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path, str]:
    """``skelgraph train`` on a generated coco17 folder: (data, work dir, cache, stdout)."""
    tmp = tmp_path_factory.mktemp("cli")
    data = synthetic_folder(tmp / "data", "coco17", 17)
    work, cache = tmp / "work", tmp / "cache"
    args = ["--config", "infogcn2_small", "--data", str(data), "--work-dir", str(work)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["train", *args, "--cache-dir", str(cache), *OVERRIDES])
    assert rc == 0
    return data, work, cache, out.getvalue()


def test_train_writes_checkpoints_logs_and_report(trained):
    _, work, _, stdout = trained
    for name in ("config.yaml", "best.pt", "last.pt", "log.jsonl", "curves.png"):
        assert (work / name).is_file(), name
    for name in ("metrics.json", "per_class.csv", "confusion.csv", "confusion.png"):
        assert (work / "test" / name).is_file(), name
    assert (work / "test/early_recognition.png").is_file()
    assert "epochs: 2" in (work / "config.yaml").read_text()
    assert "| Macro F1" in stdout and "| Accuracy" in stdout
    metrics = json.loads((work / "test/metrics.json").read_text())
    assert metrics["num_samples"] == 6  # the 6 test clips
    assert len(metrics["early_recognition"]["accuracy"]) == 10
    assert 0.0 <= metrics["early_auc"] <= 1.0
    assert len(metrics["forecast_mse"]) == 3  # InfoGCN++ forecasts 3 steps
    state = torch.load(work / "best.pt", weights_only=True)
    assert state["meta"]["classes"] == sorted(CLASSES)


def test_test_command_reproduces_the_final_evaluation(trained, tmp_path, capsys):
    data, work, cache, _ = trained
    out = tmp_path / "report"
    rc = main(
        [
            "test",
            "--checkpoint",
            str(work / "best.pt"),
            "--data",
            str(data),
            "--out",
            str(out),
            "--cache-dir",
            str(cache),
        ]
    )
    assert rc == 0
    assert "| Macro Precision" in capsys.readouterr().out
    ours = json.loads((out / "metrics.json").read_text())
    theirs = json.loads((work / "test/metrics.json").read_text())
    assert ours["confusion"] == theirs["confusion"]
    assert ours["top1"] == pytest.approx(theirs["top1"])
    assert (out / "confusion.csv").is_file() and (out / "confusion.png").is_file()


def test_test_refuses_data_of_another_layout(trained, tmp_path, capsys):
    _, work, _, _ = trained
    penn = synthetic_folder(tmp_path / "penn", "penn13", 13)
    args = ["--checkpoint", str(work / "best.pt"), "--data", str(penn), "--no-early"]
    rc = main(["test", *args, "--cache-dir", str(tmp_path / "cache")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "checkpoint expects layout 'coco17' (17 joints, 3 channels)" in err
    assert "layout 'penn13' (13 joints, 3 channels)" in err


def test_train_reports_an_unknown_override(tmp_path, capsys):
    args = [
        "--config",
        "infogcn2_small",
        "--data",
        str(tmp_path),
        "--work-dir",
        str(tmp_path / "w"),
    ]
    rc = main(["train", *args, "optim.lrr=0.1"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "unknown config key 'optim.lrr'" in err and "optim.lr" in err
    assert not (tmp_path / "w").exists()
