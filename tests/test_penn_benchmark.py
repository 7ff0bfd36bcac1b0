from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "penn_action.py"
PENN_ACTION_ROOT = REPO.parent / "shared" / "data" / "penn_action"
CONVERTED = Path("/tmp/penn_npz")


def penn_action_data() -> Path:
    """A converted Penn Action folder when there is one (faster to subset), else the annotations."""
    if (CONVERTED / "labels.csv").is_file():
        return CONVERTED
    if (PENN_ACTION_ROOT / "labels").is_dir():
        return PENN_ACTION_ROOT
    pytest.skip(f"Penn Action not found at {CONVERTED} or {PENN_ACTION_ROOT} (needs ../shared)")


def run_quick(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    """The quick benchmark on Penn Action with ``options``, results in ``tmp_path/results``."""
    command = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--quiet",
        "--data",
        str(penn_action_data()),
        "--work-dir",
        str(tmp_path / "work"),
        "--output-dir",
        str(tmp_path / "results"),
        "--cache-dir",
        str(tmp_path / "cache"),
        *options,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_quick_run_writes_results_and_plots(tmp_path):
    out = tmp_path / "results"
    entry = "infogcn2_small+infogcn2_small:model.args.features=[bone]"
    configs = [entry, "stgcn", "agcn2s", "infogcn2_small+agcn2s"]
    done = run_quick(tmp_path, "--tta", "--jobs", "2", "--threads", "1", "--configs", *configs)
    assert done.returncode == 0, done.stderr[-3000:]

    record = json.loads((out / "penn_action_quick.json").read_text())
    assert record["split"] == "test" and record["quick"] and record["tta"] == "mirror"
    assert {"cpu", "cores", "torch", "devices"} <= set(record["machine"])
    # four distinct members trained two at a time in worker processes, read back here
    assert record["jobs"] == 2 and 0 < record["training_wall_s"] < record["total_time_s"]
    results = record["results"]
    assert [r["entry"] for r in results] == [entry, "stgcn", "agcn2s", "infogcn2_small+agcn2s"]
    ensemble, single, fusion = results[0], results[1], results[3]
    assert ensemble["ensemble"] and ensemble["streams"] == ["joint", "bone"]
    assert not single["ensemble"] and single["tta"] == "mirror"
    assert ensemble["model"].startswith("InfoGCN++") and single["model"] == "ST-GCN"
    assert not ensemble["score_fusion"] and fusion["score_fusion"]
    assert fusion["model"] == "InfoGCN++ + 2s-AGCN score fusion"
    # the causal InfoGCN++ and 2s-AGCN differ in preprocessing: one mirrored model each, reused
    assert fusion["checkpoint"][1] == results[2]["checkpoint"]
    assert fusion["train_time_s"] == pytest.approx(
        ensemble["members"][0]["train_time_s"] + results[2]["train_time_s"]
    )
    for result in results:
        assert result["num_clips"] == 6  # 3 classes x 2 test clips
        for key in ("top1", "mean_class_acc", "macro_f1", "early_auc"):
            assert 0.0 <= result[key] <= 1.0
        curve = result["early_recognition"]
        assert len(curve["fractions"]) == len(curve["accuracy"]) == 10
        assert result["train_time_s"] > 0 and len(result["confusion"]) == 3
        assert all(m["best_epoch"] == 1 for m in result["members"])
        report = json.loads((Path(result["report_dir"]) / "metrics.json").read_text())
        assert report["tta"] == "mirror" and report["top1"] == result["top1"]
    assert report["model"] == "score_fusion" and report["members"] == ["infogcn2", "agcn2s"]
    for name in ("penn_action_quick_confusion.png", "penn_action_quick_early.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert "| InfoGCN++ ×2 ensemble" in done.stdout and "| 2s-AGCN" in done.stdout
    assert "Early recognition" in done.stdout


def test_refit_trains_on_the_whole_training_split(tmp_path):
    done = run_quick(tmp_path, "--refit", "--configs", "infogcn2_small")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "penn_action_quick.json").read_text())
    assert record["refit"] and record["protocol"].startswith("trained on the whole")
    (member,) = record["results"][0]["members"]
    # nothing held out: no validation metric, the last epoch kept, its own folder
    assert member["resolved_config"]["data"]["val_fraction"] == 0
    assert member["val_top1"] is None and member["best_epoch"] == member["epochs"]
    assert Path(member["work_dir"]).parent == tmp_path / "work" / "models-refit"
    assert not (tmp_path / "work" / "models").exists()

    refused = run_quick(tmp_path, "--refit", "--split", "val", "--configs", "infogcn2_small")
    assert refused.returncode == 2 and "--refit" in refused.stderr


def test_weighted_streams_form_one_ensemble(tmp_path):
    """InfoGCN's stream weights in an entry: one weighted ensemble, each model trained once."""
    joint = "penn_action_infogcn:weight=1.5"
    entry = f"{joint}+penn_action_infogcn:model.args.features=[velocity]"
    done = run_quick(tmp_path, "--configs", entry, "penn_action_infogcn")
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "results" / "penn_action_quick.json").read_text())
    weighted, single = record["results"]
    assert weighted["ensemble"] and not weighted["score_fusion"]
    assert weighted["weights"] == [1.5, 1.0] and weighted["streams"] == ["joint", "velocity"]
    assert weighted["model"] == "InfoGCN ×2 ensemble" and single["model"] == "InfoGCN"
    # the weight is no configuration key: the joint model is the unweighted entry's
    assert weighted["members"][0]["checkpoint"] == single["checkpoint"]
    state = torch.load(weighted["checkpoint"], weights_only=True)
    assert state["meta"]["model_args"]["weights"] == [1.5, 1.0]

    refused = run_quick(tmp_path, "--configs", "penn_action_infogcn:weight=0")
    assert refused.returncode == 1 and "weight: expected a positive number" in refused.stderr
