"""The training loop: one- or two-step BNN recipe, distillation, DDP, checkpoints with exact resume.

Read top to bottom: :func:`train` validates the whole configuration (data, model, checkpoints) before it touches the
output directory, then runs epochs of :func:`train_one_epoch` and :func:`evaluate`, writing ``last.pt``/``best.pt``,
``metrics.jsonl`` and finally ``curves.png``. Everything that varies between runs is a function of the seed, the
epoch and the step, and every RNG state is checkpointed, so ``--resume`` continues exactly where a run stopped.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset
from tqdm import tqdm

from sparks.core.diagnostics import selection_diagnostics, summarize
from sparks.core.layers import set_temperature
from sparks.core.selection import TemperatureSchedule
from sparks.errors import UsageError
from sparks.train import checkpoint as ckpt
from sparks.train.config import TrainConfig, make_config, save_yaml
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

# Options that may differ when resuming (where and how to run, not what to train).
OPERATIONAL = ("out", "resume", "overwrite", "workers", "device", "threads", "progress", "stop_after", "eval_test",
               "data")


@dataclass
class TrainResult:
    """What :func:`train` returns: the last epoch's metrics row and the trained (unwrapped) model of this process."""

    metrics: dict[str, Any]
    model: nn.Module


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is left untouched."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int) -> nn.Module:
    """The model the config describes (``sparks.models.create`` with the run's options)."""
    from sparks.models import create

    extra = dict(cfg.method_args or {})
    if cfg.real_activations:
        extra["binary_activation"] = False
    return create(cfg.arch, num_classes=num_classes, in_channels=in_channels, width=cfg.width, tau=cfg.tau,
                  method=cfg.method, **extra)


def param_groups(model: nn.Module, weight_decay: float, select_lr: float | None = None) -> list[dict[str, Any]]:
    """Weight decay on conv/FC weights only; not on BN, biases, learnable shifts, PReLU or selector parameters.

    The learned selections (``sparks.selection_parameters``) get their own group with learning rate ``select_lr``:
    their scores are O(1) and switch codewords by a margin, a different scale from the network weights.
    """
    from sparks.core.layers import selection_parameters

    decay = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    selection = {id(p) for p in selection_parameters(model)} if select_lr is not None else set()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
              {"params": [p for p in params if id(p) not in decay and id(p) not in selection], "weight_decay": 0.0}]
    if selection:
        groups.append({"params": [p for p in params if id(p) in selection], "weight_decay": 0.0, "lr": select_lr})
    return groups


def lr_factor(schedule: str, total_steps: int):
    """Multiplier of the base learning rate at a step: linear decay to 0, or cosine."""
    def linear(step: int) -> float:
        return max(0.0, 1.0 - step / max(1, total_steps))

    def cosine(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))

    return linear if schedule == "linear" else cosine


def compute_loss(logits: torch.Tensor, target: torch.Tensor, teacher_logits: torch.Tensor | None,
                 distill_alpha: float) -> torch.Tensor:
    """Cross-entropy, or with a teacher ReActNet's distributional loss: KL between the teacher's and the student's
    softmax (its gradient is that of the soft-target cross-entropy), mixed with CE by ``distill_alpha``."""
    logits = logits.float()
    if teacher_logits is None:
        return F.cross_entropy(logits, target)
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(teacher_logits.float(), 1), log_target=True,
                  reduction="batchmean")
    return kl if distill_alpha == 0 else distill_alpha * F.cross_entropy(logits, target) + (1 - distill_alpha) * kl


def _autocast(cfg: TrainConfig, device: torch.device):
    if device.type != "cuda" or cfg.amp == "off":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast("cuda", dtype=torch.float16 if cfg.amp == "fp16" else torch.bfloat16)


@torch.no_grad()
def evaluate(model: nn.Module, dataset, cfg: TrainConfig, info: DistInfo) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean loss of ``model`` on ``dataset``; each rank takes every world_size-th
    example and the counts are summed, so the result is exact under DDP."""
    from sparks.train.data import build_loader

    if info.distributed:
        dataset = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    loader = build_loader(dataset, cfg.batch_size, train=False, workers=cfg.workers, seed=cfg.seed)
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = total = 0.0
    for x, y in loader:
        x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
        with _autocast(cfg, info.device):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y.unsqueeze(1)
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        total += y.numel()
    model.train(was_training)
    correct1, correct5, loss_sum, total = all_reduce_sum([correct1, correct5, loss_sum, total], info)
    total = max(total, 1.0)
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "loss": loss_sum / total,
            "n": int(total)}


def train_one_epoch(model, loader, optimizer, scheduler, scaler, teacher, temps, cfg, info, epoch, step, out):
    """One pass over ``loader``; returns (mean loss, accuracy %, global step). Stops on a NaN/Inf loss."""
    raw = ckpt.unwrap(model)
    model.train()
    loss_sum = correct = total = 0.0
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True,
               disable=not (info.is_main and cfg.progress and sys.stderr.isatty()))
    for x, y in bar:
        set_temperature(raw, temps(step))
        x, y = x.to(info.device, non_blocking=True), y.to(info.device, non_blocking=True)
        with _autocast(cfg, info.device):
            teacher_logits = None
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(x)
            logits = model(x)
            loss = compute_loss(logits, y, teacher_logits, cfg.distill_alpha)
        if not all_finite(loss, info):
            last = Path(out) / "last.pt"
            where = str(last) if last.exists() else "none written yet"
            raise TrainingDiverged(f"loss became {loss.item()} at epoch {epoch + 1} step {step}; "
                                   f"last good checkpoint: {where}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        batch_loss = loss.item()
        loss_sum += batch_loss * y.numel()
        correct += (logits.argmax(1) == y).sum().item()
        total += y.numel()
        bar.set_postfix(loss=f"{batch_loss:.3f}", acc=f"{100 * correct / max(total, 1):.1f}")
    loss_sum, correct, total = all_reduce_sum([loss_sum, correct, total], info)
    return loss_sum / max(total, 1), 100.0 * correct / max(total, 1), step


def _load_teacher(state: dict[str, Any], path: str, device: torch.device) -> nn.Module:
    teacher = ckpt.model_from_checkpoint(state, path).eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _resume_config(cfg: TrainConfig, state: dict[str, Any]) -> TrainConfig:
    """The stored run's config, with this invocation's operational options (where/how to run)."""
    stored = dict(state.get("config") or {})
    defaults = TrainConfig()
    for name, value in cfg.to_dict().items():
        if name in OPERATIONAL:
            stored[name] = value
        elif name in stored and value != stored[name] and value != getattr(defaults, name):
            print(f"sparks train: note: resuming keeps the checkpoint's {name}={stored[name]!r} "
                  f"(ignoring {value!r})", file=sys.stderr)
    return make_config({k: v for k, v in stored.items() if k in cfg.to_dict()})


def _write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch to a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    selection = bool(rows) and "sel_coverage" in rows[0]
    fig, axes = plt.subplots(1, 3 if selection else 2, figsize=(15 if selection else 10, 4))
    ax_loss, ax_acc = axes[0], axes[1]
    if selection:  # selection diagnostics: coverage and error (left axis), switches (right axis)
        axes[2].plot(epochs, [r["sel_coverage"] for r in rows], label="coverage")
        axes[2].plot(epochs, [r["sel_error"] for r in rows], label="rel. error")
        if "sel_entropy" in rows[0]:
            axes[2].plot(epochs, [r["sel_entropy"] / 9 for r in rows], label="entropy / 9 bit")
        axes[2].set(xlabel="epoch", ylabel="mean over layers")
        twin = axes[2].twinx()
        twin.plot(epochs, [r["sel_switches"] for r in rows], "k--", label="switches")
        twin.set(ylabel="codeword switches (all layers)")
        twin.legend(loc="lower right")
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], label="train")
    for split in ("val", "test"):
        if rows and f"{split}_loss" in rows[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], label=split)
    ax_acc.plot(epochs, [r["train_acc"] for r in rows], label="train")
    for split in ("val", "test"):
        if rows and f"{split}_acc" in rows[0]:
            ax_acc.plot(epochs, [r[f"{split}_acc"] for r in rows], label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def train(cfg: TrainConfig) -> TrainResult:
    """Run (or resume) a training run; returns the last epoch's metrics and the model. See docs/training.md."""
    from sparks.core.methods import check_tau, get_method
    from sparks.models import list_models
    from sparks.train.data import DATASETS, build_datasets, build_loader

    # 1. Validate everything before touching --out.
    if not cfg.out:
        raise UsageError("--out is required")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    state = None
    if cfg.resume:
        resume_path = out / "last.pt" if cfg.resume == "auto" else Path(cfg.resume)
        if cfg.resume == "auto" and not resume_path.exists():
            raise UsageError(f"--resume: {resume_path} does not exist")
        state = ckpt.load_checkpoint(resume_path)
        cfg = _resume_config(cfg, state)
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
    if cfg.data is not None and not Path(cfg.data).is_dir():
        raise UsageError(f"data directory {cfg.data} does not exist")
    TemperatureSchedule(cfg.temp_start, cfg.temp_end, 1, cfg.temp_schedule)  # raises on bad temperatures
    init_state = ckpt.load_checkpoint(cfg.init_from) if cfg.init_from and state is None else None
    teacher_state = ckpt.load_checkpoint(cfg.teacher) if cfg.teacher else None

    if cfg.threads is not None and cfg.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {cfg.threads}")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or threads)
    info = init_distributed(cfg.device)
    try:
        return _run(cfg, state, init_state, teacher_state, out, info, build_datasets, build_loader)
    finally:
        cleanup()
        torch.set_num_threads(threads)


def _run(cfg, state, init_state, teacher_state, out, info, build_datasets, build_loader) -> TrainResult:
    seed_everything(cfg.seed + info.rank)
    data = build_datasets(cfg.dataset, cfg.data, val_fraction=cfg.val_fraction, subset=cfg.subset, seed=cfg.seed,
                          augment=cfg.augment, image_size=cfg.image_size)
    model = build_model(cfg, data.num_classes, data.in_channels)
    if init_state is not None:
        ckpt.load_init_weights(model, init_state["model"], cfg.init_from)
    teacher = _load_teacher(teacher_state, cfg.teacher, info.device) if teacher_state is not None else None
    model.to(info.device)

    optimizer = torch.optim.Adam(param_groups(model, cfg.resolved_weight_decay(), cfg.select_lr), lr=cfg.lr)
    steps_per_epoch = len(build_loader(data.train, cfg.batch_size, train=True, workers=0, seed=cfg.seed,
                                       distributed=info.distributed))
    if steps_per_epoch == 0:
        raise UsageError(f"the training set ({len(data.train)} examples) is smaller than one batch")
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg.schedule, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=info.device.type == "cuda" and cfg.amp == "fp16")
    temps = TemperatureSchedule(cfg.temp_start, cfg.temp_end, total_steps, cfg.temp_schedule)
    epoch = step = 0
    best = -math.inf
    rows: list[dict[str, Any]] = []
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state.get("scaler") or {})
        epoch, step, best = int(state["epoch"]), int(state["step"]), float(state["best_metric"])
        rng = state.get("rng") or []
        if len(rng) == info.world_size:
            ckpt.set_rng_state(rng[info.rank])
        else:
            seed_everything(cfg.seed + info.rank + 7919 * epoch)
            if info.is_main:
                print(f"sparks train: note: checkpoint has RNG states for {len(rng)} processes, this run has "
                      f"{info.world_size}; reseeding (the continuation is not bit-identical)", file=sys.stderr)
        metrics_path = out / "metrics.jsonl"
        if metrics_path.exists():
            rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
            rows = [r for r in rows if r.get("epoch", 0) <= epoch]

    # 2. Only now write into --out.
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
        _write_metrics(out / "metrics.jsonl", rows)
    writer = _tensorboard(out) if info.is_main else None
    net = model
    if info.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[info.device] if info.device.type == "cuda"
                                                  else None)
    data_info = {"dataset": cfg.dataset, "num_classes": data.num_classes, "in_channels": data.in_channels,
                 "input_size": list(data.input_size), "class_names": list(data.class_names)}
    last_row: dict[str, Any] = rows[-1] if rows else {}
    stop = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, epoch + cfg.stop_after)
    selection = last_row.get("selection") or selection_diagnostics(model)  # switches count from here
    while epoch < stop:
        start = time.time()
        # Shuffling is a function of (seed, epoch) only, so a resumed run sees the same batches.
        loader = build_loader(data.train, cfg.batch_size, train=True, workers=cfg.workers,
                              seed=cfg.seed * 100_003 + epoch, distributed=info.distributed)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        temperature = temps(step)
        train_loss, train_acc, step = train_one_epoch(net, loader, optimizer, scheduler, scaler, teacher, temps,
                                                      cfg, info, epoch, step, out)
        epoch += 1
        broadcast_buffers(model, info)
        row = {"epoch": epoch, "step": step, "lr": lr, "temp": temperature, "train_loss": train_loss,
               "train_acc": train_acc}
        for split in ("val", "test"):
            dataset = getattr(data, split)
            if dataset is not None and (split == "val" or cfg.eval_test):
                result = evaluate(model, dataset, cfg, info)
                row.update({f"{split}_loss": result["loss"], f"{split}_acc": result["top1"],
                            f"{split}_top5": result["top5"]})
        selection = selection_diagnostics(model, selection)  # per layer: switches, coverage, error, entropy
        row.update(summarize(selection))
        row["time"] = time.time() - start
        if selection:
            row["selection"] = selection
        metric = row.get("val_acc", row.get("test_acc", train_acc))
        is_best = metric > best
        best = max(best, metric)
        rng = gather_objects(ckpt.rng_state(), info)  # collective: every rank takes part
        if info.is_main:
            state = {"format_version": ckpt.FORMAT_VERSION, "model_name": model.model_name,
                     "model_args": dict(model.model_args), "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "best_metric": best,
                     "metric": metric, "rng": rng, "config": cfg.to_dict(), "data": data_info}
            ckpt.save_checkpoint(state, out / "last.pt")
            if is_best:
                ckpt.save_checkpoint(state, out / "best.pt")
            rows.append(row)
            _write_metrics(out / "metrics.jsonl", rows)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        writer.add_scalar(key, value, epoch)
            print(f"epoch {epoch}/{cfg.epochs}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                             if k not in ("epoch", "step", "selection")), flush=True)
        barrier(info)
        last_row = row
    if info.is_main:
        if rows:
            plot_curves(rows, out / "curves.png")
        if writer is not None:
            writer.close()
    return TrainResult(last_row, model)


def _tensorboard(out: Path):
    """A TensorBoard ``SummaryWriter`` on ``out/tb`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tb"))
