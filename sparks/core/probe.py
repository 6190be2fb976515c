"""The reconstruction probe: does a learned selection beat top-n and the reconstruction-optimal kmedoids selection?

For fixed latent kernels W of one layer, the selector is driven by the reconstruction loss ‖α·V[idx] − W‖²/‖W‖²
alone (Adam on its scores, temperature 1 → 0.05), and its final selection is compared with top-n (most frequent
sign patterns) and kmedoids (best-swap local optimum of the same error, :mod:`sparks.core.kmedoids`). The error
reported is the relative norm ‖W − α·V[idx]‖/‖W‖. ``scripts/selection_probe.py`` runs it on a checkpoint's layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparks.core.diagnostics import relative_error
from sparks.core.kmedoids import kmedoids_selection
from sparks.core.layers import SubBitConv2d, subbit_layers
from sparks.core.methods import channel_alpha, frequency_order
from sparks.core.selection import TemperatureSchedule


@dataclass
class ProbeResult:
    """Relative reconstruction errors of one (layer, τ, seed)."""

    topn: float
    kmedoids: float
    learned: float
    switches: int


def learn_selection(weight: torch.Tensor, tau: int, steps: int = 600, lr: float = 0.05, seed: int = 0,
                    **method_kwargs: object) -> tuple[torch.Tensor, int]:
    """Drive a ``sparks`` selector by the reconstruction loss alone; return (final codeword indices, switches made)."""
    torch.manual_seed(seed)
    layer = SubBitConv2d(weight.shape[1], weight.shape[0], tau=tau, method="sparks", **method_kwargs)
    layer.weight.data.copy_(weight)
    layer.reset_selection()
    selector = layer.quantizer.selector
    optimizer = torch.optim.Adam([selector.scores], lr=lr)
    schedule = TemperatureSchedule(1.0, 0.05, steps)
    alpha, norm = channel_alpha(weight), weight.square().sum()
    layer.train()
    switches, previous = 0, selector.selected.clone()
    for step in range(steps):
        selector.set_temperature(schedule(step))
        loss = ((layer.quantizer(weight) * alpha - weight) ** 2).sum() / norm
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        switches += int((selector.selected != previous).sum())
        previous = selector.selected.clone()
    layer.eval()
    layer.quantizer.sync(weight)  # the selection the final scores give, not the one before the last step
    return selector.selected.clone(), switches


def probe_layer(weight: torch.Tensor, tau: int, seed: int = 0, steps: int = 600,
                **method_kwargs: object) -> ProbeResult:
    """Top-n, kmedoids and the learned selection's relative errors on one layer's kernels."""
    n = 2**tau
    topn = frequency_order(weight)[:n]
    kmed = kmedoids_selection(weight.double(), n, init=topn)
    learned, switches = learn_selection(weight, tau, steps=steps, seed=seed, **method_kwargs)
    return ProbeResult(relative_error(weight, topn), relative_error(weight, kmed), relative_error(weight, learned),
                       switches)


def model_kernels(model: nn.Module) -> dict[str, torch.Tensor]:
    """The latent 3×3 kernels of every sub-bit layer of ``model``, by layer name (float32 copies)."""
    return {name: layer.weight.detach().float().clone() for name, layer in subbit_layers(model)}


def save_kernels(kernels: dict[str, torch.Tensor], path: str | Path) -> None:
    """Store kernels as a float16 ``.npz`` (a small test fixture)."""
    np.savez_compressed(path, **{name: w.numpy().astype(np.float16) for name, w in kernels.items()})


def load_kernels(path: str | Path) -> dict[str, torch.Tensor]:
    """Kernels stored by :func:`save_kernels`, as float32 tensors."""
    with np.load(path) as data:
        return {name: torch.from_numpy(data[name].astype(np.float32)) for name in data.files}
