from __future__ import annotations

import contextlib
import csv
import io
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest
from helpers import synthetic_folder

import skelgraph.train
from skelgraph.cli import main
from skelgraph.models import available_models
from skelgraph.train.config import (
    ParamChoices,
    ParamRange,
    TrainConfig,
    apply_overrides,
    load_config,
    parse_space,
)

#: a tiny InfoGCN++ and two short epochs: a trial takes a few seconds on 2 cores
OVERRIDES = [
    "epochs=2",
    "data.window=12",
    "model.args.channels=16",
    "model.args.depth=1",
    "model.args.head_channels=16",
    "model.args.decoder_channels=16",
    "batch_size=4",
    "data.val_fraction=0.25",
    "precision=fp32",
]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def optuna() -> ModuleType:
    return pytest.importorskip(
        "optuna", reason='skelgraph tune needs Optuna: pip install "skelgraph[tune]"'
    )


def _tune(
    data: Path, work: Path, cache: Path, *extra: str, overrides: Sequence[str] = OVERRIDES
) -> tuple[int, str]:
    args = ["--config", "infogcn2_small", "--data", str(data), "--work-dir", str(work)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["tune", *args, "--cache-dir", str(cache), "--quiet", *extra, *overrides])
    return rc, out.getvalue()


@pytest.fixture(scope="module")
def tuned(optuna, tmp_path_factory) -> dict:
    """Two trials of ``skelgraph tune`` on a generated coco17 folder, then one more in a second
    call on the same work dir."""
    tmp = tmp_path_factory.mktemp("tune")
    data = synthetic_folder(tmp / "data", "coco17", 17)
    work, cache = tmp / "work", tmp / "cache"
    rc, first = _tune(data, work, cache, "--trials", "2")
    assert rc == 0
    csv_first = (work / "trials.csv").read_text()
    rc, second = _tune(data, work, cache, "--trials", "1")
    assert rc == 0
    return {
        "data": data,
        "work": work,
        "cache": cache,
        "first": first,
        "second": second,
        "csv_first": csv_first,
    }


def test_tune_writes_the_study_and_its_reports(tuned, optuna):
    work, first = tuned["work"], tuned["first"]
    for name in ("study.db", "trials.csv", "best.yaml", "optimization_history.png"):
        assert (work / name).is_file(), name
    for name in ("intermediate_values.png", "param_importances.png", "parallel_coordinate.png"):
        assert (work / name).is_file(), name
    rows = list(csv.DictReader(io.StringIO(tuned["csv_first"])))
    assert [r["trial"] for r in rows] == ["0", "1"]
    assert {r["state"] for r in rows} == {"complete"}
    assert {"top1", "optim.lr", "model.args.channels", "data.window"} <= set(rows[0])
    assert "trial 0 " in first and "trial 1 " in first
    assert "| trial" in first and "best: trial" in first
    for n in (0, 1):  # every trial trained in its own folder
        assert (work / f"trials/{n}/log.jsonl").is_file()
        assert (work / f"trials/{n}/config.yaml").is_file()


def test_tune_keeps_only_the_best_trials_checkpoint(tuned, optuna):
    from skelgraph.train.search import STUDY_NAME, best_trial

    work = tuned["work"]
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{work / 'study.db'}")
    best = best_trial(study)
    assert list(work.glob("trials/*/last.pt")) == []
    assert list(work.glob("trials/*/best.pt")) == [work / f"trials/{best.number}/best.pt"]


def test_a_second_call_continues_the_study_with_new_values(tuned, optuna):
    from skelgraph.train.search import STUDY_NAME

    work = tuned["work"]
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{work / 'study.db'}")
    assert [t.number for t in study.trials] == [0, 1, 2]
    assert "trial 2 " in tuned["second"] and "trial 0 " not in tuned["second"]
    values = [t.user_attrs["values"] for t in study.trials]
    assert values[2] != values[0] and values[2] != values[1]  # the sampler was not restarted
    assert len((work / "trials.csv").read_text().splitlines()) == 4


def test_best_yaml_holds_the_best_values_and_trains(tuned, optuna):
    from skelgraph.train.search import STUDY_NAME, best_trial

    work = tuned["work"]
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{work / 'study.db'}")
    best = best_trial(study)
    config = load_config(work / "best.yaml")
    values = best.user_attrs["values"]
    assert config.optim.lr == pytest.approx(values["optim.lr"])
    assert config.model.args["channels"] == values["model.args.channels"]
    assert config.data.window == values["data.window"]
    assert config.tune.space is None and config.epochs == 2  # the rest as it was tuned
    args = ["--config", str(work / "best.yaml"), "--data", str(tuned["data"])]
    args += ["--work-dir", str(work.parent / "retrain"), "--cache-dir", str(tuned["cache"])]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", *args, "--quiet", "--max-steps", "1", "--no-early"]) == 0
    assert (work.parent / "retrain/best.pt").is_file()


def test_trials_hold_out_a_part_where_the_config_validates_on_nothing(tmp_path, optuna):
    """The trials are scored on ``tune.holdout`` of the clips; ``best.yaml`` keeps the
    configuration's ``data.val_fraction`` of 0, so the best values train on every clip."""
    data = synthetic_folder(tmp_path / "data", "coco17", 17)
    work = tmp_path / "work"
    overrides = [*OVERRIDES, "data.val_fraction=0", "tune.holdout=0.3"]
    rc, out = _tune(data, work, tmp_path / "cache", "--trials", "1", overrides=overrides)
    assert rc == 0 and "0.3 of the clips held out" in out
    assert load_config(work / "trials/0/config.yaml").data.val_fraction == 0.3
    assert load_config(work / "best.yaml").data.val_fraction == 0.0


def test_a_study_refuses_other_settings(tuned, tmp_path, capsys, optuna):
    rc, _ = _tune(tuned["data"], tuned["work"], tuned["cache"], "--trials", "1", "optim.lr=0.5")
    assert rc == 1
    err = capsys.readouterr().err
    assert "study.db: the study there was run with other settings" in err
    assert "optim.lr: 0.005 in the study, 0.5 now" in err


def test_trials_zero_only_writes_the_reports(tuned, optuna):
    rc, out = _tune(tuned["data"], tuned["work"], tuned["cache"], "--trials", "0")
    assert rc == 0
    assert "searching" not in out
    assert len([line for line in out.splitlines() if line.startswith("| ")]) == 1 + 3


# ------------------------------------------------------------------------------------------------
# the search space


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            "{optim.lrr: [0.1]}",
            "tune.space: unknown config key 'optim.lrr'; valid keys: model.name",
        ),
        ("{seed: [0, 1]}", "'seed' cannot be searched: it selects the validation clips"),
        ("{tune.trials: [1, 2]}", "'tune.trials': the search cannot tune its own settings"),
        ("{optim.lr: {low: 1e-4, high: 0.1}}", "write 1.0e-4"),
        ("{optim.lr: {low: 0.0, high: 0.1, log: true}}", "a log range needs low > 0"),
        ("{optim.lr: {low: 0.1, high: 0.01}}", "expected low < high"),
        ("{optim.lr: {lo: 0.1, high: 0.2}}", "expected {low, high[, log, step]}"),
        ("{data.window: {low: 8, high: 16.5}}", "data.window is an integer"),
        ("{data.mirror: {low: 0, high: 1}}", "a range needs a numeric key and data.mirror is bool"),
        ("{data.window: [16, big]}", "tune.space.data.window[1]: expected int, got 'big'"),
        ("{optim.lr: []}", "tune.space.optim.lr: expected {low, high[, log, step]} or a non-empty"),
    ],
)
def test_space_errors_name_the_key(space, message):
    with pytest.raises(ValueError) as info:
        apply_overrides(TrainConfig(), [f"tune.space={space}"])
    assert message in str(info.value)


def test_space_is_parsed_into_ranges_and_choices():
    space = parse_space(
        {
            "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "epochs": {"low": 5, "high": 20, "step": 5},
            "model.args.depth": {"low": 1, "high": 4},
            "model.args.dropout": {"low": 0, "high": 0.5},
            "data.window": [16, 32],
            "model.args.features": [["joint"], ["joint", "velocity"]],
        }
    )
    assert space["optim.lr"] == ParamRange(1e-4, 1e-2, log=True)
    assert space["epochs"] == ParamRange(5, 20, step=5, integer=True)
    assert space["model.args.depth"] == ParamRange(1, 4, integer=True)  # free-form, int bounds
    assert space["model.args.dropout"] == ParamRange(0.0, 0.5)
    assert space["data.window"] == ParamChoices((16, 32))
    assert space["model.args.features"].values == (["joint"], ["joint", "velocity"])


def test_search_space_checks_names_against_the_model_and_values(optuna):
    from skelgraph.train.search import search_space

    def config(space: str, *more: str) -> TrainConfig:
        return apply_overrides(TrainConfig(), [*more, f"tune.space={space}"])

    with pytest.raises(ValueError, match=r"model\.args\.widht: model 'infogcn2' takes no argument"):
        search_space(config("{model.args.widht: [1, 2]}"))
    with pytest.raises(ValueError, match="model 'stgcn' takes no argument 'depth'"):
        search_space(config("{model.args.depth: [1, 2]}", "model.name=stgcn"))
    with pytest.raises(ValueError, match=r"data\.preprocess\.centre: not a preprocessing setting"):
        search_space(config("{data.preprocess.centre: [true, false]}"))
    with pytest.raises(ValueError, match=r"data\.window=0: data\.window: expected a positive"):
        search_space(config("{data.window: [0, 16]}"))
    space = search_space(config("{model.args.depth: [1, 2], data.preprocess.causal: [true]}"))
    assert set(space) == {"model.args.depth", "data.preprocess.causal"}


@pytest.mark.parametrize("name", [n for n in available_models() if n != "ensemble"])
def test_default_space_suits_every_model(name, optuna):
    from skelgraph.train.search import default_space, search_space

    config = apply_overrides(TrainConfig(), [f"model.name={name}"])
    space = search_space(config)  # raises for a key the model does not take
    assert set(space) >= {"optim.lr", "optim.weight_decay", "data.window"}
    assert space["optim.lr"] == ParamRange(config.optim.lr / 10, config.optim.lr * 3, log=True)
    assert space["data.window"] == ParamChoices((32, 64, 128))
    assert {"model.args.dropout", "model.args.label_smoothing"} <= set(space)
    widths = {k for k in default_space(config) if k.endswith("channels")}
    # one integer width is searched; a list of per-block widths stays as configured
    assert widths == {
        "infogcn2": {"model.args.channels"},
        "posec3d": {"model.args.base_channels"},
    }.get(name, set())
    no_decay = apply_overrides(config, ["optim.weight_decay=0"])
    assert "optim.weight_decay" not in search_space(no_decay)


def test_suggested_values_cover_ranges_and_structured_choices(optuna):
    from skelgraph.train.config import set_values
    from skelgraph.train.search import suggest

    space = parse_space(
        {
            "optim.lr": {"low": 1e-4, "high": 1e-2, "log": True},
            "epochs": {"low": 5, "high": 20, "step": 5},
            "model.args.features": [["joint"], ["joint", "velocity"]],
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    drawn = [suggest(study.ask(), space) for _ in range(12)]
    assert all(1e-4 <= v["optim.lr"] <= 1e-2 for v in drawn)
    assert {v["epochs"] for v in drawn} <= {5, 10, 15, 20}
    assert {tuple(v["model.args.features"]) for v in drawn} == {
        ("joint",),
        ("joint", "velocity"),
    }
    config = set_values(TrainConfig(), drawn[0])
    assert config.model.args["features"] in (["joint"], ["joint", "velocity"])


# ------------------------------------------------------------------------------------------------
# pruning and the budget


def _study_with_finished_trials(optuna, tmp_path: Path, *more: str):
    from skelgraph.train.search import open_study

    config = apply_overrides(
        TrainConfig(), ["tune.pruner_startup_trials=2", "tune.pruner_warmup_epochs=2", *more]
    )
    study = open_study(config, tmp_path)
    for value in (0.8, 0.7):  # two earlier trials, 0.8 and 0.7 after every epoch
        trial = study.ask()
        for epoch in (1, 2, 3):
            trial.report(value, epoch)
        study.tell(trial, value)
    return study


def test_median_pruner_stops_a_poor_trial_after_the_warmup(optuna, tmp_path):
    from skelgraph.train.search import TrialMonitor

    study = _study_with_finished_trials(optuna, tmp_path)
    poor = TrialMonitor(study.ask(), "top1")
    assert not poor(1, {"top1": 0.1})  # within the warm-up: never pruned
    assert poor(2, {"top1": 0.1}) and poor.stopped == "pruned"
    good = TrialMonitor(study.ask(), "top1")
    assert not good(1, {"top1": 0.9}) and not good(2, {"top1": 0.9}) and good.stopped is None
    last = TrialMonitor(study.ask(), "top1", has_next_epoch=lambda: False)
    assert not last(2, {"top1": 0.1})  # nothing left to stop after the last epoch


def test_no_pruner_never_prunes(optuna, tmp_path):
    from skelgraph.train.search import TrialMonitor

    study = _study_with_finished_trials(optuna, tmp_path, "tune.pruner=none")
    poor = TrialMonitor(study.ask(), "top1")
    assert not any(poor(epoch, {"top1": 0.0}) for epoch in (1, 2, 3))


def test_a_trial_stops_when_its_next_epoch_would_overrun_the_budget(optuna, tmp_path):
    from skelgraph.train.search import TrialMonitor

    study = _study_with_finished_trials(optuna, tmp_path, "tune.pruner=none")
    times = iter([0.0, 30.0, 70.0])  # created at 0, epochs end at 30 and 70
    monitor = TrialMonitor(study.ask(), "top1", deadline=100.0, clock=lambda: next(times))
    assert not monitor(1, {"top1": 0.5})  # 30 + 30 <= 100
    assert monitor(2, {"top1": 0.5}) and monitor.stopped == "budget"  # 70 + 40 > 100


def test_an_unknown_metric_is_named(optuna, tmp_path):
    from skelgraph.train.search import TrialMonitor

    study = _study_with_finished_trials(optuna, tmp_path)
    with pytest.raises(ValueError, match=r"tune\.metric: expected one of .*'top1'.*got 'top_1'"):
        TrialMonitor(study.ask(), "top_1")(1, {"top1": 0.5, "loss": 1.0})


def test_a_killed_trial_is_marked_failed_when_the_study_is_opened_again(optuna, tmp_path):
    from skelgraph.train.search import open_study

    config = TrainConfig()
    open_study(config, tmp_path).ask()  # left running, as by a killed process
    study = open_study(config, tmp_path)
    (trial,) = study.trials
    assert trial.state is optuna.trial.TrialState.FAIL
    assert trial.user_attrs["error"] == "interrupted"


# ------------------------------------------------------------------------------------------------
# the command line


def test_tune_help_lists_the_search_keys(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    out = capsys.readouterr().out
    for key in ("tune.space = null", "tune.metric", "tune.budget_minutes = 60.0", "tune.pruner"):
        assert key in out
    assert "--budget-min" in out and "--trials" in out and "best.yaml" in out


def test_tune_reports_a_bad_space_before_any_trial(tmp_path, capsys, optuna):
    args = ["--config", "infogcn2_small", "--data", str(tmp_path), "--work-dir"]
    rc = main(["tune", *args, str(tmp_path / "w"), "tune.space={model.args.widht: [1]}"])
    assert rc == 1
    assert "model 'infogcn2' takes no argument 'widht'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_tune_without_optuna_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    monkeypatch.delitem(sys.modules, "skelgraph.train.search", raising=False)
    monkeypatch.delattr(skelgraph.train, "search", raising=False)
    args = ["--config", "infogcn2_small", "--data", str(tmp_path), "--work-dir", str(tmp_path)]
    assert main(["tune", *args]) == 1
    assert 'pip install "skelgraph[tune]"' in capsys.readouterr().err


def test_the_library_imports_without_optuna():
    code = (
        "import sys; sys.modules['optuna'] = None; import skelgraph.train as t; "
        "t.load_config('infogcn2_small'); import skelgraph.cli.tune"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert "tune" not in skelgraph.train.__all__  # so `from skelgraph.train import *` works too
