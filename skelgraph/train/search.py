"""Hyperparameter search with Optuna: :func:`tune` (``skelgraph tune``).

A study draws the values of the search space (``tune.space``, :func:`search_space`) with a seeded
TPE sampler; every trial trains the configuration with its values through :func:`prepare` and
:class:`~skelgraph.train.trainer.Trainer` on the training part of the data and is scored on the
validation part (the ``val`` split, or the ``data.val_fraction`` of the training clips held out
with ``config.seed``, the same clips in every trial; where the configuration validates on
nothing, ``tune.holdout`` of them, :func:`trial_configuration`); the test split is never
opened. After every epoch the trial reports its validation metric (:class:`TrialMonitor`, the
trainer's ``on_epoch`` hook), and the median pruner stops a trial that falls behind the earlier
ones.

Files in the work directory ``W``:

* ``study.db`` — the study (SQLite). Running :func:`tune` again on ``W`` continues it (as many
  trials and as much time again); it refuses a configuration that differs from the study's
  besides the settings of a run (budget, trial count, device, workers, precision, compile).
* ``trials/<n>/`` — trial ``n``'s ``config.yaml``, ``log.jsonl`` and ``curves.png``. Checkpoints
  are deleted as soon as a trial ends, except ``best.pt`` of the best trial so far (removed when a
  better one finishes): the disk holds one model besides the running trial's.
* ``best.yaml`` — the configuration with the best trial's values (the ``tune`` section and
  ``data.val_fraction`` as they were, not the trials' holdout): ``skelgraph train --config
  W/best.yaml`` trains it as configured, on every training clip where ``data.val_fraction`` is 0.
* ``trials.csv`` — one row per trial: state, metric, epochs, duration, values, why it stopped.
* ``optimization_history.png``, ``intermediate_values.png`` (the metric per epoch of every
  trial) and, with two complete trials or more, ``param_importances.png`` (PED-ANOVA) and
  ``parallel_coordinate.png``.

Budget: no trial starts after ``tune.budget_minutes``, and a trial whose next epoch would end
after it (judged by its latest epoch's duration) stops before that epoch and counts as pruned. A
trial that fails (a combination the model refuses, a diverging loss, out of memory) is recorded
with its error and the search goes on; one interrupted (Ctrl-C, a killed process) counts as
failed and is not resumed.

Needs the optional extra ``pip install "skelgraph[tune]"`` (Optuna).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import inspect
import json
import math
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

try:
    import optuna
except ImportError as e:
    raise ImportError(
        f'skelgraph tune needs Optuna ({e.name} is missing): pip install "skelgraph[tune]"'
    ) from e
from optuna.trial import FrozenTrial, Trial, TrialState

from skelgraph.models.registry import CREATE_ARGS, model_class
from skelgraph.preprocess import PreprocessConfig
from skelgraph.train.config import (
    ParamChoices,
    ParamRange,
    TrainConfig,
    config_to_dict,
    parse_space,
    save_config,
    set_values,
)
from skelgraph.train.data import split_data
from skelgraph.train.plots import save_figure
from skelgraph.train.run import prepare
from skelgraph.utils import PathLike, atomic_write

__all__ = [
    "STUDY_NAME",
    "TrialMonitor",
    "best_trial",
    "default_space",
    "open_study",
    "search_space",
    "suggest",
    "trial_configuration",
    "trials_table",
    "tune",
    "write_reports",
]

#: The name of the study in ``study.db``.
STUDY_NAME = "skelgraph"

#: Settings of a run, free to change when a study is continued.
_RUN_SETTINGS = (
    "tune.trials",
    "tune.budget_minutes",
    "device",
    "num_workers",
    "eval_batch_size",
    "precision",
    "compile",
    "early_recognition",
)


# ------------------------------------------------------------------------------------------------
# the search space


def _halve_keep_double(value: int) -> list[int]:
    return sorted({max(value // 2, 1), value, 2 * value})


def default_space(config: TrainConfig) -> dict[str, Any]:
    """The search space ``tune.space: null`` stands for, built for ``config``'s model and values.

    ``optim.lr`` from a tenth to 3× its value (a rate far above a working one tends to diverge)
    and ``optim.weight_decay`` a tenth to 10× (unless it is 0), both log-uniform;
    ``model.args.dropout`` 0–0.5 and ``model.args.label_smoothing`` 0–0.2 when the model takes
    them; ``data.window`` halved, kept or doubled; and the model's width, ``model.args.channels``
    or ``base_channels``, halved, kept or doubled when it is one integer (a list of per-block
    widths, as ST-GCN and 2s-AGCN take, stays as configured).

    Returns:
        The space in the form of ``tune.space`` (see :class:`~skelgraph.train.config.TuneConfig`).
    """
    params = inspect.signature(model_class(config.model.name)).parameters
    lr, decay = config.optim.lr, config.optim.weight_decay
    space: dict[str, Any] = {"optim.lr": {"low": lr / 10, "high": lr * 3, "log": True}}
    if decay > 0:
        space["optim.weight_decay"] = {"low": decay / 10, "high": decay * 10, "log": True}
    for name, high in (("dropout", 0.5), ("label_smoothing", 0.2)):
        if name in params:
            space[f"model.args.{name}"] = {"low": 0.0, "high": high}
    space["data.window"] = _halve_keep_double(config.data.window)
    for name in ("channels", "base_channels"):
        if name in params:
            width = config.model.args.get(name, params[name].default)
            if isinstance(width, int) and not isinstance(width, bool):
                space[f"model.args.{name}"] = _halve_keep_double(width)
    return space


def _check_names(config: TrainConfig, space: Mapping[str, ParamRange | ParamChoices]) -> None:
    """Checks the ``model.args.`` keys against the model's arguments (every model ``model.name``
    may take) and the ``data.preprocess.`` keys against :class:`PreprocessConfig`."""
    names = space.get("model.name")
    models = names.values if isinstance(names, ParamChoices) else (config.model.name,)
    preprocess = {f.name for f in dataclasses.fields(PreprocessConfig)}
    for key in space:
        if key.startswith("model.args."):
            arg = key.removeprefix("model.args.").split(".")[0]
            for name in models:
                params = inspect.signature(model_class(name)).parameters
                if any(p.kind is p.VAR_KEYWORD for p in params.values()):
                    continue
                if arg not in params or arg in CREATE_ARGS:
                    takes = ", ".join(p for p in params if p not in CREATE_ARGS)
                    raise ValueError(
                        f"tune.space: {key}: model {name!r} takes no argument {arg!r}; "
                        f"its arguments: {takes}"
                    )
        elif key.startswith("data.preprocess."):
            arg = key.removeprefix("data.preprocess.")
            if arg not in preprocess:
                raise ValueError(
                    f"tune.space: {key}: not a preprocessing setting; expected one of "
                    f"{sorted(preprocess)}"
                )


def search_space(config: TrainConfig) -> dict[str, ParamRange | ParamChoices]:
    """The checked search space of ``config``: ``tune.space`` or, when it is null,
    :func:`default_space`.

    Besides :func:`~skelgraph.train.config.parse_space`'s checks, a ``model.args.`` key must be an
    argument of the model (of every model a ``model.name`` entry may choose), a
    ``data.preprocess.`` key a :class:`~skelgraph.preprocess.PreprocessConfig` field, and
    ``config`` with each bound and each choice must be a valid configuration (e.g. no
    ``data.window`` of 0).

    Raises:
        ValueError: Naming the key and the value.
    """
    raw = config.tune.space if config.tune.space is not None else default_space(config)
    space = parse_space(raw)
    _check_names(config, space)
    for key, param in space.items():
        for value in param.edge_values():
            try:
                set_values(config, {key: value})
            except ValueError as e:
                raise ValueError(f"tune.space: {key}={value!r}: {e}") from None
    return space


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _choice_labels(param: ParamChoices) -> list[Any]:
    """What Optuna stores for the choices: the values themselves when they are all scalars, else
    each one's YAML text (Optuna keeps only scalars)."""
    if all(_is_scalar(v) for v in param.values):
        return list(param.values)
    return [yaml.safe_dump(v, default_flow_style=True).strip() for v in param.values]


def suggest(trial: Trial, space: Mapping[str, ParamRange | ParamChoices]) -> dict[str, Any]:
    """Draws one value per key of ``space`` through ``trial`` (Optuna parameters named by the
    dotted keys); returns ``{key: value}``, ready for
    :func:`~skelgraph.train.config.set_values`."""
    values: dict[str, Any] = {}
    for key, param in space.items():
        if isinstance(param, ParamRange) and param.integer:
            step = 1 if param.step is None else int(param.step)
            low, high = int(param.low), int(param.high)
            values[key] = trial.suggest_int(key, low, high, step=step, log=param.log)
        elif isinstance(param, ParamRange):
            values[key] = trial.suggest_float(
                key, param.low, param.high, step=param.step, log=param.log
            )
        else:
            labels = _choice_labels(param)
            values[key] = param.values[labels.index(trial.suggest_categorical(key, labels))]
    return values


# ------------------------------------------------------------------------------------------------
# one trial


class TrialMonitor:
    """The ``on_epoch`` hook of a trial's :meth:`Trainer.fit
    <skelgraph.train.trainer.Trainer.fit>`: reports the validation ``metric`` of every epoch to
    the trial and ends training when the pruner prunes the trial or when its next epoch would end
    after ``deadline`` (``now + the latest epoch's duration > deadline``).

    Args:
        trial: The Optuna trial.
        metric: The validation metric to report.
        deadline: A :func:`time.monotonic` time, or :obj:`None` for no budget.
        has_next_epoch: Whether training would go on after the epoch just finished (no stop is
            asked for after the last one).
        clock: The time source (:func:`time.monotonic`); the first epoch is timed from the
            monitor's creation.

    Attributes:
        stopped: :obj:`None`, ``"pruned"`` or ``"budget"``: why training was ended.
    """

    def __init__(
        self,
        trial: Trial,
        metric: str,
        *,
        deadline: float | None = None,
        has_next_epoch: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.trial = trial
        self.metric = metric
        self.deadline = deadline
        self.has_next_epoch = has_next_epoch
        self.clock = clock
        self.stopped: str | None = None
        self._last = clock()

    def __call__(self, epoch: int, val_stats: Mapping[str, Any]) -> bool:
        if self.metric not in val_stats:
            raise ValueError(
                f"tune.metric: expected one of the validation metrics {sorted(val_stats)}, "
                f"got {self.metric!r}"
            )
        now = self.clock()
        epoch_time, self._last = now - self._last, now
        self.trial.report(float(val_stats[self.metric]), epoch)
        if not self.has_next_epoch():
            return False
        if self.trial.should_prune():
            self.stopped = "pruned"
        elif self.deadline is not None and now + epoch_time > self.deadline:
            self.stopped = "budget"
        return self.stopped is not None


class _TrialFailed(Exception):
    """A trial whose values the model or the data refuse, whose loss diverged or that ran out of
    memory: recorded as failed, and the search goes on."""


def _trial_dir(work_dir: Path, number: int) -> Path:
    return work_dir / "trials" / str(number)


def _failed(trial: Trial, error: BaseException) -> _TrialFailed:
    message = f"{type(error).__name__}: {error}"
    trial.set_user_attr("error", message)
    return _TrialFailed(message)


def _run_trial(
    trial: Trial,
    config: TrainConfig,
    space: Mapping[str, ParamRange | ParamChoices],
    data_root: PathLike,
    work_dir: Path,
    *,
    metric: str,
    deadline: float | None,
    cache_dir: PathLike | None,
    progress: bool,
) -> float:
    """Trains ``config`` with the trial's values in ``work_dir/trials/<n>``; returns the
    validation ``metric`` at the epoch ``best.pt`` holds."""
    values = suggest(trial, space)
    trial.set_user_attr("values", values)
    out = _trial_dir(work_dir, trial.number)
    if out.exists():  # left by an earlier study in this folder: trial numbers start again at 0
        shutil.rmtree(out)
    try:
        try:
            trial_config = set_values(config, values)
            trainer, _ = prepare(
                trial_config, data_root, out, cache_dir=cache_dir, progress=progress
            )
        except ValueError as e:  # values the model or the data refuse
            raise _failed(trial, e) from e
        out.mkdir(parents=True, exist_ok=True)
        save_config(trial_config, out / "config.yaml")
        monitor = TrialMonitor(
            trial,
            metric,
            deadline=deadline,
            has_next_epoch=lambda: (
                trainer.epoch < trial_config.epochs and not trainer.steps_exhausted
            ),
        )
        try:
            fit = trainer.fit(on_epoch=monitor)
        except FloatingPointError as e:  # the loss diverged
            raise _failed(trial, e) from e
    except torch.cuda.OutOfMemoryError as e:
        raise _failed(trial, e) from e
    except KeyboardInterrupt:
        trial.set_user_attr("error", "interrupted")
        raise
    trial.set_user_attr("epochs", trainer.epoch)
    trial.set_user_attr("best_epoch", fit["best_epoch"])
    if fit["stopped_early"]:
        trial.set_user_attr("stopped", monitor.stopped)
        raise optuna.TrialPruned(f"{monitor.stopped} after epoch {trainer.epoch}")
    (best,) = (r for r in fit["history"] if r["epoch"] == fit["best_epoch"])
    return float(best["val"][metric])


# ------------------------------------------------------------------------------------------------
# the study


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys -> values; ``tune.space`` (whose keys are dotted already) stays one value."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and f"{prefix}{key}" != "tune.space":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _study_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings a continued study must keep (JSON form, as Optuna stores them)."""
    flat = _flatten(config_to_dict(config))
    kept = {k: v for k, v in flat.items() if k not in _RUN_SETTINGS}
    return json.loads(json.dumps(kept))


def _study_diff(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(current))
    return [
        f"{k}: {stored.get(k)!r} in the study, {current.get(k)!r} now"
        for k in keys
        if stored.get(k) != current.get(k)
    ]


def _pruner(config: TrainConfig) -> optuna.pruners.BasePruner:
    if config.tune.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=config.tune.pruner_startup_trials,
        n_warmup_steps=config.tune.pruner_warmup_epochs,
    )


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Optuna's own log lines and experimental-feature warnings off: :func:`tune` prints a line
    per trial itself."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def open_study(config: TrainConfig, work_dir: PathLike) -> optuna.Study:
    """Creates the study in ``work_dir/study.db``, or loads the one there.

    The sampler is TPE (multivariate) seeded with ``config.seed`` plus the number of trials the
    study already holds, so that a continued study draws new values rather than the first ones
    again. Trials left running by a process that was killed are marked failed.

    Raises:
        ValueError: When the stored study was run with other settings (the message lists them).
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / "study.db"
    storage = optuna.storages.RDBStorage(f"sqlite:///{path.resolve()}")
    with _optuna_quiet():
        study = optuna.create_study(
            storage=storage,
            study_name=STUDY_NAME,
            direction=config.tune.direction,
            pruner=_pruner(config),
            load_if_exists=True,
        )
        settings = _study_settings(config)
        stored = study.user_attrs.get("settings")
        if stored is None:
            study.set_user_attr("settings", settings)
        elif stored != settings:
            diff = _study_diff(stored, settings)
            shown = "; ".join(diff[:5]) + ("; ..." if len(diff) > 5 else "")
            raise ValueError(
                f"{path}: the study there was run with other settings ({shown}); continue it "
                "with the same config, or start another in a new --work-dir"
            )
        study_id = storage.get_study_id_from_name(STUDY_NAME)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            storage.set_trial_user_attr(trial_id, "error", "interrupted")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        study.sampler = optuna.samplers.TPESampler(
            seed=config.seed + len(study.trials),
            n_startup_trials=config.tune.sampler_startup_trials,
            multivariate=True,
        )
    return study


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    """The study's best complete trial, or :obj:`None` before one is complete."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    return study.best_trial


def _remove_checkpoints(work_dir: Path, keep: int | None) -> None:
    """Deletes every trial's checkpoints but ``best.pt`` of trial ``keep``."""
    for path in (work_dir / "trials").glob("*/*.pt"):
        if path.name in ("last.pt", "best.pt") and not (
            path.name == "best.pt" and path.parent.name == str(keep)
        ):
            path.unlink(missing_ok=True)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if _is_scalar(value):
        return str(value)
    return yaml.safe_dump(value, default_flow_style=True).strip()


def _csv_value(value: Any) -> Any:
    """A cell of ``trials.csv``: numbers in full, lists and mappings as YAML text."""
    if value is None:
        return ""
    return value if _is_scalar(value) else _format_value(value)


def _describe(trial: FrozenTrial, metric: str) -> str:
    """One progress line about a finished trial."""
    attrs = trial.user_attrs
    values = " ".join(f"{k}={_format_value(v)}" for k, v in attrs.get("values", {}).items())
    seconds = trial.duration.total_seconds() if trial.duration else math.nan
    score = "" if trial.value is None else f"{metric} {trial.value:.4f}"
    if trial.state is TrialState.COMPLETE:
        what = f"{score} (best epoch {attrs.get('best_epoch')} of {attrs.get('epochs')})"
    elif trial.state is TrialState.PRUNED and attrs.get("stopped") == "budget":
        what = f"stopped after epoch {attrs.get('epochs')}, its next would overrun the budget"
    elif trial.state is TrialState.PRUNED:
        what = f"pruned after epoch {attrs.get('epochs')} ({score}, worse than the median)"
    else:
        what = f"failed: {attrs.get('error', 'see the log above')}"
    return f"trial {trial.number} {what}, {seconds:.0f} s | {values}"


def trial_configuration(
    config: TrainConfig,
    data_root: PathLike,
    cache_dir: PathLike | None = None,
    *,
    progress: bool = False,
) -> TrainConfig:
    """The configuration the trials train: ``config``, or where it validates on nothing (no
    ``val`` split, ``data.val_fraction`` 0) ``config`` with ``tune.holdout`` of the training
    clips held out.

    Raises:
        ValueError: When the clips cannot give that part (e.g. they all carry one group).
    """
    if split_data(data_root, config, cache_dir, progress=progress).val is not None:
        return config
    held = set_values(config, {"data.val_fraction": config.tune.holdout})
    split_data(data_root, held, cache_dir, progress=progress)  # refuses what it cannot hold out
    return held


def tune(
    config: TrainConfig,
    data_root: PathLike,
    work_dir: PathLike,
    *,
    cache_dir: PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> optuna.Study:
    """Searches the hyperparameters of ``config`` (its ``tune`` section) on ``data_root``.

    Runs ``tune.trials`` trials or until ``tune.budget_minutes`` have passed, whichever comes
    first, in the study of ``work_dir`` (created or continued, :func:`open_study`); every trial
    trains with :func:`~skelgraph.train.run.prepare` and :meth:`Trainer.fit
    <skelgraph.train.trainer.Trainer.fit>` on the training part and is scored on the validation
    part (see the module docstring for the files). Afterwards writes the reports
    (:func:`write_reports`).

    Args:
        config: The configuration to tune, with its ``tune`` section.
        data_root: A skeleton folder or a Penn Action root.
        work_dir: Output folder (created).
        cache_dir: Dataset cache folder (default: the datasets' user cache folder).
        progress: Show every trial's training progress and per-epoch lines.
        log: Receives a line per finished trial and about the reports; :obj:`None`: silent.

    Returns:
        The Optuna study (``study.best_trial.user_attrs["values"]``: the best values by key).

    Raises:
        ValueError: For a search space the model or the configuration refuse, data without a
            validation part, a metric validation does not compute, or a study in ``work_dir``
            run with other settings.
    """
    start = time.monotonic()
    tune_config = config.tune
    budget = None if tune_config.budget_minutes is None else tune_config.budget_minutes * 60.0
    deadline = None if budget is None else start + budget
    work_dir = Path(work_dir)
    space = search_space(config)
    metric = tune_config.metric or config.monitor
    say = log or (lambda line: None)
    study = open_study(config, work_dir)
    if tune_config.trials != 0:
        # before the first trial, so that the preprocessed cache is built once
        trial_base = trial_configuration(config, data_root, cache_dir, progress=progress)
        searched = ", ".join(space)
        held = trial_base.data.val_fraction
        part = "" if held == config.data.val_fraction else f", {held:g} of the clips held out"
        say(f"searching {searched} ({metric}, {tune_config.direction}{part}) in {work_dir}")

        def objective(trial: Trial) -> float:
            return _run_trial(
                trial,
                trial_base,
                space,
                data_root,
                work_dir,
                metric=metric,
                deadline=deadline,
                cache_dir=cache_dir,
                progress=progress,
            )

        def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
            best = best_trial(study)
            _remove_checkpoints(work_dir, None if best is None else best.number)
            write_reports(study, config, work_dir, plots=False)
            line = _describe(trial, metric)
            if best is not None:
                line += f" | best: trial {best.number} ({metric} {best.value:.4f})"
            say(line)

        with _optuna_quiet():
            study.optimize(
                objective,
                n_trials=tune_config.trials,
                timeout=None if deadline is None else max(deadline - time.monotonic(), 0.0),
                catch=(_TrialFailed,),
                callbacks=[after_trial],
                gc_after_trial=True,
            )
    written = write_reports(study, config, work_dir)
    say(f"wrote {', '.join(path.name for path in written)} in {work_dir}")
    return study


# ------------------------------------------------------------------------------------------------
# reports


def _trial_rows(study: optuna.Study, metric: str) -> tuple[list[str], list[list[Any]]]:
    """The header and one row per trial (values as they are) of ``trials.csv`` and the table."""
    trials = study.get_trials(deepcopy=False)
    keys: dict[str, None] = {}
    for trial in trials:
        keys.update(dict.fromkeys(trial.user_attrs.get("values", {})))
    header = ["trial", "state", metric, "best_epoch", "epochs", "seconds", "note", *keys]
    rows = []
    for trial in trials:
        attrs = trial.user_attrs
        values = attrs.get("values", {})
        seconds = trial.duration.total_seconds() if trial.duration else None
        note = attrs.get("error") or attrs.get("stopped") or ""
        cells = [
            trial.number,
            trial.state.name.lower(),
            trial.value,
            attrs.get("best_epoch"),
            attrs.get("epochs"),
            None if seconds is None else round(seconds, 1),
            note,
            *(values.get(k) for k in keys),
        ]
        rows.append(cells)
    return header, rows


def trials_table(study: optuna.Study, metric: str) -> str:
    """A text table of the study's trials (number, state, metric, epochs, seconds, why it
    stopped, values), the best trial marked ``*``."""
    header, cells = _trial_rows(study, metric)
    rows = [["" if c is None else _format_value(c) for c in row] for row in cells]
    best = best_trial(study)
    for row in rows:
        if best is not None and row[0] == str(best.number):
            row[0] += " *"
        row[6] = row[6] if len(row[6]) <= 40 else row[6][:37] + "..."
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def _plot(
    draw: Callable[[], Any], path: Path, xlabel: str | None = None, ylabel: str | None = None
) -> Path:
    """Saves the figure of an Optuna plot (``draw()`` returns its axes) to ``path``, laid out so
    that long dotted parameter names fit."""
    import matplotlib.pyplot as plt  # Optuna's plots draw with pyplot

    axes = draw()
    axes = axes.flat[0] if hasattr(axes, "flat") else axes
    figure = axes.figure
    try:
        if xlabel:
            axes.set_xlabel(xlabel)
        if ylabel:
            axes.set_ylabel(ylabel)
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        save_figure(figure, path)
    finally:
        plt.close(figure)
    return path


def write_reports(
    study: optuna.Study, config: TrainConfig, work_dir: PathLike, *, plots: bool = True
) -> list[Path]:
    """Writes ``trials.csv``, ``best.yaml`` (once a trial is complete) and, with ``plots``, the
    PNG plots of the study into ``work_dir`` (see the module docstring); returns the files."""
    work_dir = Path(work_dir)
    metric = config.tune.metric or config.monitor
    written = [work_dir / "trials.csv"]
    header, rows = _trial_rows(study, metric)
    with atomic_write(written[0], "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([_csv_value(c) for c in row] for row in rows)
    best = best_trial(study)
    if best is not None:
        written.append(work_dir / "best.yaml")
        save_config(set_values(config, best.user_attrs["values"]), written[-1])
    if not plots:
        return written
    from optuna.visualization import matplotlib as plots_of

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    reported = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    with _optuna_quiet():
        # e.g. a parameter with one value so far draws a flat axis: matplotlib warns, no harm
        warnings.simplefilter("ignore", UserWarning)
        if complete:
            written.append(
                _plot(
                    lambda: plots_of.plot_optimization_history(study, target_name=metric),
                    work_dir / "optimization_history.png",
                )
            )
        if reported:
            written.append(
                _plot(
                    lambda: plots_of.plot_intermediate_values(study),
                    work_dir / "intermediate_values.png",
                    xlabel="epoch",
                    ylabel=f"validation {metric}",
                )
            )
        if len(complete) >= 2:
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            written.append(
                _plot(
                    lambda: plots_of.plot_param_importances(
                        study, evaluator=evaluator, target_name=metric
                    ),
                    work_dir / "param_importances.png",
                )
            )
            written.append(
                _plot(
                    lambda: plots_of.plot_parallel_coordinate(study, target_name=metric),
                    work_dir / "parallel_coordinate.png",
                )
            )
    return written
