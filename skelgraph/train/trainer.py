"""One trainer for every registered model.

:class:`Trainer` runs the epochs: seeded shuffling and augmentation, autocast (``precision: auto``
takes whichever precision a short timing of the model finds faster,
:mod:`~skelgraph.train.precision`), gradient clipping, per-iteration learning-rate schedule,
validation, ``best.pt`` (by ``config.monitor``) and ``last.pt`` checkpoints, resume, a JSONL log
and PNG curves; ``config.max_steps`` ends a quick run early. Under ``torchrun`` it trains with
DistributedDataParallel and only rank 0 writes or prints. :func:`~skelgraph.train.run.train` is
the whole run around it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from skelgraph.data import make_loader, to_dense
from skelgraph.models.checkpoint import load_weights, read_checkpoint, save_checkpoint
from skelgraph.train.config import TrainConfig, config_to_dict
from skelgraph.train.distributed import (
    DistContext,
    all_reduce_sum,
    autocast,
    barrier,
    make_sampler,
    wrap_model,
)
from skelgraph.train.evaluate import evaluate
from skelgraph.train.optim import build_optimizer, build_scheduler
from skelgraph.train.plots import plot_history
from skelgraph.train.precision import resolve_precision
from skelgraph.utils import (
    PathLike,
    atomic_write,
    epoch_seed,
    progress_bar,
    resolve_device,
    seed_everything,
    seed_worker,
)

__all__ = ["EpochHook", "Trainer"]

#: ``on_epoch(epoch, val_stats)`` of :meth:`Trainer.fit`: a true return ends training.
EpochHook = Callable[[int, Mapping[str, Any]], "bool | None"]


class Trainer:
    """Fits a ``SkeletonModel`` with the settings of a :class:`TrainConfig`.

    Files in ``work_dir`` (rank 0 only): ``last.pt`` (model, optimizer, scheduler, grad scaler,
    epoch, steps, best metric; every epoch), ``best.pt`` (the epoch with the highest validation
    ``config.monitor``; the last epoch when there is no validation data), ``log.jsonl`` (one record
    per epoch: ``epoch``, ``step`` (optimisation steps so far), ``lr`` of its last step,
    ``epoch_time``, ``train`` = every loss term and ``acc``, ``val`` = metrics and loss terms,
    ``best``) and ``curves.png``.

    With ``config.max_steps`` training stops after that many steps in all: the epoch it stops in
    ends there, is validated and saved, and no further epoch starts.

    Args:
        model: The model (unwrapped; the trainer moves and wraps it).
        config: The training configuration.
        train_set: Training samples (``Data`` with ``x``, ``y``, ``frame_mask``, ``clip_id``).
        val_set: Validation samples, or :obj:`None`.
        work_dir: Output folder (created).
        meta: Checkpoint meta (:func:`~skelgraph.models.checkpoint.make_meta`).
        ctx: Process context; default: one process on ``config.device``.
        progress: Show progress (:func:`~skelgraph.utils.progress_bar`) and a summary line per
            epoch (rank 0).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        train_set: Dataset,
        val_set: Dataset | None,
        work_dir: PathLike,
        meta: Mapping[str, Any],
        *,
        ctx: DistContext | None = None,
        progress: bool = True,
    ) -> None:
        if len(train_set) == 0:
            raise ValueError("train_set: expected at least one sample, got none")
        self.config = config
        self.ctx = ctx or DistContext(device=resolve_device(config.device))
        self.meta = dict(meta)
        self.work_dir = Path(work_dir)
        self.progress = progress and self.ctx.is_main
        self.module = model.to(self.ctx.device)
        if config.compile:
            # in place: every call of the module runs compiled, the parameter names stay
            self.module.compile()
        self.model = wrap_model(self.module, self.ctx)

        self.train_sampler = make_sampler(train_set, self.ctx, shuffle=True, seed=config.seed)
        self.train_loader = make_loader(
            train_set,
            config.batch_size,
            shuffle=self.train_sampler is None,
            sampler=self.train_sampler,
            num_workers=config.num_workers,
            seed=config.seed,
            worker_init_fn=seed_worker,
        )
        self.val_loader = None
        if val_set is not None and len(val_set):
            self.val_loader = make_loader(
                val_set,
                config.eval_batch_size or config.batch_size,
                shuffle=False,
                sampler=make_sampler(val_set, self.ctx, shuffle=False),
                num_workers=config.num_workers,
            )

        self.optimizer = build_optimizer(self.module, config.optim)
        self.scheduler = build_scheduler(self.optimizer, config.optim, len(self.train_loader))
        x = train_set[0].x  # [V, T, C]
        self.dtype = resolve_precision(
            config.precision,
            self.module,
            (config.batch_size, *x.shape),
            self.ctx,
            train=True,
            log=print if self.progress else None,
        )
        self.eval_dtype = None  # float32
        if self.val_loader is not None:
            self.eval_dtype = resolve_precision(
                config.precision,
                self.module,
                (config.eval_batch_size or config.batch_size, *x.shape),
                self.ctx,
                train=False,
                log=print if self.progress else None,
            )
        self.scaler = torch.amp.GradScaler(
            self.ctx.device.type, enabled=self.dtype == torch.float16
        )
        self.epoch = 0
        self.step = 0  # optimisation steps taken, over all epochs
        self.lr = self.optimizer.param_groups[0]["lr"]  # the rate of the latest step
        self.best_metric = -math.inf
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []

    # -- paths ------------------------------------------------------------------------------------

    @property
    def last_path(self) -> Path:
        """``work_dir/last.pt``."""
        return self.work_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        """``work_dir/best.pt``."""
        return self.work_dir / "best.pt"

    @property
    def log_path(self) -> Path:
        """``work_dir/log.jsonl``."""
        return self.work_dir / "log.jsonl"

    # -- one epoch --------------------------------------------------------------------------------

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.optim.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.config.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.step += 1

    @property
    def steps_exhausted(self) -> bool:
        """Whether ``config.max_steps`` steps have been taken."""
        return self.config.max_steps is not None and self.step >= self.config.max_steps

    def train_epoch(self) -> dict[str, float]:
        """Trains one epoch; returns the sample-weighted mean of every loss term and ``acc``."""
        seed = epoch_seed(self.config.seed, self.epoch, self.ctx.rank)
        seed_everything(seed)
        self.train_loader.generator.manual_seed(seed)
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(self.epoch)
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        count = 0
        bar = progress_bar(
            self.train_loader,
            desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
            unit="step",
            leave=False,
            disable=not self.progress,
        )
        for step, batch in enumerate(bar):
            if self.steps_exhausted:
                break
            batch = batch.to(self.ctx.device)
            x, mask = to_dense(batch)
            with autocast(self.ctx.device, self.dtype):
                out = self.model(x, mask)
                losses = self.module.loss(out, x, batch.y, mask)
            loss = losses["loss"]
            value = loss.item()
            if not math.isfinite(value):
                terms = {k: float(v) for k, v in losses.items()}
                raise FloatingPointError(
                    f"epoch {self.epoch + 1} step {step + 1}: non-finite loss {terms}"
                )
            self._step(loss)
            size = batch.num_graphs
            for name, term in losses.items():
                sums[name] = sums.get(name, 0.0) + term.detach().double() * size
            with torch.no_grad():
                video = out.video_logits(self.config.reduce, mask)
                correct += (video.argmax(-1) == batch.y).sum()
            count += size
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{self.lr:.2e}")
        names = list(sums)
        totals = torch.stack([*(sums[k] for k in names), correct, correct.new_tensor(count)])
        totals = all_reduce_sum(totals, self.ctx).cpu()
        stats = {name: float(totals[i] / totals[-1]) for i, name in enumerate(names)}
        stats["acc"] = float(totals[-2] / totals[-1])
        return stats

    def validate(self) -> dict[str, Any]:
        """Clip-level validation metrics and loss terms (empty without validation data)."""
        if self.val_loader is None:
            return {}
        metrics = evaluate(
            self.module,
            self.val_loader,
            ctx=self.ctx,
            reduce=self.config.reduce,
            dtype=self.eval_dtype,
            with_loss=True,
            desc="validate",
            progress=self.progress,
        )
        return {k: v for k, v in metrics.items() if k not in ("confusion", "per_class")}

    # -- checkpoints ------------------------------------------------------------------------------

    def _trainer_state(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "config": config_to_dict(self.config),
        }

    def resume(self, path: PathLike | None = None) -> bool:
        """Restores model, optimizer, scheduler, scaler, epoch, steps and best metric from
        ``last.pt``.

        The log is cut back to the restored epoch (a crash between the checkpoint and the log
        line leaves no duplicate). Returns whether a checkpoint was found.
        """
        path = Path(path) if path is not None else self.last_path
        if not path.is_file():
            return False
        state = read_checkpoint(path, map_location=self.ctx.device)
        load_weights(self.module, state["state_dict"], source=f"checkpoint {path}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        # checkpoints written before steps were counted: whole epochs
        self.step = int(state.get("step", self.epoch * len(self.train_loader)))
        self.best_metric = float(state["best_metric"])
        self.best_epoch = state["best_epoch"]
        if self.log_path.is_file():
            records = [json.loads(line) for line in self.log_path.read_text().splitlines() if line]
            self.history = [r for r in records if r["epoch"] <= self.epoch]
        if self.ctx.is_main:
            self._write_log()
        return True

    def _write_log(self) -> None:
        with atomic_write(self.log_path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.history)

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self, resume: bool = False, on_epoch: EpochHook | None = None) -> dict[str, Any]:
        """Trains from the current epoch (``last.pt``'s with ``resume``) to ``config.epochs``, or
        until ``config.max_steps`` steps, or until ``on_epoch`` asks to stop.

        Args:
            resume: Continue from ``last.pt`` when it exists.
            on_epoch: Called after every epoch, once its checkpoints and log line are written,
                as ``on_epoch(epoch, val_stats)`` (the 1-based epoch just finished and its
                validation metrics and loss terms, empty without validation data); a true return
                ends training there. Under ``torchrun`` every process calls it and all must
                return the same. An exception it raises leaves ``fit`` as it is.

        Returns:
            ``{"best_epoch", "best_metric", "monitor", "history", "stopped_early"}``
            (``stopped_early``: whether ``on_epoch`` ended training).
        """
        if self.ctx.is_main:
            self.work_dir.mkdir(parents=True, exist_ok=True)
        barrier(self.ctx)
        if resume:
            self.resume()
        monitor = self.config.monitor
        epochs = range(self.epoch, self.config.epochs)
        total = len(epochs)
        if self.config.max_steps is not None:  # the epochs the steps left reach into
            steps_left = max(self.config.max_steps - self.step, 0)
            total = min(total, math.ceil(steps_left / len(self.train_loader)))
        bar = progress_bar(
            epochs, desc="training", total=total, unit="epoch", disable=not self.progress
        )
        stopped_early = False
        for _ in bar:
            if self.steps_exhausted:
                break
            start = time.perf_counter()
            train_stats = self.train_epoch()
            val_stats = self.validate()
            self.epoch += 1
            if val_stats and monitor not in val_stats:
                raise ValueError(
                    f"monitor: expected one of the validation metrics {sorted(val_stats)}, "
                    f"got {monitor!r}"
                )
            improved = not val_stats or val_stats[monitor] > self.best_metric
            if improved:  # without validation data the latest epoch is the best
                self.best_epoch = self.epoch
                self.best_metric = float(val_stats.get(monitor, math.nan))
            record = {
                "epoch": self.epoch,
                "step": self.step,
                "lr": self.lr,
                "epoch_time": time.perf_counter() - start,
                "train": train_stats,
                "val": val_stats,
                "best": improved,
            }
            self.history.append(record)
            if self.ctx.is_main:
                self._save_epoch(improved)
            if self.progress:
                bar.write(_summary(record, monitor))
            bar.set_postfix(best=f"{self.best_metric:.4f}")
            barrier(self.ctx)
            if on_epoch is not None and on_epoch(self.epoch, val_stats):
                stopped_early = True
                break
        bar.close()
        return {
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "monitor": monitor,
            "history": self.history,
            "stopped_early": stopped_early,
        }

    def _save_epoch(self, improved: bool) -> None:
        save_checkpoint(
            self.last_path,
            self.module,
            self.meta,
            optimizer=self.optimizer,
            epoch=self.epoch,
            extra=self._trainer_state(),
        )
        if improved:
            save_checkpoint(self.best_path, self.module, self.meta, epoch=self.epoch)
        self._write_log()
        plot_history(self.history, self.work_dir / "curves.png")


def _summary(record: Mapping[str, Any], monitor: str) -> str:
    train = " ".join(f"{k}={v:.4f}" for k, v in record["train"].items())
    line = f"epoch {record['epoch']}: {train} lr={record['lr']:.2e} ({record['epoch_time']:.1f}s)"
    if record["val"]:
        line += f" | val {monitor}={record['val'][monitor]:.4f}"
        line += " *" if record["best"] else ""
    return line
