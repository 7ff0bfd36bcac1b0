from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import PENN13_POSE, synthetic_folder

from skelgraph.cli import main
from skelgraph.data import make_loader
from skelgraph.layouts import get_layout
from skelgraph.models import PoseC3D, create
from skelgraph.models.checkpoint import load_checkpoint, make_meta, save_checkpoint
from skelgraph.models.ensemble import mirrored
from skelgraph.nn.resnet3d import Bottleneck3d, SlowOnly3d
from skelgraph.online import OnlineRecognizer
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import load_config
from skelgraph.train.evaluate import evaluate
from skelgraph.train.run import prepare

pytestmark = pytest.mark.usefixtures("one_thread")

PENN = get_layout("penn13")
#: a PoseC3D small enough for a unit test: two stages, 8 frames at 16 × 16
TINY = {
    "resolution": 16,
    "frames": 8,
    "base_channels": 4,
    "stage_blocks": (1, 1),
    "inflate": (False, True),
    "spatial_strides": (2, 2),
    "temporal_strides": (1, 2),
}
#: the same as overrides of ``posec3d_lite``, and a quick one-epoch run
TINY_OVERRIDES = [
    "model.args.resolution=16",
    "model.args.frames=8",
    "model.args.base_channels=4",
    "model.args.stage_blocks=[1, 1]",
    "model.args.inflate=[false, true]",
    "model.args.spatial_strides=[2, 2]",
    "model.args.temporal_strides=[1, 2]",
    "data.window=16",
    "batch_size=4",
    "eval_batch_size=8",
    "epochs=1",
    "precision=fp32",
    "early_recognition=false",
]


def joints(batch: int = 2, frames: int = 20, seed: int = 0) -> torch.Tensor:
    """``penn13`` people moving about, :math:`(B, 13, T, 3)`, confidences in (0.3, 1]."""
    generator = torch.Generator().manual_seed(seed)
    pose = torch.from_numpy(PENN13_POSE) / 60.0
    t = torch.linspace(0, 1, frames)[None, None, :, None]
    xy = pose[None, :, None] + torch.randn(batch, 13, frames, 2, generator=generator) * 0.05
    xy = xy + t * torch.randn(batch, 1, 1, 2, generator=generator)
    confidence = 0.3 + 0.7 * torch.rand(batch, 13, frames, 1, generator=generator)
    return torch.cat([xy, confidence], dim=-1)


def tiny(**kwargs) -> PoseC3D:
    torch.manual_seed(0)
    return create("posec3d", num_classes=5, layout="penn13", **{**TINY, **kwargs})


# --------------------------------------------------------------------------------------------
# the 3D ResNet


def test_bottleneck_shapes_shortcut_and_zero_start():
    block = Bottleneck3d(8, 4, stride=2, temporal_stride=2, inflate=True)
    assert block(torch.randn(2, 8, 7, 9, 9)).shape == (2, 16, 4, 5, 5)
    assert block.conv1.kernel_size == (3, 1, 1) and block.conv2.stride == (2, 2, 2)
    assert isinstance(block.shortcut, torch.nn.Sequential)
    assert block.extra_repr() == "8, 16, stride=[2, 2, 2], inflate=True"
    same = Bottleneck3d(16, 4)
    assert isinstance(same.shortcut, torch.nn.Identity) and same.conv1.kernel_size == (1, 1, 1)
    x = torch.rand(2, 16, 3, 5, 5)
    torch.testing.assert_close(same(x), x)  # the last batch norm starts at zero
    with pytest.raises(ValueError, match=r"x: expected shape \[B, 16, T, H, W\]"):
        same(torch.rand(2, 8, 3, 5, 5))
    with pytest.raises(ValueError, match="stride: expected a positive integer"):
        Bottleneck3d(8, 4, stride=0)


def test_slowonly_defaults_are_the_published_backbone():
    backbone = SlowOnly3d(17)
    assert backbone.stem[0].kernel_size == (1, 7, 7) and backbone.stem[0].stride == (1, 1, 1)
    assert [len(stage) for stage in backbone.stages] == [4, 6, 3]
    assert [stage[0].conv1.kernel_size[0] for stage in backbone.stages] == [1, 3, 3]
    assert [stage[0].stride for stage in backbone.stages] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert backbone.out_channels == 512
    parameters = sum(p.numel() for p in backbone.parameters())
    assert 1.9e6 < parameters < 2.1e6  # PoseC3D's SlowOnly-R50 for heatmaps: 2.0 M
    with torch.device("meta"):
        out = SlowOnly3d(17)(torch.empty(2, 17, 48, 56, 56))
    assert out.shape == (2, 512, 24, 7, 7)


def test_early_stages_convolve_every_frame_on_its_own():
    torch.manual_seed(0)
    flat = SlowOnly3d(3, 4, (1, 1), (False, False), (1, 2), (1, 1)).eval()
    inflated = SlowOnly3d(3, 4, (1, 1), (False, True), (1, 2), (1, 1)).eval()
    for block in [*flat.stages[1], *inflated.stages[1]]:
        torch.nn.init.ones_(block.bn3.weight)  # not the identity it starts as
    x = torch.randn(1, 3, 6, 8, 8)
    changed = x.clone()
    changed[:, :, 3] += 1.0
    moved = (flat(changed) - flat(x)).abs().amax(dim=(0, 1, 3, 4))
    assert moved[3] > 0 and moved[[0, 1, 2, 4, 5]].max() == 0
    moved = (inflated(changed) - inflated(x)).abs().amax(dim=(0, 1, 3, 4))
    assert moved[[2, 3, 4]].min() > 0 and moved[[0, 1, 5]].max() == 0


def test_slowonly_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"inflate: expected one value per stage \(3"):
        SlowOnly3d(13, inflate=(False, True))
    with pytest.raises(ValueError, match="stage_blocks: expected at least one stage"):
        SlowOnly3d(13, stage_blocks=())
    with pytest.raises(ValueError, match="spatial_strides: expected positive integers"):
        SlowOnly3d(13, spatial_strides=(2, 0, 2))


# --------------------------------------------------------------------------------------------
# the model


@pytest.mark.parametrize(("input", "channels"), [("keypoint", 13), ("limb", 14), ("both", 27)])
def test_forward_loss_and_backward(input, channels):
    model = tiny(input=input)
    assert model.heatmaps.out_channels == channels == model.backbone.in_channels
    x, y = joints(), torch.tensor([1, 3])
    out = model(x)
    assert out.logits.shape == (2, 1, 5) and out.video_logits().shape == (2, 5)
    assert model.volumes(x).shape == (2, channels, 8, 16, 16)
    losses = model.loss(out, x, y)
    assert set(losses) == {"loss", "cls"}
    losses["loss"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name


def test_config_rebuilds_the_same_model():
    model = tiny(input="both", sigma=1.0, padding=0.1, crop_area=None).eval()
    rebuilt = create("posec3d", **model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = joints()
    torch.testing.assert_close(rebuilt(x).logits, model(x).logits)
    assert model.config["crop_area"] is None and model.config["stage_blocks"] == [1, 1]


def test_evaluation_is_deterministic_and_training_samples_at_random():
    model = tiny(dropout=0.0)
    x = joints(frames=40)
    model.eval()
    torch.testing.assert_close(model.volumes(x), model.volumes(x))
    model.train()
    torch.manual_seed(0)
    first = model.volumes(x)
    torch.manual_seed(0)
    torch.testing.assert_close(model.volumes(x), first)
    assert (model.volumes(x) - first).abs().max() > 0.1


def test_padded_frames_are_never_drawn():
    model = tiny().eval()
    x = joints(batch=2, frames=24)
    padded = torch.cat([x, torch.randn(2, 13, 10, 3) * 50], dim=2)
    mask = torch.zeros(2, 34, dtype=torch.bool)
    mask[:, :24] = True
    torch.testing.assert_close(model(padded, mask).logits, model(x).logits)


def test_mirrored_joints_draw_the_flipped_volume():
    model = tiny(input="both").eval()
    x = joints()
    mirror = x[:, torch.as_tensor(PENN.flip_permutation())].clone()
    mirror[..., 0] = -mirror[..., 0]
    torch.testing.assert_close(
        model.volumes(mirror), model.heatmaps.flip(model.volumes(x)), atol=1e-5, rtol=1e-4
    )
    tta = mirrored(model)  # mirror test-time augmentation: an ensemble of the model and its mirror
    assert tta(x).logits.shape == (2, 1, 5)


def test_volumes_are_drawn_in_float32_under_autocast():
    model = tiny().eval()
    x = joints()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        volume = model.volumes(x)
        logits = model(x).logits
    assert volume.dtype == torch.float32 and logits.dtype == torch.bfloat16
    torch.testing.assert_close(volume, model.volumes(x))


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    model = tiny(input="limb")
    model(joints()).logits.sum().backward()  # batch statistics move
    meta = make_meta(
        model="posec3d",
        model_args=model.config,
        classes=["a", "b", "c", "d", "e"],
        layout="penn13",
        in_channels=3,
        window=20,
        preprocess=PreprocessConfig().to_dict(),
    )
    path = tmp_path / "posec3d.pt"
    save_checkpoint(path, model, meta)
    raw = torch.load(path, weights_only=True)
    assert raw["meta"]["model"] == "posec3d" and raw["meta"]["model_args"]["input"] == "limb"
    loaded, _ = load_checkpoint(path)
    model.eval()
    x = joints()
    torch.testing.assert_close(loaded(x).logits, model(x).logits)


def test_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="in_channels: expected at least 3"):
        create("posec3d", num_classes=2, in_channels=2)
    model = tiny()
    with pytest.raises(ValueError, match=r"PoseC3D: x: expected shape \[B, 13, T, 3\]"):
        model(torch.zeros(2, 17, 8, 3))
    with pytest.raises(ValueError, match=r"input: expected one of"):
        tiny(input="bone")


def test_shipped_configurations():
    paper, lite = load_config("posec3d_paper"), load_config("posec3d_lite")
    assert paper.model.args["frames"] == 48 and paper.model.args["resolution"] == 56
    model = create("posec3d", num_classes=60, layout="coco17", **paper.model.args)
    assert 1.9e6 < sum(p.numel() for p in model.parameters()) < 2.1e6
    limb = load_config("posec3d_lite", ["model.args.input=limb"])
    model = create("posec3d", num_classes=15, layout="penn13", **limb.model.args)
    assert model.heatmaps.out_channels == 14 and model.heatmaps.size == (48, 48)
    assert lite.data.window > lite.model.args["frames"]


# --------------------------------------------------------------------------------------------
# training, the command line and the recogniser


def test_one_epoch_through_the_trainer_the_commands_and_the_recogniser(tmp_path):
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    cache = tmp_path / "cache"
    config = load_config("posec3d_lite", TINY_OVERRIDES)
    trainer, _ = prepare(config, data, tmp_path / "work", cache_dir=cache, progress=False)
    trainer.fit()
    best = tmp_path / "work" / "best.pt"
    assert torch.load(best, weights_only=True)["meta"]["model"] == "posec3d"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["ensemble", str(tmp_path / "tta.pt"), str(best), "--mirror"]) == 0
        for checkpoint in (best, tmp_path / "tta.pt"):
            args = ["--data", str(data), "--cache-dir", str(cache), "--quiet", "--no-early"]
            report = ["--out", str(tmp_path / f"report-{Path(checkpoint).stem}")]
            assert main(["test", "--checkpoint", str(checkpoint), *args, *report]) == 0
    assert "Accuracy" in out.getvalue()
    recognizer = OnlineRecognizer.from_checkpoint(best)
    assert not recognizer.streaming  # clip-level: the last window of frames, every frame
    kp = np.concatenate([PENN13_POSE + 100, np.ones((13, 1), np.float32)], axis=-1)
    for t in range(3):
        prediction = recognizer.update(kp + t)
        assert prediction.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert recognizer.attention_edges(4) == []  # no graphs to overlay
    clip = sorted((data / "clips").glob("*.npz"))[0]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["explain", str(best), str(clip), "--out", str(tmp_path / "explain")]) == 2
    assert "PoseC3D does not report its attention" in err.getvalue()


@pytest.mark.slow
def test_overfits_32_penn_action_clips(penn32, tmp_path):
    """A small PoseC3D learns 32 Penn Action clips of 8 classes (< 60 s on one thread)."""
    config = load_config(
        "posec3d_lite",
        [
            "model.args.resolution=24",
            "model.args.frames=12",
            "model.args.base_channels=8",
            "model.args.stage_blocks=[1, 1, 1]",
            "model.args.stem_stride=1",
            "model.args.crop_area=null",
            "model.args.dropout=0",
            "data.window=24",
            "data.mirror=false",
            "data.val_fraction=0",
            "batch_size=8",
            "epochs=30",
            "optim.lr=0.05",
            "optim.lr_steps=[25]",
            "precision=fp32",
            "early_recognition=false",
        ],
    )
    trainer, splits = prepare(config, penn32, tmp_path / "work", cache_dir=tmp_path, progress=False)
    trainer.fit()
    metrics = evaluate(trainer.module, make_loader(splits.base, 32, shuffle=False), progress=False)
    assert metrics["num_samples"] == 32 and metrics["top1"] > 0.9
