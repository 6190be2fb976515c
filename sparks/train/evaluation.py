"""Evaluation of a model on a dataset split: top-1/top-5 accuracy and mean loss, exact under DDP. Used by the
training loop after every epoch and by ``sparks eval``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from sparks.train.device_options import autocast, to_input
from sparks.train.distributed import DistInfo, all_reduce_sum


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 256, workers: int = 0, amp: str = "off",
             info: DistInfo | None = None, channels_last: bool = False) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean loss of ``model`` on ``dataset`` (on ``info.device``, CPU by default);
    under DDP each rank takes every world_size-th example and the counts are summed, so the result is exact."""
    from sparks.train.data import build_loader

    info = info or DistInfo()
    if info.distributed:
        dataset = Subset(dataset, range(info.rank, len(dataset), info.world_size))
    loader = build_loader(dataset, batch_size, train=False, workers=workers)
    was_training = model.training
    model.eval()
    correct1 = correct5 = loss_sum = total = 0.0
    for x, y in loader:
        x, y = to_input(x, info.device, channels_last), y.to(info.device, non_blocking=True)
        with autocast(amp, info.device):
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
