from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import synthetic_folder
from torch import nn

from skelgraph.data import make_loader
from skelgraph.layouts import get_layout
from skelgraph.train.config import (
    TrainConfig,
    apply_overrides,
    available_configs,
    config_to_dict,
    load_config,
    save_config,
)
from skelgraph.train.data import train_transform
from skelgraph.train.evaluate import evaluate
from skelgraph.train.optim import build_optimizer, build_scheduler, lr_factor, parameter_groups
from skelgraph.train.run import prepare

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------------
# config


def test_packaged_configs_load_by_name():
    names = available_configs()
    assert "infogcn2_blog" in names
    for name in names:
        assert isinstance(load_config(name), TrainConfig)


def test_blog_config_matches_the_blog_table():
    cfg = load_config("infogcn2_blog")
    assert cfg.epochs == 55 and cfg.batch_size == 32
    assert cfg.optim.optimizer == "sgd" and cfg.optim.lr == pytest.approx(1e-2)
    assert cfg.optim.weight_decay == pytest.approx(1e-4)
    assert cfg.optim.warmup_epochs == 5 and cfg.optim.lr_steps == [30, 45, 60]
    assert cfg.optim.lr_decay == pytest.approx(0.1) and cfg.optim.grad_clip == pytest.approx(1.0)
    assert cfg.data.p_interval_train == [0.5, 1.0] and cfg.data.p_interval_val == [0.95]
    assert cfg.data.rotation


def test_overrides_are_typed():
    cfg = apply_overrides(
        TrainConfig(),
        [
            "optim.lr=0.05",
            "epochs=3",
            "optim.lr_steps=[2, 4]",
            "optim.grad_clip=null",
            "data.mirror=true",
            "optim.warmup_epochs=1",
            "model.args.channels=32",
            "model.name=stgcn",
            "data.preprocess.confidence_threshold=0.3",
            "data.p_interval_val=0.9",
        ],
    )
    assert cfg.optim.lr == 0.05 and isinstance(cfg.optim.lr, float)
    assert cfg.epochs == 3
    assert cfg.optim.lr_steps == [2, 4]
    assert cfg.optim.grad_clip is None
    assert cfg.data.mirror is True
    assert cfg.optim.warmup_epochs == 1.0 and isinstance(cfg.optim.warmup_epochs, float)
    assert cfg.model.args == {"channels": 32}
    assert cfg.model.name == "stgcn"
    assert cfg.data.preprocess == {"confidence_threshold": 0.3}
    assert cfg.data.p_interval_val == [0.9]  # a number for a list field: a one-element list


def test_unknown_override_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config key 'optim\.lrr'.*optim\.lr,"):
        apply_overrides(TrainConfig(), ["optim.lrr=0.1"])
    with pytest.raises(ValueError, match=r"unknown config key 'epoch'.*epochs"):
        apply_overrides(TrainConfig(), ["epoch=3"])
    with pytest.raises(ValueError, match=r"unknown config key 'optim\.lr\.x'"):
        apply_overrides(TrainConfig(), ["optim.lr.x=3"])


def test_bad_override_values_name_key_and_type():
    with pytest.raises(ValueError, match=r"epochs: expected int, got 'many'"):
        apply_overrides(TrainConfig(), ["epochs=many"])
    with pytest.raises(ValueError, match=r"epochs: expected int, got 2.5"):
        apply_overrides(TrainConfig(), ["epochs=2.5"])
    with pytest.raises(ValueError, match="expected key=value"):
        apply_overrides(TrainConfig(), ["epochs"])
    with pytest.raises(ValueError, match=r"optim\.optimizer: expected one of \['sgd', 'adamw'\]"):
        apply_overrides(TrainConfig(), ["optim.optimizer=adam"])
    with pytest.raises(ValueError, match=r"data.p_interval_val: expected 1 or 2 ratios"):
        apply_overrides(TrainConfig(), ["data.p_interval_val=[0.5, 0.6, 0.7]"])


def test_config_file_round_trip_and_errors(tmp_path):
    cfg = apply_overrides(load_config("infogcn2_blog"), ["epochs=7", "model.args.depth=2"])
    save_config(cfg, tmp_path / "config.yaml")
    assert config_to_dict(load_config(tmp_path / "config.yaml")) == config_to_dict(cfg)

    (tmp_path / "bad.yaml").write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown config key 'optim\.learning_rate'"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match=r"packaged: .*infogcn2_blog"):
        load_config("no_such_config")


def test_config_keys_make_the_augmentation() -> None:
    config = load_config("multiview_3d")
    transform = train_transform(config.data, get_layout("coco17"), in_channels=4)
    names = [type(t).__name__ for t in transform.transforms]
    assert names == ["RandomRotation", "RandomScale", "RandomShear", "RandomMirror"]
    rotation, scale, shear, mirror = transform.transforms
    assert rotation.max_degrees == (30.0, 60.0, 30.0)
    assert scale.scales == (0.8, 1.2) and scale.per_axis and shear.max_shear == 0.2
    assert mirror.p == 0.5
    default = load_config("infogcn2_small").data
    only = train_transform(default, get_layout("penn13"), in_channels=3).transforms
    assert [repr(t) for t in only] == ["RandomRotation(max_degrees=15.0)"]
    with pytest.raises(ValueError, match=r"data.rotation_degrees: .*2D samples rotate about z"):
        train_transform(config.data, get_layout("coco17"), in_channels=3)
    with pytest.raises(ValueError, match=r"data.rotation_degrees: expected one angle or three"):
        load_config("multiview_3d", ["data.rotation_degrees=[10, 20]"])
    with pytest.raises(ValueError, match=r"data.scale_range: expected \[low, high\]"):
        load_config("multiview_3d", ["data.scale_range=[1.2, 0.8]"])


# ------------------------------------------------------------------------------------------------
# optimiser and schedule


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(4, 3)
        self.lin = nn.Linear(3, 3)
        self.norm = nn.LayerNorm(3)


def test_parameter_groups_exempt_norms_biases_embeddings():
    net = Net()
    decay, no_decay = parameter_groups(net, 1e-4, no_decay_norm_bias=True)
    assert [p is net.lin.weight for p in decay["params"]] == [True]
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 4  # embedding, linear bias, norm weight and bias
    (everything,) = parameter_groups(net, 1e-4, no_decay_norm_bias=False)
    assert len(everything["params"]) == 5


def test_optimizers_from_config():
    cfg = TrainConfig()
    opt = build_optimizer(Net(), cfg.optim)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"]
    cfg = apply_overrides(cfg, ["optim.optimizer=adamw", "optim.lr=0.001"])
    opt = build_optimizer(Net(), cfg.optim)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["lr"] == 0.001


def test_warmup_is_linear_per_iteration_then_multistep():
    kw = {"steps_per_epoch": 10, "warmup_epochs": 2, "lr_steps": [3, 5], "lr_decay": 0.1}
    factors = [lr_factor(s, **kw) for s in range(70)]
    assert factors[:20] == pytest.approx([(s + 1) / 20 for s in range(20)])
    assert factors[20:30] == pytest.approx([1.0] * 10)  # epoch 2
    assert factors[30:50] == pytest.approx([0.1] * 20)  # epochs 3, 4
    assert factors[50:] == pytest.approx([0.01] * 20)  # epochs 5, 6
    assert lr_factor(0, **{**kw, "warmup_epochs": 0}) == 1.0


def test_scheduler_steps_the_learning_rate():
    cfg = apply_overrides(
        TrainConfig(), ["optim.lr=0.1", "optim.warmup_epochs=1", "optim.lr_steps=[2]"]
    )
    opt = build_optimizer(Net(), cfg.optim)
    sched = build_scheduler(opt, cfg.optim, steps_per_epoch=4)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1, 0.1, 0.1] + [0.01] * 4)
    state = sched.state_dict()
    restored = build_scheduler(build_optimizer(Net(), cfg.optim), cfg.optim, 4)
    restored.load_state_dict(state)
    assert restored.last_epoch == 12


# ------------------------------------------------------------------------------------------------
# training on Penn Action clips


#: a small InfoGCN++ and short windows: a few seconds per epoch on 2 cores
TINY = [
    "data.window=8",
    "model.args.channels=16",
    "model.args.depth=1",
    "model.args.head_channels=16",
    "model.args.decoder_channels=16",
    "batch_size=8",
    "early_recognition=false",
]


def test_resume_continues_at_the_right_epoch(penn32, tmp_path):
    cache = tmp_path / "cache"
    two = load_config("infogcn2_small", [*TINY, "epochs=2"])
    straight, _ = prepare(two, penn32, tmp_path / "straight", cache_dir=cache, progress=False)
    straight.fit()

    one = apply_overrides(two, ["epochs=1"])
    first, _ = prepare(one, penn32, tmp_path / "resumed", cache_dir=cache, progress=False)
    first.fit()
    resumed, _ = prepare(two, penn32, tmp_path / "resumed", cache_dir=cache, progress=False)
    assert resumed.resume() and resumed.epoch == 1
    resumed.fit()

    assert resumed.epoch == 2
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch == 2 * 3  # 24 clips / 8
    for key, value in straight.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[key], value, rtol=0, atol=0)
    records = [
        json.loads(line) for line in (tmp_path / "resumed/log.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]["train"]) == {"loss", "cls", "pred", "feat", "acc"}
    assert {"top1", "macro_f1", "loss", "feat", "forecast_mse"} <= set(records[0]["val"])
    assert records[0]["epoch_time"] > 0 and records[0]["lr"] > 0
    for name in ("best.pt", "last.pt", "curves.png"):
        assert (tmp_path / "resumed" / name).is_file()
    last = torch.load(tmp_path / "resumed/last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["best_epoch"] in (1, 2)
    assert last["meta"]["inference"]["reduce"] == "mean"


def test_max_steps_cuts_the_epoch_and_survives_resume(penn32, tmp_path):
    cache = tmp_path / "cache"
    config = load_config("infogcn2_small", [*TINY, "epochs=3", "max_steps=4"])  # 3 steps/epoch
    trainer, _ = prepare(config, penn32, tmp_path / "work", cache_dir=cache, progress=False)
    history = trainer.fit()["history"]
    assert [(r["epoch"], r["step"]) for r in history] == [(1, 3), (2, 4)]
    assert trainer.scheduler.last_epoch == 4 and (tmp_path / "work/best.pt").is_file()
    again, _ = prepare(config, penn32, tmp_path / "work", cache_dir=cache, progress=False)
    assert again.fit(resume=True)["history"] == history  # nothing left to do
    assert again.step == 4 and again.epoch == 2


def test_limit_keeps_a_few_clips_of_every_class(penn32, tmp_path):
    config = load_config("infogcn2_small", [*TINY, "limit=8"])
    trainer, data = prepare(config, penn32, tmp_path, cache_dir=tmp_path / "cache", progress=False)
    train_labels = data.base.clip_labels[np.unique(data.base.clip_ids[data.train.indices])]
    assert len(train_labels) == 8 and len(set(train_labels.tolist())) == 8  # one per class
    assert len(data.val_clips) == 8 and len(trainer.train_loader.dataset) == 8


def test_bf16_autocast_step_runs_on_cpu(penn32, tmp_path):
    config = load_config("infogcn2_small", [*TINY, "epochs=1", "precision=bf16"])
    trainer, _ = prepare(config, penn32, tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert trainer.dtype is torch.bfloat16
    stats = trainer.train_epoch()
    assert all(math.isfinite(v) for v in stats.values())


def test_overfits_32_penn_action_clips(penn32, tmp_path):
    config = load_config(
        "infogcn2_small",
        [
            "epochs=20",
            "data.window=16",
            "data.val_fraction=0",
            "data.rotation=false",
            "data.p_interval_train=[1.0]",
            "data.p_interval_val=[1.0]",
            "optim.weight_decay=0",
            "optim.lr_steps=[14]",
        ],
    )
    trainer, data = prepare(config, penn32, tmp_path, cache_dir=tmp_path / "cache")
    history = trainer.fit()["history"]
    losses = [r["train"]["loss"] for r in history]
    assert losses[-1] < 0.5 * losses[0]
    metrics = evaluate(trainer.module, make_loader(data.base, 16, shuffle=False))
    assert metrics["num_samples"] == 32
    assert metrics["top1"] > 0.9


def test_on_epoch_sees_every_epoch_and_can_end_training(tmp_path):
    data = synthetic_folder(tmp_path / "data", "coco17", 17)
    overrides = ["epochs=3", "batch_size=4", "data.val_fraction=0.25", "precision=fp32"]
    config = load_config("infogcn2_small", [*TINY, *overrides])
    trainer, _ = prepare(config, data, tmp_path / "work", cache_dir=tmp_path, progress=False)
    seen = []

    def on_epoch(epoch, val_stats):
        seen.append((epoch, val_stats["top1"]))
        assert (tmp_path / "work/last.pt").is_file()  # the epoch is saved before the hook
        return epoch == 2

    fit = trainer.fit(on_epoch=on_epoch)
    assert fit["stopped_early"] and trainer.epoch == 2
    assert seen == [(r["epoch"], r["val"]["top1"]) for r in fit["history"]]
    assert [epoch for epoch, _ in seen] == [1, 2]
    fit = trainer.fit(on_epoch=lambda epoch, val_stats: None)  # goes on to the last epoch
    assert not fit["stopped_early"] and trainer.epoch == 3
