"""The optimisation recipe (ReActNet/SNN): model construction from a config, Adam parameter groups, the learning-rate
schedule and the (distillation) loss. Pure functions, so the loop in :mod:`sparks.train.loop` stays readable."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparks.train.config import TrainConfig


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and every CUDA device)."""
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


def frozen_teacher(state: dict[str, Any], source: str, device: torch.device) -> nn.Module:
    """The distillation teacher of a checkpoint: rebuilt, in eval mode, on ``device``, without gradients."""
    from sparks.train.checkpoint import model_from_checkpoint

    teacher = model_from_checkpoint(state, source).eval().to(device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


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


def lr_factor(schedule: str, total_steps: int) -> Callable[[int], float]:
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
