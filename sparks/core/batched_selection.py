"""All Sparks layers' soft selections in one batched Sinkhorn per step: a kernel-launch fix for GPUs.

Each selector runs ``sinkhorn_iters`` rounds of log-space normalisation on its (n+1)×512 scores, forward and
backward: about 300 small kernels per layer, 5,000 per step for a ResNet-18's 16 layers. On a GPU such kernels cost
their launch (microseconds each), not their arithmetic, so the selectors can outweigh the convolutions.
:func:`stacked_soft_codewords` stacks every layer's scores into one (k, n+1, 512) tensor and runs Sinkhorn and the
product with the codebook once, so a step launches the kernels of one layer. Gradients flow back to each layer's
own scores through the stack.

Proposal for the integrator (the selector module is not changed here): compute the soft codewords of all selectors
once per model forward (e.g. a forward pre-hook), let each selector's training forward return
``pste(soft_codewords[i], codebook[selected])``, and refresh ``selected`` after each optimiser step with
:func:`sparks.core.assignment.refresh_selections`. scripts/gpu_check.py measures exactly that variant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sparks.core.codebook import NUM_CODEWORDS, full_codebook
from sparks.core.selection import gumbel_noise, log_sinkhorn


def row_log_mass(n: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Log masses of the n score rows (1 each) and, when n < 512, of the "not selected" row (512 − n)."""
    rest = NUM_CODEWORDS - n
    masses = torch.ones(n + (1 if rest else 0), device=device)
    if rest:
        masses[-1] = rest
    return masses.log()


def codebook_on(device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The full codebook on ``device``, built there once (a per-step host→device copy would be a sync on CUDA)."""
    key = (str(device), dtype)
    if key not in _BOOKS:
        _BOOKS[key] = full_codebook(dtype=dtype, device=device)
    return _BOOKS[key]


_BOOKS: dict[tuple[str, torch.dtype], torch.Tensor] = {}


def noisy_scaled_scores(selectors: Sequence[nn.Module]) -> torch.Tensor:
    """(scores + σ·Gumbel) / t of each selector, stacked to (k, n, 512); one op for the stack when all share σ and t."""
    sigmas = {float(s.noise) for s in selectors}
    temps = {float(s.temperature) for s in selectors}
    if len(sigmas) == 1 and len(temps) == 1:
        scores = torch.stack([s.scores for s in selectors])
        sigma = sigmas.pop()
        if sigma > 0:
            scores = scores + sigma * gumbel_noise(scores.shape, device=scores.device)
        return scores / temps.pop()
    rows = []
    for s in selectors:
        x = s.scores
        if s.noise > 0:
            x = x + s.noise * gumbel_noise(x.shape, device=x.device)
        rows.append(x / s.temperature)
    return torch.stack(rows)


def stacked_soft_codewords(selectors: Sequence[nn.Module]) -> list[torch.Tensor]:
    """P_soft · B, Tensor[n, 9], of each Gumbel-Sinkhorn selector (same value as ``soft_permutation() @ B`` of each,
    with Gumbel noise drawn per layer when its ``noise`` > 0), computed with one Sinkhorn per (n, rounds) group.

    A selector here is anything with ``scores`` (n×512), ``n``, ``noise``, ``temperature`` and
    ``sinkhorn_iters`` (``sparks.core.selection.GumbelSinkhornSelector``). No host sync.
    """
    out: list[torch.Tensor | None] = [None] * len(selectors)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, sel in enumerate(selectors):
        groups.setdefault((sel.n, sel.sinkhorn_iters), []).append(i)
    for (n, iters), members in groups.items():
        scores = noisy_scaled_scores([selectors[i] for i in members])  # (k, n, 512), differentiable
        device = scores.device
        if n < NUM_CODEWORDS:
            scores = torch.cat([scores, scores.new_zeros(len(members), 1, NUM_CODEWORDS)], dim=1)
        p = log_sinkhorn(scores, iters, row_log_mass(n, device))[:, :n]
        soft = p @ codebook_on(device, p.dtype)  # (k, n, 9): one batched product
        for j, i in enumerate(members):
            out[i] = soft[j]
    return out  # type: ignore[return-value]
