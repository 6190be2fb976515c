"""The training loop: one- or two-step BNN recipe, distillation, DDP, checkpoints with exact resume.

Read top to bottom: :func:`train` validates the whole configuration (data, model, checkpoints) before it locks the
output directory (:mod:`sparks.train.rundir`); :func:`setup_run` builds the model, optimiser and schedules into a
:class:`Run`; then epochs of :func:`train_one_epoch` and :func:`evaluate`, each ending in :func:`end_epoch`
(divergence guard, ``last.pt`` holding every metrics row, then the derived ``best.pt`` and ``metrics.jsonl``);
finally ``curves.png``. Everything that varies between runs is a function of the seed, the epoch and the step, and
every RNG state is checkpointed, so ``--resume`` continues exactly where a run stopped, even after a kill.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from sparks.core.diagnostics import selection_diagnostics, summarize
from sparks.core.layers import set_temperature
from sparks.core.selection import TemperatureSchedule
from sparks.errors import UsageError
from sparks.faults import fault_point
from sparks.train import checkpoint as ckpt
from sparks.train import monitor, rundir
from sparks.train.config import TrainConfig, check_output_dir, make_config
from sparks.train.device_data import DeviceData, use_device_data
from sparks.train.device_options import autocast, check_device_options, maybe_compile, place_model, to_input
from sparks.train.distributed import (
    DistInfo,
    all_finite,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    cleanup,
    gather_objects,
    init_distributed,
)
from sparks.train.evaluation import evaluate
from sparks.train.guard import TrainingDiverged, epoch_problem
from sparks.train.recipe import build_model, compute_loss, frozen_teacher, lr_factor, param_groups, seed_everything


@dataclass
class TrainResult:
    """What :func:`train` returns: the last epoch's metrics row and the trained (unwrapped) model of this process."""

    metrics: dict[str, Any]
    model: nn.Module


@dataclass
class Run:
    """Everything one training run carries from step to step (built by :func:`setup_run`)."""

    cfg: TrainConfig
    info: DistInfo
    out: Path
    data: Any  # sparks.train.data.Datasets
    model: nn.Module  # unwrapped
    net: nn.Module  # what the step calls: ``model`` or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    temps: TemperatureSchedule
    teacher: nn.Module | None = None
    device_data: Any = None  # sparks.train.device_data.DeviceData when the training set lives on the device
    record: dict[str, Any] = field(default_factory=dict)  # the run's own settings (checkpoints, config.yaml)
    epoch: int = 0
    step: int = 0
    best: float = -float("inf")
    best_epoch: int | None = None
    best_key: str = "train_acc"  # the metric that picks best.pt, fixed for the run
    rows: list[dict[str, Any]] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # the divergent epochs in a row just done (not checkpointed)


def train_one_epoch(run: Run, loader: Any) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, accuracy %) and advances ``run.step``. Stops on a NaN/Inf loss."""
    cfg, info = run.cfg, run.info
    run.net.train()
    # Sums stay on the device (no host sync per step for them); the only per-step sync is the NaN check.
    loss_sum = torch.zeros((), dtype=torch.float64, device=info.device)
    correct = torch.zeros((), dtype=torch.int64, device=info.device)
    total = 0
    show = info.is_main and cfg.progress and sys.stderr.isatty()
    bar = tqdm(loader, desc=f"epoch {run.epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
               disable=not show)
    for x, y in bar:
        set_temperature(run.model, run.temps(run.step))
        x, y = to_input(x, info.device, cfg.channels_last), y.to(info.device, non_blocking=True)
        with autocast(cfg.amp, info.device):
            teacher_logits = None
            if run.teacher is not None:
                with torch.no_grad():
                    teacher_logits = run.teacher(x)
            logits = run.net(x)
            loss = compute_loss(logits, y, teacher_logits, cfg.distill_alpha)
        if not all_finite(loss, info):
            last = run.out / "last.pt"
            where = str(last) if last.exists() else "none written yet"
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {run.epoch + 1} step {run.step}; "
                                   f"last good checkpoint: {where}")
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.step += 1
        fault_point("step")
        loss_sum += loss.detach().double() * y.numel()
        correct += (logits.detach().argmax(1) == y).sum()
        total += y.numel()
        if show:
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{100 * correct.item() / max(total, 1):.1f}")
    loss_sum, correct, total = all_reduce_sum([loss_sum.item(), float(correct.item()), total], info)
    return loss_sum / max(total, 1), 100.0 * correct / max(total, 1)


def train(cfg: TrainConfig, *, given: Iterable[str] | None = None) -> TrainResult:
    """Run (or resume) a training run; returns the last epoch's metrics and the model. See docs/training.md.

    ``given``: the options set explicitly (the CLI's flags and --config keys); on ``--resume`` those that differ
    from the run's settings are applied (operational ones) or refused. None: the options that differ from the
    defaults."""
    from sparks.core.methods import check_tau, get_method
    from sparks.models import list_models
    from sparks.train.data import DATASETS

    # 1. Validate everything before touching --out.
    if not cfg.out:
        raise UsageError("--out is required")
    out = Path(cfg.out)
    check_output_dir(out)
    state, changes, record, seen = None, {}, None, None
    if cfg.resume:
        seen = rundir.file_id(out / "last.pt")
        state, stored, source = rundir.resume_source(cfg, out)
        settings, record, changes = rundir.resume_settings(cfg, stored, None if given is None else set(given), source)
        cfg = make_config(settings)
    elif (out / "last.pt").exists() and not cfg.overwrite:
        raise UsageError(f"{out} already holds a run (last.pt); pass --resume to continue it or --overwrite")
    if cfg.arch not in list_models():
        raise UsageError(f"unknown architecture {cfg.arch!r}; known: {', '.join(list_models())}")
    if cfg.dataset not in DATASETS:
        raise UsageError(f"unknown dataset {cfg.dataset!r}; known: {', '.join(DATASETS)}")
    get_method(cfg.method)
    check_tau(cfg.tau)
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise UsageError("--epochs, --batch-size and --lr must be positive")
    if not 0.0 <= cfg.val_fraction < 1.0 or not 0.0 <= cfg.distill_alpha <= 1.0:
        raise UsageError("--val-fraction must be in [0, 1) and --distill-alpha in [0, 1]")
    if cfg.diverge_patience < 0 or not 0.0 <= cfg.diverge_factor < float("inf"):
        raise UsageError("--diverge-patience must be >= 0 and --diverge-factor a finite number >= 0")
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise UsageError(f"data directory {cfg.data} does not exist")
    TemperatureSchedule(cfg.temp_start, cfg.temp_end, 1, cfg.temp_schedule)  # raises on bad temperatures
    init_state = ckpt.load_checkpoint(cfg.init_from) if cfg.init_from and not cfg.resume else None
    teacher_state = ckpt.load_checkpoint(cfg.teacher) if cfg.teacher else None
    if cfg.threads is not None and cfg.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {cfg.threads}")

    # 2. Own --out (rank 0): lock it, then clean what a killed run left.
    lock = rundir.acquire_lock(out) if int(os.environ.get("RANK", "0")) == 0 else None
    threads = torch.get_num_threads()
    try:
        if lock is not None:
            rundir.take_over(cfg, out, seen)
        torch.set_num_threads(cfg.threads or threads)
        info = init_distributed(cfg.device)
        check_device_options(cfg.amp, cfg.compile, info.device)
        if state is not None and int(state["epoch"]) >= cfg.epochs:
            return finished_run(out, state, record, info)
        run = setup_run(cfg, out, info, state, init_state, teacher_state, record)
        if info.is_main:
            open_run_dir(run, state, changes)
        return fit(run)
    finally:
        cleanup()
        torch.set_num_threads(threads)
        if lock is not None:
            lock.release()


def finished_run(out: Path, state: dict[str, Any], record: dict[str, Any] | None, info: DistInfo) -> TrainResult:
    """``--resume`` of a run that has done all its epochs: repair the derived files, say so, train nothing."""
    rows = rundir.finish(out, state, record) if info.is_main else rundir.history(state, out)[0]
    return TrainResult(rows[-1] if rows else {}, ckpt.model_from_checkpoint(state))


def setup_run(cfg: TrainConfig, out: Path, info: DistInfo, state: dict[str, Any] | None,
              init_state: dict[str, Any] | None, teacher_state: dict[str, Any] | None,
              record: dict[str, Any] | None = None) -> Run:
    """Data, model (from ``init_state`` for step 2), optimiser, schedules; restored from ``state`` when resuming.
    Writes nothing."""
    from sparks.train.data import build_datasets, build_loader

    seed_everything(cfg.seed + info.rank)
    data = build_datasets(cfg.dataset, cfg.data, val_fraction=cfg.val_fraction, subset=cfg.subset, augment=cfg.augment,
                          seed=cfg.seed if cfg.split_seed is None else cfg.split_seed, image_size=cfg.image_size)
    model = build_model(cfg, data.num_classes, data.in_channels)
    if init_state is not None:
        ckpt.load_init_weights(model, init_state["model"], cfg.init_from)
    teacher = frozen_teacher(teacher_state, cfg.teacher, info.device) if teacher_state is not None else None
    place_model(model, info.device, cfg.channels_last)
    device_data = None
    if use_device_data(cfg.data_on_device, data.train, info.device):
        device_data = DeviceData(data.train, info.device)

    optimizer = torch.optim.Adam(param_groups(model, cfg.resolved_weight_decay(), cfg.select_lr), lr=cfg.lr)
    steps_per_epoch = len(build_loader(data.train, cfg.batch_size, train=True, workers=0, seed=cfg.seed,
                                       distributed=info.distributed))
    if steps_per_epoch == 0:
        raise UsageError(f"the training set ({len(data.train)} examples) is smaller than one batch")
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=info.device.type == "cuda" and cfg.amp == "fp16")
    temps = TemperatureSchedule(cfg.temp_start, cfg.temp_end, total_steps, cfg.temp_schedule)
    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda"
                                                  else None)
    net = maybe_compile(net, cfg.compile)
    run = Run(cfg, info, out, data, model, net, optimizer, scheduler, scaler, temps, teacher, device_data,
              record=dict(record or cfg.to_dict(), out=str(out)))
    run.best_key = ("val_acc" if data.val is not None else "test_acc" if data.test is not None and cfg.eval_test
                    else "train_acc")
    if state is not None:
        _restore(run, state)
    return run


def _restore(run: Run, state: dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimiser, schedules, counters, RNG state and the metric rows so far."""
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state.get("scaler") or {})
    run.epoch, run.step, run.best = int(state["epoch"]), int(state["step"]), float(state["best_metric"])
    info = run.info
    rng = state.get("rng") or []
    if len(rng) == info.world_size:
        ckpt.set_rng_state(rng[info.rank])
    else:
        seed_everything(run.cfg.seed + info.rank + 7919 * run.epoch)
        if info.is_main:
            print(f"sparks train: note: checkpoint has RNG states for {len(rng)} processes, this run has "
                  f"{info.world_size}; reseeding (the continuation is not bit-identical)", file=sys.stderr)
    run.rows, key, run.best_epoch = rundir.history(state, run.out)
    run.best_key = key or run.best_key


def open_run_dir(run: Run, state: dict[str, Any] | None, changes: dict[str, tuple[Any, Any]]) -> None:
    """Rank 0, before the first epoch: config.yaml (the run's own settings), the files derived from the resumed
    checkpoint brought up to date, the resume logged with the settings this command line changes."""
    out, cfg = run.out, run.cfg
    rundir.write_config(run.record, out / "config.yaml")
    if state is not None:
        rundir.repair(out, state, run.rows, run.best_epoch)
    else:
        monitor.write_metrics(out / "metrics.jsonl", run.rows)
    if cfg.resume:
        if state is None:
            rundir.note(f"{out} has no checkpoint yet: the run starts again from epoch 0 with the settings of its "
                        f"config.yaml")
        rundir.log_resume(out, run.epoch, changes)
    if run.best_key == "test_acc" and not cfg.eval_test:
        rundir.note("best.pt is chosen by test accuracy, which --no-eval-test does not measure: it stays at "
                    f"epoch {run.best_epoch} until the test split is evaluated again")


def fit(run: Run) -> TrainResult:
    """The epochs of a set-up run, from ``run.epoch`` to the end (or ``--stop-after`` epochs)."""
    from sparks.train.data import build_loader

    cfg, info, out = run.cfg, run.info, run.out
    writer = monitor.tensorboard(out) if info.is_main else None
    last_row: dict[str, Any] = run.rows[-1] if run.rows else {}
    stop = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, run.epoch + cfg.stop_after)
    selection = last_row.get("selection") or selection_diagnostics(run.model)  # switches count from here
    while run.epoch < stop:
        start = time.time()
        # Shuffling is a function of (seed, epoch) only, so a resumed run sees the same batches.
        seed = cfg.seed * 100_003 + run.epoch
        if run.device_data is not None:  # same batches, served from the device
            loader = run.device_data.loader(cfg.batch_size, seed=seed, distributed=info.distributed)
        else:
            loader = build_loader(run.data.train, cfg.batch_size, train=True, workers=cfg.workers, seed=seed,
                                  distributed=info.distributed)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(run.epoch)
        row = {"epoch": run.epoch + 1, "step": 0, "lr": run.optimizer.param_groups[0]["lr"],
               "temp": run.temps(run.step)}
        row["train_loss"], row["train_acc"] = train_one_epoch(run, loader)
        run.epoch += 1
        row["step"] = run.step
        broadcast_buffers(run.model, info)
        row.update(evaluate_splits(run))
        selection = selection_diagnostics(run.model, selection)  # per layer: switches, coverage, error, entropy
        row.update(summarize(selection))
        if selection:
            row["selection"] = selection
        row["time"] = time.time() - start
        end_epoch(run, row, writer)
        last_row = row
    if info.is_main:
        if run.bad:
            rundir.note(f"the last {len(run.bad)} epoch(s) look divergent and were not checkpointed; --resume "
                        f"repeats them")
        if run.rows:
            monitor.plot_curves(run.rows, out / "curves.png")
        if writer is not None:
            writer.close()
    return TrainResult(last_row, run.model)


def evaluate_splits(run: Run) -> dict[str, float]:
    """Validation (and, with ``--eval-test``, test) loss, top-1 and top-5 as metric-row entries."""
    row: dict[str, float] = {}
    for split in ("val", "test"):
        dataset = getattr(run.data, split)
        if dataset is not None and (split == "val" or run.cfg.eval_test):
            result = evaluate(run.model, dataset, batch_size=run.cfg.batch_size, workers=run.cfg.workers,
                              amp=run.cfg.amp, info=run.info, channels_last=run.cfg.channels_last)
            row.update({f"{split}_loss": result["loss"], f"{split}_acc": result["top1"],
                        f"{split}_top5": result["top5"]})
    return row


def checkpoint_state(run: Run, metric: float | None, rng: list[Any] | None) -> dict[str, Any]:
    """The checkpoint dict of a run at the end of an epoch (see docs/training.md); it holds every metrics row."""
    data = run.data
    data_info = {"dataset": run.cfg.dataset, "num_classes": data.num_classes, "in_channels": data.in_channels,
                 "input_size": list(data.input_size), "class_names": list(data.class_names)}
    return {"format_version": ckpt.FORMAT_VERSION, "model_name": run.model.model_name,
            "model_args": dict(run.model.model_args), "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(), "epoch": run.epoch, "step": run.step, "best_metric": run.best,
            "best_key": run.best_key, "best_epoch": run.best_epoch, "metric": metric, "rng": rng,
            "config": dict(run.record), "data": data_info, "metrics": list(run.rows)}


def end_epoch(run: Run, row: dict[str, Any], writer: Any) -> None:
    """Divergence guard; then last.pt (with every row: the source of truth), best.pt when the epoch is the best,
    metrics.jsonl; log. A kill between any two writes is repaired on resume. Collective under DDP."""
    cfg, info = run.cfg, run.info
    run.rows.append(row)
    problem = None
    if cfg.diverge_patience > 0:
        problem = epoch_problem(run.rows, run.data.num_classes, cfg.diverge_factor, run.best_key)
    run.bad = [*run.bad, problem] if problem else []
    if problem is None:
        metric = row.get(run.best_key)
        is_best = metric is not None and metric > run.best
        if is_best:
            run.best, run.best_epoch = metric, run.epoch
        rng = gather_objects(ckpt.rng_state(), info)  # collective: every rank takes part
        if info.is_main:
            rundir.save_epoch(run.out, checkpoint_state(run, metric, rng), is_best)
    if info.is_main:
        monitor.write_metrics(run.out / "metrics.jsonl", run.rows)
        monitor.log_row(row, cfg.epochs, writer, f" (divergent: {problem}; not checkpointed)" if problem else "")
    if problem and (len(run.bad) >= cfg.diverge_patience or run.epoch >= cfg.epochs):
        raise TrainingDiverged.at(problem, run.epoch, len(run.bad), run.out / "last.pt")
    barrier(info)
