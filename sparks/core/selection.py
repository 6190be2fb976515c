"""Learned codeword selection: Gumbel-Sinkhorn, the Hungarian algorithm and the PSTE.

Sparks selects n = 2^τ of the N = 512 codewords with a permutation P of the full codebook B; the sub-codebook is the
first n rows of P·B. Only those n rows matter, so the selector scores only them: scores X ∈ R^{n×N}, plus one
constant "not selected" row that holds the remaining N − n units of mass. This is exactly the full N×N problem with
the scores of the last N − n rows held constant (those rows never change which codewords come first), at a
fraction of the cost; see docs/method.md.

* :func:`log_sinkhorn` — Sinkhorn normalisation in log space (Mena et al., ICLR 2018), with optional row masses.
* :func:`gumbel_noise` — standard Gumbel samples.
* :func:`hungarian` — exact maximum-weight assignment (scipy's ``linear_sum_assignment``).
* :func:`pste` — Permutation Straight-Through Estimator: forward the hard permutation, backward the soft one.
* :func:`tangent_gradient` — identity forward; backward drops each codeword gradient's component along the codeword.
* :class:`TemperatureSchedule` — the annealing the training loop drives.
* :class:`GumbelSinkhornSelector` — the per-layer module returning the n selected codewords.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from sparks.core.codebook import NUM_CODEWORDS, full_codebook


def log_sinkhorn(log_alpha: torch.Tensor, n_iters: int = 20, row_log_mass: torch.Tensor | None = None) -> torch.Tensor:
    """Sinkhorn normalisation in log space; returns the (soft) transport plan exp(log P).

    Repeats ``n_iters`` times: subtract each row's logsumexp (plus its log mass), then each column's logsumexp. With
    a square input and no masses the result is doubly stochastic; with ``row_log_mass`` the rows sum to
    ``exp(row_log_mass)`` and the columns to 1 (the masses must add up to the number of columns).

    Args:
        log_alpha: Tensor[..., R, C] of scores already divided by the temperature.
        n_iters: number of row+column normalisation rounds.
        row_log_mass: optional Tensor[R], log of each row's total mass.
    """
    log_p = log_alpha
    for _ in range(n_iters):
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        if row_log_mass is not None:
            log_p = log_p + row_log_mass.unsqueeze(-1)
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)
    return log_p.exp()


def gumbel_noise(shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None, eps: float = 1e-20) -> torch.Tensor:
    """Standard Gumbel samples g = −log(−log(u + eps) + eps), u ~ U(0, 1)."""
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u + eps) + eps)


def hungarian(scores: torch.Tensor) -> torch.Tensor:
    """Column chosen for each row by the maximum-weight assignment of an R×C score matrix (R ≤ C) → int64 (R,).

    The columns are distinct and Σ_r scores[r, col[r]] is maximal (scipy's ``linear_sum_assignment``).
    """
    matrix = scores.detach().to(torch.float64).cpu().numpy()
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    out = np.empty(matrix.shape[0], dtype=np.int64)
    out[rows] = cols
    return torch.from_numpy(out).to(scores.device)


def pste(p_soft: torch.Tensor, p_hard: torch.Tensor) -> torch.Tensor:
    """Permutation Straight-Through Estimator: equals ``p_hard`` exactly in the forward pass (``x - x`` is exactly 0
    in floating point), has the gradient of ``p_soft``. Also valid for any linear image of the two, e.g. P·B."""
    return p_hard + (p_soft - p_soft.detach())


class _TangentGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, codewords: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(codewords)
        return codewords.view_as(codewords)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (v,) = ctx.saved_tensors
        return grad - (grad * v).sum(-1, keepdim=True) / (v * v).sum(-1, keepdim=True) * v


def tangent_gradient(codewords: torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; the backward keeps only the part of each row's gradient orthogonal to the row.

    All ±1 codewords have the same norm, so a move along a codeword itself is impossible; that radial component of
    dL/dV only adds a bias (it makes every other codeword look better than the current one to first order) and is
    dropped — the Riemannian gradient on the sphere the codewords live on. See docs/method.md.
    """
    return _TangentGradient.apply(codewords)


@dataclass
class TemperatureSchedule:
    """Sinkhorn temperature annealed from ``start`` to ``end`` over ``steps`` steps (``exp``: geometric; ``linear``).

    Call with the global step; the value stays at ``end`` after the last step.
    """

    start: float = 1.0
    end: float = 0.1
    steps: int = 1000
    kind: str = "exp"

    def __post_init__(self) -> None:
        if self.start <= 0 or self.end <= 0:
            raise ValueError(f"temperatures must be > 0, got start={self.start}, end={self.end}")
        if self.kind not in ("exp", "linear", "constant"):
            raise ValueError(f"unknown temperature schedule kind {self.kind!r}; expected exp, linear or constant")

    def __call__(self, step: int) -> float:
        if self.kind == "constant" or self.steps <= 0:
            return self.start if self.kind == "constant" else self.end
        frac = min(max(step / self.steps, 0.0), 1.0)
        if self.kind == "linear":
            return self.start + (self.end - self.start) * frac
        return self.start * math.exp(frac * math.log(self.end / self.start))


class GumbelSinkhornSelector(nn.Module):
    """Selects n distinct codewords of the full codebook with a learned (partial) permutation.

    Training forward: P_soft = Sinkhorn((X + σ_t·g)/t) over the n score rows plus the "not selected" row (Gumbel g,
    σ_t = ``noise`` × the current temperature, so the exploration anneals with it); the proposal is the Hungarian
    assignment of the noise-free X plus a bonus κ on the current selection (hysteresis; a noisy read-off would change
    the network's weights at random every step and cost an exact evaluation each time); an optional
    ``accept(current, proposed)`` callback decides which proposed switches are taken (the Sparks method accepts
    them by their exact effect on the layer's objective). Returns V = PSTE(P_soft, P_hard) @ B, whose value is
    exactly n distinct ±1 codewords and whose gradient reaches X.
    Eval forward: no noise, no Sinkhorn: the codewords of the ``selected`` buffer. :meth:`sync` first re-reads the
    selection when the scores changed since the last read-off (an optimiser step after the last training forward),
    so evaluation is not one step behind the final scores.

    Args:
        n: number of codewords to select (2^τ).
        sinkhorn_iters: Sinkhorn rounds per training step.
        noise: Gumbel noise scale relative to the temperature (σ_t = noise · t).
        init_margin: score given to each row's initial codeword (others start at 0).
        switch_margin: hysteresis κ of the hard read-off (0 disables it).
    """

    def __init__(self, n: int, sinkhorn_iters: int = 10, noise: float = 0.0, init_margin: float = 1.0,
                 switch_margin: float = 0.5) -> None:
        super().__init__()
        if not 1 <= n <= NUM_CODEWORDS:
            raise ValueError(f"n must be in 1..{NUM_CODEWORDS}, got {n}")
        self.n = n
        self.sinkhorn_iters = sinkhorn_iters
        self.noise = noise
        self.init_margin = init_margin
        self.switch_margin = switch_margin
        self.temperature = 1.0
        self.scores = nn.Parameter(torch.zeros(n, NUM_CODEWORDS))
        self.register_buffer("selected", torch.arange(n, dtype=torch.int64))
        rest = NUM_CODEWORDS - n
        masses = torch.ones(n + (1 if rest else 0))
        if rest:
            masses[-1] = rest
        self.register_buffer("_row_log_mass", masses.log(), persistent=False)
        self.register_buffer("_codebook", full_codebook(), persistent=False)
        self.read_version = -1  # scores._version at the last hard read-off
        self.switch_events = 0  # rows that changed codeword at a read-off, counted since construction

    def initialize(self, order: torch.Tensor) -> None:
        """Start from the codewords ``order[:n]`` (e.g. most frequent first): one-hot scores with ``init_margin``."""
        order = torch.as_tensor(order, dtype=torch.int64).to(self.scores.device)[: self.n]
        with torch.no_grad():
            self.scores.zero_()
            self.scores[torch.arange(self.n), order] = self.init_margin
            self.selected.copy_(order)
        self.read_version = self.scores._version

    def set_temperature(self, temperature: float) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def perturbed_scores(self) -> torch.Tensor:
        """X + σ_t·g with σ_t = noise · temperature (X itself when the noise is off)."""
        sigma = self.noise * self.temperature
        if sigma <= 0:
            return self.scores
        return self.scores + sigma * gumbel_noise(self.scores.shape, device=self.scores.device)

    def soft_permutation(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """P_soft over the n score rows, Tensor[n, N] (rows sum to 1, columns to ≤ 1)."""
        scores = self.perturbed_scores() if scores is None else scores
        if self.n < NUM_CODEWORDS:
            scores = torch.cat([scores, scores.new_zeros(1, NUM_CODEWORDS)], dim=0)
        p = log_sinkhorn(scores / self.temperature, self.sinkhorn_iters, self._row_log_mass)
        return p[: self.n]

    @torch.no_grad()
    def read_off(self, scores: torch.Tensor, accept=None) -> None:
        """Hard selection from ``scores`` (+ κ on the current rows); ``accept(current, proposed)`` may veto switches."""
        rows = torch.arange(self.n, device=scores.device)
        biased = scores.detach().clone()
        biased[rows, self.selected] += self.switch_margin
        proposed = hungarian(biased)
        if accept is not None and not torch.equal(proposed, self.selected):
            proposed = accept(self.selected.clone(), proposed)
        if not torch.equal(proposed, self.selected):
            self.switch_events += int((proposed != self.selected).sum())
            self.selected.copy_(proposed)
        self.read_version = self.scores._version

    def codebook_t(self) -> torch.Tensor:
        """The full codebook transposed, Tensor[9, N]."""
        return self._codebook.t()

    @torch.no_grad()
    def sync(self, accept=None) -> None:
        """Re-read the noise-free selection if the scores changed since the last read-off (eval after a step)."""
        if self.scores._version != self.read_version:
            self.read_off(self.scores, accept)

    def forward(self, accept=None) -> torch.Tensor:
        """The n selected codewords, Tensor[n, 9] (exact ±1 values; with PSTE gradients in training)."""
        if not (self.training and torch.is_grad_enabled() and self.scores.requires_grad):
            return self._codebook[self.selected]
        self.read_off(self.scores, accept)  # noise-free: the noise explores through the gradients, see the class doc
        # PSTE applied to the codewords (P·B), so the forward value is exactly the ±1 rows B[selected].
        return pste(self.soft_permutation() @ self._codebook, self._codebook[self.selected])
