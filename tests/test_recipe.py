"""The recipe derived from the data (``--config auto``): its measurements, its rules and how it
merges under a configuration file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import PENN13_POSE, synthetic_folder

from skelgraph.clip import SkeletonClip
from skelgraph.data import SkeletonFolder, write_skeleton_folder
from skelgraph.train.recipe import (
    HOLDOUT,
    SIZE_TIERS,
    SMALL_DATA,
    TARGET_STEPS,
    WINDOW_PERCENTILE,
    DataStats,
    dataset_stats,
    derive_recipe,
    load_training_config,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _stats(**changes: object) -> DataStats:
    base = DataStats(
        num_clips=1000,
        num_classes=10,
        dims=2,
        num_joints=13,
        has_pairs=True,
        length_percentiles={10: 30.0, 20: 37.0, 50: 60.0, 90: 120.0},
        yaw_spread=0.0,
        tilt_spread=12.0,
        width_spread=0.2,
        bone_spread=0.15,
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("length", [9.0, 17.0, 31.0, 37.0, 40.0, 63.5, 200.0])
def test_window_covers_the_percentile_of_clip_lengths(length: float) -> None:
    percentiles = {10: length / 2, 20: length, 50: length * 2, 90: length * 3}
    window = derive_recipe(_stats(length_percentiles=percentiles)).values["data"]["window"]
    assert window % 8 == 0 and 16 <= window <= 64
    assert window >= min(length, 64)  # covers the percentile unless it exceeds the largest window
    assert window < max(length, 16) + 8  # and is the smallest multiple of 8 that does
    assert WINDOW_PERCENTILE == 20


def test_3d_data_gets_3d_rotations_and_2d_in_plane_rotation_with_shear() -> None:
    values = derive_recipe(_stats(dims=3, yaw_spread=40.0, tilt_spread=8.0)).values["data"]
    x, y, z = values["rotation_degrees"]
    assert y == 55.0 and x == z == 20.0  # spread + margin, rounded up to 5°
    assert values["shear"] is False and values["scale_per_axis"] is True
    flat = derive_recipe(_stats(dims=2, tilt_spread=8.0, width_spread=0.25)).values["data"]
    assert flat["rotation_degrees"] == [20.0] and flat["shear"] is True
    assert flat["shear_max"] == 0.25


def test_rotation_and_scale_ranges_follow_the_spreads_within_their_bounds() -> None:
    narrow = derive_recipe(_stats(dims=3, yaw_spread=0.0, tilt_spread=0.0, bone_spread=0.0))
    wide = derive_recipe(_stats(dims=3, yaw_spread=170.0, tilt_spread=90.0, bone_spread=0.9))
    assert narrow.values["data"]["rotation_degrees"] == [10.0, 15.0, 10.0]
    assert wide.values["data"]["rotation_degrees"] == [30.0, 90.0, 30.0]
    assert narrow.values["data"]["scale_range"] == [0.9, 1.1]
    assert wide.values["data"]["scale_range"] == [0.75, 1.25]
    assert derive_recipe(_stats(has_pairs=False)).values["data"]["mirror"] is False


def test_small_data_gets_a_smaller_more_regularised_model_and_more_epochs() -> None:
    small = derive_recipe(_stats(num_clips=200))
    large = derive_recipe(_stats(num_clips=30000))
    assert (
        small.values["model"]["args"]["channels"] < 32 < large.values["model"]["args"]["channels"]
    )
    assert small.values["model"]["args"]["depth"] < large.values["model"]["args"]["depth"]
    assert small.values["model"]["args"]["dropout"] > 0.0
    assert small.values["optim"]["weight_decay"] > large.values["optim"]["weight_decay"]
    assert small.values["epochs"] > large.values["epochs"]
    assert [t[0] for t in SIZE_TIERS] == sorted(t[0] for t in SIZE_TIERS)
    for recipe in (small, large):  # every value has its reason, every step is before the end
        epochs = recipe.values["epochs"]
        assert all(0 < s < epochs for s in recipe.values["optim"]["lr_steps"])
        assert set(recipe.reasons) >= {"data.window", "model.args.channels", "epochs"}


def test_small_data_trains_on_every_clip_and_larger_data_holds_out_a_part() -> None:
    small = derive_recipe(_stats(num_clips=SMALL_DATA - 1, has_groups=True))
    large = derive_recipe(_stats(num_clips=SMALL_DATA, has_groups=True))
    assert small.values["data"]["val_fraction"] == 0.0
    assert large.values["data"]["val_fraction"] == HOLDOUT
    assert "whole groups" in large.reasons["data.val_fraction"]
    # the schedule counts the steps of the clips that train: about TARGET_STEPS in both
    for recipe, training in ((small, SMALL_DATA - 1), (large, (1 - HOLDOUT) * SMALL_DATA)):
        steps = recipe.values["epochs"] * math.ceil(training / recipe.values["batch_size"])
        assert TARGET_STEPS <= steps < TARGET_STEPS + math.ceil(training / 16)


def test_model_arguments_the_model_does_not_take_are_left_out() -> None:
    recipe = derive_recipe(_stats(), model="stgcn")
    assert "decoder_channels" not in recipe.values["model"]["args"]
    assert recipe.values["model"]["name"] == "stgcn"


@pytest.mark.parametrize("model", ["infogcn", "stgcn", "agcn2s", "symgnn"])
def test_a_per_block_channel_plan_keeps_its_depth_at_the_tier_width(model: str) -> None:
    from skelgraph.models import create

    args = derive_recipe(_stats(num_clips=200), model=model).values["model"]["args"]
    plan = args["channels"]
    assert plan[0] == SIZE_TIERS[0][1] and plan[-1] == 4 * SIZE_TIERS[0][1]
    assert "depth" not in args
    create(model, num_classes=5, layout="penn13", **args)  # the model takes what the recipe sets


def _rotated_folder(root: Path, degrees: np.ndarray) -> Path:
    """penn13 people standing in 3D (z = 0), each turned about the vertical axis by an angle."""
    items = []
    pose = np.concatenate([PENN13_POSE, np.zeros((13, 1))], 1) / 140.0
    for i, angle in enumerate(np.radians(degrees)):
        c, s = np.cos(angle), np.sin(angle)
        turn = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        frames = 20 + i % 7
        xyz = np.repeat((pose @ turn.T)[None], frames, 0)
        kp = np.concatenate([xyz, np.ones((frames, 13, 1))], -1).astype(np.float32)
        items.append((SkeletonClip(kp, "penn13", source=f"c{i}"), f"k{i % 2}", "train"))
    write_skeleton_folder(root, items, progress=False)
    return root


def test_dataset_stats_measure_the_facing_spread_and_the_clip_lengths(tmp_path: Path) -> None:
    angles = np.linspace(-30.0, 30.0, 41)
    dataset = SkeletonFolder(_rotated_folder(tmp_path, angles), progress=False)
    stats = dataset_stats(dataset)
    expected = np.percentile(np.abs(angles), 90)
    assert stats.dims == 3 and stats.num_clips == 41 and stats.num_classes == 2
    assert stats.yaw_spread == pytest.approx(expected, abs=0.5)
    assert stats.tilt_spread == pytest.approx(0.0, abs=1e-3)  # upright, turned about y only
    assert stats.bone_spread == pytest.approx(0.0, abs=1e-3)  # one rigid body
    assert stats.length_percentiles[20] == np.percentile(dataset.clip_lengths, 20)


def test_explicit_keys_and_overrides_win_over_the_recipe(tmp_path: Path) -> None:
    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    auto, recipe = load_training_config("auto", [], data)
    assert recipe is not None and auto.recipe == "auto"
    assert auto.data.window == recipe.values["data"]["window"]
    config_file = tmp_path / "mine.yaml"
    config_file.write_text(yaml.safe_dump({"recipe": "auto", "data": {"window": 24}}))
    config, recipe = load_training_config(config_file, ["epochs=3"], data)
    assert config.data.window == 24 and config.epochs == 3
    assert config.optim.lr_steps == [2, 3]  # the decays follow the explicit epochs
    assert config.data.shear == recipe.values["data"]["shear"]  # the rest from the recipe
    assert set(recipe.overridden) == {"data.window", "epochs"}
    described = recipe.describe(config)
    assert "data.window: 24  # set explicitly" in described
    plain, none = load_training_config("infogcn2_small", ["epochs=2"], data)
    assert none is None and plain.epochs == 2 and plain.recipe is None


def test_a_recipe_value_other_than_auto_is_an_error(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("recipe: magic\n")
    with pytest.raises(ValueError, match="recipe: expected one of \\['auto'\\], got 'magic'"):
        load_training_config(config_file, [], tmp_path)


def test_train_with_the_auto_config_saves_the_recipe_with_reasons(tmp_path: Path) -> None:
    from skelgraph.cli import main

    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    work = tmp_path / "work"
    code = main(
        ["train", "--config", "auto", "--data", str(data), "--work-dir", str(work),
         "--max-steps", "2", "--quiet", "--no-early", "model.args.channels=8"]
    )  # fmt: skip
    assert code == 0
    saved = (work / "recipe.yaml").read_text()
    assert "model.args.channels: 8  # set explicitly" in saved
    assert "data.window: 24  # p20 of the clip lengths is 16.2 frames" in saved
    config = yaml.safe_load((work / "config.yaml").read_text())
    assert config["recipe"] == "auto" and config["model"]["args"]["channels"] == 8


def test_a_search_on_small_data_holds_out_a_part_the_recipe_trains_on(tmp_path: Path) -> None:
    pytest.importorskip("optuna", reason="skelgraph tune needs Optuna")
    from skelgraph.cli.tune import load_tune_config
    from skelgraph.train.search import trial_configuration

    data = synthetic_folder(tmp_path / "data", "penn13", 13)
    cache = tmp_path / "cache"
    config = load_tune_config("auto", [], data, cache)
    assert config.data.val_fraction == 0.0  # the best values train on every clip
    assert trial_configuration(config, data, cache).data.val_fraction == config.tune.holdout
    explicit = load_tune_config("auto", ["data.val_fraction=0.3"], data, cache)
    assert trial_configuration(explicit, data, cache).data.val_fraction == 0.3
