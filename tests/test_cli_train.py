from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLASSES, synthetic_folder

from skelgraph.cli import main
from skelgraph.train.config import TrainConfig

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


def test_train_help_lists_every_config_key_with_its_default(capsys):
    from skelgraph.train.config import _valid_keys

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for key in _valid_keys(TrainConfig):
        assert f"\n{key} = " in text, key
    assert "data.rotation_degrees = [15.0]: Rotation range in degrees" in text
    assert "max_steps = null" in text and "--max-steps N" in text and "--no-early" in text
    assert "early-recognition curve" in text


def test_quick_run_finishes_in_seconds(tmp_path, capsys):
    """A packaged config (10 epochs over 48 training clips) cut to 2 steps on 6 clips per split:
    one epoch of 3 batches stopped after 2, validation and the final evaluation of 6 clips."""
    data = synthetic_folder(tmp_path / "data", "coco17", 17, per_class=30)
    work = tmp_path / "work"
    args = ["--config", "infogcn2_small", "--data", str(data), "--work-dir", str(work)]
    start = time.perf_counter()
    quick = ["--max-steps", "2", "--limit", "6", "--quiet", "batch_size=2"]
    assert main(["train", *args, *quick]) == 0
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"quick run took {elapsed:.0f} s"
    (record,) = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert record["epoch"] == 1 and record["step"] == 2
    metrics = json.loads((work / "test/metrics.json").read_text())
    assert metrics["num_samples"] == 6 and len(metrics["early_recognition"]["accuracy"]) == 10
    assert sum(map(sum, metrics["confusion"])) == 6
    assert [sum(row) for row in metrics["confusion"]] == [2, 2, 2]  # in turn from every class
    captured = capsys.readouterr()
    assert captured.err == ""  # --quiet: no progress
    assert "| Accuracy" in captured.out and "epoch 1:" not in captured.out


def test_early_curve_reads_and_preprocesses_each_clip_once(trained, tmp_path, monkeypatch):
    import skelgraph.data.dataset as dataset_module
    from skelgraph.data import SkeletonFolder

    data, work, _, _ = trained
    calls = {"preprocess": 0, "read": 0}
    preprocess, read = dataset_module.preprocess, SkeletonFolder._read

    def counted_preprocess(*args, **kwargs):
        calls["preprocess"] += 1
        return preprocess(*args, **kwargs)

    def counted_read(self, index):
        calls["read"] += 1
        return read(self, index)

    monkeypatch.setattr(dataset_module, "preprocess", counted_preprocess)
    monkeypatch.setattr(SkeletonFolder, "_read", counted_read)
    out = tmp_path / "report"
    argv = ["--checkpoint", str(work / "best.pt"), "--data", str(data), "--out", str(out)]
    assert main(["test", *argv, "--cache-dir", str(tmp_path / "fresh"), "--quiet"]) == 0
    clips = len((data / "labels.csv").read_text().splitlines()) - 1
    assert calls == {"preprocess": clips, "read": clips}  # once each, for 10 fractions
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["early_recognition"]["accuracy"]) == 10
    assert metrics["early_recognition"]["fractions"][-1] == 1.0


def test_test_report_defaults_to_the_current_folder_and_limit(trained, tmp_path, monkeypatch):
    data, work, cache, _ = trained
    monkeypatch.chdir(tmp_path)
    argv = ["--checkpoint", str(work / "best.pt"), "--data", str(data), "--no-early"]
    assert main(["test", *argv, "--cache-dir", str(cache), "--limit", "3", "--quiet"]) == 0
    metrics = json.loads((tmp_path / "eval-best-test" / "metrics.json").read_text())
    assert metrics["num_samples"] == 3
    assert not list(work.glob("eval-*"))  # nothing beside the checkpoint


def test_progress_off_a_terminal_is_plain_lines(trained, tmp_path, capsys):
    data, work, _, _ = trained
    argv = ["--checkpoint", str(work / "best.pt"), "--data", str(data), "--out", str(tmp_path)]
    assert main(["test", *argv, "--cache-dir", str(tmp_path / "cache"), "--no-early"]) == 0
    err = capsys.readouterr().err  # not a terminal under pytest
    assert "\r" not in err
    assert "SkeletonFolder: preprocessing 18 clips: 18/18 clip (100%)" in err


def test_cross_validation_trains_every_fold_and_summarises(tmp_path, capsys):
    """``--cv 2`` on clips of two subjects: one subject per fold, ``fold<i>`` work dirs with the
    held-out fold's report (never the test split), ``cv.json`` with mean and std; ``--resume``
    continues every fold."""
    data = synthetic_folder(tmp_path / "data", "coco17", 17, per_class=6, groups=2)
    work = tmp_path / "work"
    args = ["--config", "infogcn2_small", "--data", str(data), "--work-dir", str(work)]
    args += ["--cache-dir", str(tmp_path / "cache"), "--cv", "2", "--no-early", "--quiet"]
    assert main(["train", *args, "--max-steps", "1", *OVERRIDES]) == 0
    out = capsys.readouterr().out
    assert "2-fold cross-validation (grouped)" in out and "mean ± std" in out
    cv = json.loads((work / "cv.json").read_text())
    assert cv["k"] == 2 and cv["grouped"] is True and cv["streams"] is None
    assert [f["work_dir"] for f in cv["folds"]] == ["fold0", "fold1"]
    assert sorted(g for f in cv["folds"] for g in f["val_groups"]) == ["subject0", "subject1"]
    counts = [f["metrics"]["num_samples"] for f in cv["folds"]]
    assert sum(counts) == 12  # the 12 training clips, each validated once; the test split unused
    top1 = [f["metrics"]["top1"] for f in cv["folds"]]
    assert cv["mean"]["top1"] == pytest.approx(np.mean(top1))
    assert cv["std"]["top1"] == pytest.approx(np.std(top1, ddof=1))
    for i in range(2):
        fold = work / f"fold{i}"
        assert (fold / "best.pt").is_file() and (fold / "val/metrics.json").is_file()
        assert not (fold / "test").exists()
        assert "folds: 2" in (fold / "config.yaml").read_text()
        assert f"fold: {i}" in (fold / "config.yaml").read_text()
    assert main(["train", *args, "--max-steps", "2", "--resume", *OVERRIDES]) == 0
    for i in range(2):
        log = (work / f"fold{i}/log.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in log] == [1, 2]  # continued, not restarted
