"""``precision: auto``: the measured-faster precision, cached per model, shape and machine."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from helpers import CLASSES, synthetic_folder
from torch import nn

import skelgraph.train.precision as precision
from skelgraph.models import create
from skelgraph.models.base import ModelOutput
from skelgraph.train.config import load_config
from skelgraph.train.distributed import DistContext, autocast_dtype
from skelgraph.train.evaluate import split_predictor
from skelgraph.train.precision import (
    CACHE_FILE,
    calibration_key,
    measure_precision,
    resolve_precision,
)
from skelgraph.train.run import prepare

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (4, 13, 8, 3)
CPU = DistContext()


class Sleeper(nn.Module):
    """A model whose steps take ``slow_s`` longer under bfloat16 autocast (``slow="bf16"``) or
    without it (``slow="fp32"``), counting its forward calls."""

    def __init__(self, slow: str, slow_s: float = 0.02) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 5)
        self.slow, self.slow_s = slow, slow_s
        self.config = {"slow": slow}
        self.calls = 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> ModelOutput:
        self.calls += 1
        in_bf16 = torch.is_autocast_enabled("cpu")
        if in_bf16 == (self.slow == "bf16"):
            time.sleep(self.slow_s)
        return ModelOutput(logits=self.linear(x.mean(1)))

    def loss(self, out: ModelOutput, x, y, mask=None) -> dict[str, torch.Tensor]:
        return {"loss": out.logits.float().square().mean()}


@pytest.fixture
def bf16_candidate(monkeypatch):
    """bfloat16 is a candidate whatever the CPU (the sleeps, not the CPU, make it slow or fast)."""
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)


@pytest.mark.parametrize("slow", ["bf16", "fp32"])
@pytest.mark.parametrize("train", [True, False])
def test_auto_picks_the_measured_faster_precision(bf16_candidate, slow, train):
    result = measure_precision(Sleeper(slow), SHAPE, torch.device("cpu"), train=train)
    faster = "fp32" if slow == "bf16" else "bf16"
    assert result.choice == faster
    assert set(result.step_ms) == {"fp32", "bf16"}
    assert result.step_ms[slow] >= 20.0 > result.step_ms[faster]
    assert result.train is train and result.shape == list(SHAPE)


def test_auto_is_cached_per_model_shape_and_mode(bf16_candidate, tmp_path, monkeypatch):
    model = Sleeper("bf16")
    dtype = resolve_precision("auto", model, SHAPE, CPU, train=True, cache_dir=tmp_path)
    assert dtype is None and model.calls == 0  # a copy was timed, not the model
    entries = json.loads((tmp_path / CACHE_FILE).read_text())
    (entry,) = entries.values()
    assert entry["choice"] == "fp32" and entry["step_ms"]["bf16"] >= 20.0

    timed = []
    measure = precision.measure_precision
    monkeypatch.setattr(
        precision, "measure_precision", lambda *a, **k: timed.append(a) or measure(*a, **k)
    )
    lines = []
    again = resolve_precision(
        "auto", model, SHAPE, CPU, train=True, cache_dir=tmp_path, log=lines.append
    )
    assert again is None and not timed  # from the cache
    assert "cached" in lines[0] and "fp32" in lines[0]
    resolve_precision("auto", model, (8, *SHAPE[1:]), CPU, train=True, cache_dir=tmp_path)
    resolve_precision("auto", model, SHAPE, CPU, train=False, cache_dir=tmp_path)
    assert len(timed) == 2  # another batch shape, inference steps: timed anew
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 3
    cpu = torch.device("cpu")
    keys = {
        calibration_key(model, SHAPE, cpu, train=True),
        calibration_key(Sleeper("fp32"), SHAPE, cpu, train=True),
        calibration_key(model, SHAPE, cpu, train=False),
    }
    assert len(keys) == 3  # model configuration and mode key the entry


def test_unreadable_cache_is_measured_again(bf16_candidate, tmp_path):
    (tmp_path / CACHE_FILE).write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable precision cache"):
        dtype = resolve_precision(
            "auto", Sleeper("fp32"), SHAPE, CPU, train=True, cache_dir=tmp_path
        )
    assert dtype is torch.bfloat16
    assert len(json.loads((tmp_path / CACHE_FILE).read_text())) == 1


def test_explicit_precisions_and_cpu_without_bf16(monkeypatch, tmp_path):
    model = Sleeper("bf16")
    assert resolve_precision("bf16", model, SHAPE, CPU, train=True) is torch.bfloat16
    assert resolve_precision("fp32", model, SHAPE, CPU, train=True) is None
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        resolve_precision("fp16", model, SHAPE, CPU, train=True)
    with pytest.raises(ValueError, match="'auto' is decided by timing"):
        autocast_dtype("auto", torch.device("cpu"))
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    result = measure_precision(model, SHAPE, torch.device("cpu"), train=True)
    assert result.choice == "fp32" and result.step_ms == {} and model.calls == 0
    assert result.describe().startswith("precision auto: fp32 (cpu") and "no native bf16" in (
        result.describe()
    )
    resolved = resolve_precision("auto", model, SHAPE, CPU, train=True, cache_dir=tmp_path)
    assert resolved is None and not (tmp_path / CACHE_FILE).exists()  # nothing timed to cache


def test_the_trainer_and_evaluation_use_the_choice(bf16_candidate, tmp_path, monkeypatch):
    """A real model: the trainer's training and validation steps and the evaluation of a split
    take the cached choice of their own shapes."""

    data = synthetic_folder(tmp_path / "data", "coco17", 17)
    overrides = ["model.args.channels=8", "model.args.depth=1", "data.window=8", "batch_size=4"]
    config = load_config("infogcn2_small", [*overrides, "eval_batch_size=6"])
    model = create("infogcn2", num_classes=len(CLASSES), layout="coco17", **config.model.args)
    device = torch.device("cpu")
    chosen = {
        calibration_key(model, (4, 17, 8, 3), device, train=True): "bf16",
        calibration_key(model, (6, 17, 8, 3), device, train=False): "fp32",
    }
    cache = Path(precision.user_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    record = {"step_ms": {}, "shape": [], "device": "cpu"}
    (cache / CACHE_FILE).write_text(
        json.dumps(
            {
                key: {**record, "choice": choice, "train": choice == "bf16"}
                for key, choice in chosen.items()
            }
        )
    )
    monkeypatch.setattr(
        precision, "measure_precision", lambda *a, **k: pytest.fail("timed instead of cached")
    )
    torch.manual_seed(0)
    trainer, splits = prepare(config, data, tmp_path / "work", progress=False)
    assert trainer.dtype is torch.bfloat16 and trainer.eval_dtype is None
    captured = []
    monkeypatch.setattr(
        "skelgraph.train.evaluate.predict",
        lambda *a, **k: captured.append(k["dtype"]),
    )
    split_predictor(
        trainer.module, data, config, splits.base.classes, split="test", progress=False
    )(1.0)
    assert captured == [None]
