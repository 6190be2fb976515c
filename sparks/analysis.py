"""Codeword statistics of binary kernels: how concentrated they are, and so how few bits a kernel really needs.

For every binary layer (any sub-bit conv, ``float`` step-1 layers included: their latent kernels are binarized by
sign) :func:`analyze` counts the 512 sign patterns of the 3×3 kernels and reports rank-frequency, the coverage of the
top 2^τ codewords, the entropy (bits per kernel; /9 per weight: what an ideal entropy coder would need) and a
power-law (Zipf) fit. It does the same for channel-wise groups (the 9 weights at one spatial position of 9
consecutive input channels) to compare kernel-wise against channel-wise codebooks, and pools all layers into model
aggregates. :func:`plot_analysis` draws the figures. The JSON schema is in docs/analysis.md.

Power-law fit: the maximum-likelihood Zipf law on ranks 1..512 (the codebook size bounds the support),
P(r) = r^-s / H(512, s), with the Kolmogorov-Smirnov distance between the empirical and the fitted rank CDFs as
goodness of fit. MLE rather than least squares on log-log axes because the latter weights the noisy tail of rare
codewords like the head and has no likelihood behind it (Clauset, Shalizi & Newman, SIAM Review 2009).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import brentq
from torch import nn

from sparks.atomic import atomic_path
from sparks.complexity import is_binary_subbit, is_subbit
from sparks.core.codebook import CODE_LENGTH, NUM_CODEWORDS, codeword_frequencies, kernel_to_index

ZIPF_MAX_EXPONENT = 50.0  # a fit that hits this bound means (almost) all kernels share one codeword


def kernel_histogram(weight: torch.Tensor) -> np.ndarray:
    """Counts of the 512 sign patterns (0 → +1) of the 3×3 kernels of ``weight`` (C_out, C_in, 3, 3) → int64 (512,)."""
    return codeword_frequencies(weight.detach().cpu()).numpy().astype(np.int64)


def channel_groups(weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Channel-wise groups of ``weight`` (C_out, C_in, 3, 3) as (G, 3, 3) "kernels", and the number of dropped weights.

    A group is the 9 weights at one spatial position (kh, kw) of 9 consecutive input channels 9g..9g+8; its
    row-major position i holds input channel 9g + i. The last C_in mod 9 input channels fit no group and are dropped.
    """
    c_out, c_in = weight.shape[:2]
    groups = c_in // CODE_LENGTH
    used = weight.detach()[:, : groups * CODE_LENGTH]
    dropped = c_out * (c_in - groups * CODE_LENGTH) * weight.shape[2] * weight.shape[3]
    grouped = used.reshape(c_out, groups, CODE_LENGTH, *weight.shape[2:]).permute(0, 1, 3, 4, 2)
    return grouped.reshape(-1, 3, 3), int(dropped)


def channel_histogram(weight: torch.Tensor) -> tuple[np.ndarray, int]:
    """Counts of the 512 sign patterns of the channel-wise groups of ``weight`` → (int64 (512,), dropped weights)."""
    groups, dropped = channel_groups(weight)
    index = kernel_to_index(groups.cpu()).numpy()
    return np.bincount(index, minlength=NUM_CODEWORDS).astype(np.int64), dropped


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy −Σ p log2 p of the empirical distribution ``counts`` (bits per symbol)."""
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def coverage(counts: np.ndarray, tau_max: int = 8) -> dict[str, float]:
    """Share of symbols whose codeword is among the 2^τ most frequent, for τ = 1..tau_max (keys are str(τ))."""
    total = counts.sum()
    cumulative = np.cumsum(np.sort(counts)[::-1])
    return {str(t): float(cumulative[min(2**t, len(counts)) - 1] / total) if total else 0.0
            for t in range(1, tau_max + 1)}


def zipf_fit(counts: np.ndarray, support: int = NUM_CODEWORDS) -> dict[str, Any]:
    """Maximum-likelihood Zipf exponent of the rank-frequency distribution, with the KS distance of the fit.

    The codeword of rank r (1 = most frequent) has probability r^-s / Σ_{k ≤ support} k^-s. The log-likelihood is
    concave in s, so s solves E_s[log r] = mean observed log r (bracketed in [0, ZIPF_MAX_EXPONENT]).

    Returns:
        ``exponent`` (s), ``ks`` (max |F_emp(r) − F_fit(r)|), ``support``, ``capped`` (s hit the upper bracket).
    """
    ranked = np.sort(np.asarray(counts, dtype=np.float64))[::-1][:support]
    ranked = np.pad(ranked, (0, support - len(ranked)))
    total = ranked.sum()
    if total == 0:
        return {"exponent": None, "ks": None, "support": support, "capped": False}
    log_r = np.log(np.arange(1, support + 1))
    observed = float((ranked * log_r).sum() / total)

    def excess(s: float) -> float:  # E_s[log r] − observed; decreasing in s
        w = np.exp(-s * log_r)
        return float((w * log_r).sum() / w.sum()) - observed

    capped = False
    if excess(0.0) <= 0:  # flat (or flatter than uniform cannot happen for sorted counts): s = 0
        s = 0.0
    elif excess(ZIPF_MAX_EXPONENT) >= 0:
        s, capped = ZIPF_MAX_EXPONENT, True
    else:
        s = float(brentq(excess, 0.0, ZIPF_MAX_EXPONENT, xtol=1e-10))
    model = np.exp(-s * log_r)
    model /= model.sum()
    ks = float(np.abs(np.cumsum(ranked) / total - np.cumsum(model)).max())
    return {"exponent": s, "ks": ks, "support": support, "capped": capped}


def distribution_stats(counts: np.ndarray, tau_max: int = 8, top: int = 32) -> dict[str, Any]:
    """All statistics of one codeword histogram (see docs/analysis.md for the keys)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    order = np.argsort(-counts, kind="stable")
    ranked = counts[order]
    h = entropy_bits(counts)
    return {
        "total": total,
        "distinct": int((counts > 0).sum()),
        "entropy_bits": h,
        "entropy_bits_per_weight": h / CODE_LENGTH,
        "coverage": coverage(counts, tau_max),
        "zipf": zipf_fit(counts),
        "top_codewords": [int(i) for i in order[:top]],
        "top_shares": [float(c / total) if total else 0.0 for c in ranked[:top]],
        "rank_frequency": [int(c) for c in ranked[ranked > 0]],
        "histogram": [int(c) for c in counts],
    }


@torch.no_grad()
def selection_usage(layer: nn.Module) -> dict[str, Any]:
    """How a binary sub-bit layer uses its selected sub-codebook: codewords, counts and how well they match signs."""
    codewords = layer.subcodebook()
    selected = kernel_to_index(codewords).tolist()
    assigned = layer.kernel_indices().flatten()
    counts = torch.bincount(assigned, minlength=len(selected)).tolist()
    signs = kernel_to_index(layer.weight.detach()).flatten()
    chosen = torch.as_tensor(selected, dtype=torch.int64)[assigned.cpu()]
    in_set = torch.isin(signs.cpu(), torch.as_tensor(selected, dtype=torch.int64))
    return {
        "codewords": selected,
        "counts": counts,
        "used": int(sum(c > 0 for c in counts)),
        "entropy_bits": entropy_bits(np.asarray(counts)),
        "sign_agreement": float((chosen == signs.cpu()).double().mean()),
        "sign_in_subcodebook": float(in_set.double().mean()),
    }


def binary_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers :func:`analyze` looks at: every sub-bit conv (found by attributes), in module order."""
    return [(name, m) for name, m in model.named_modules() if is_subbit(m)]


@torch.no_grad()
def analyze(model: nn.Module, tau_max: int = 8, top: int = 32) -> dict[str, Any]:
    """Codeword statistics of every binary layer of ``model`` and of all of them pooled.

    Args:
        model: a model with sub-bit layers (any method; ``float`` latent kernels are binarized by sign).
        tau_max: coverage is reported for the top 2^τ codewords, τ = 1..tau_max (≤ 9).
        top: how many of the most frequent codewords to list per distribution.

    Returns:
        A JSON-serialisable dict ``{"model", "tau_max", "layers": [...], "aggregate": {...}}`` (docs/analysis.md).

    Raises:
        ValueError: no sub-bit layer in ``model`` or ``tau_max`` outside 1..9.
    """
    if not 1 <= tau_max <= 9:
        raise ValueError(f"tau_max must be in 1..9, got {tau_max}")
    found = binary_layers(model)
    if not found:
        raise ValueError("model has no sub-bit layers to analyze; convert it first (sparks.convert)")
    layers = []
    pooled_kernel = np.zeros(NUM_CODEWORDS, dtype=np.int64)
    pooled_channel = np.zeros(NUM_CODEWORDS, dtype=np.int64)
    dropped_total = 0
    for name, layer in found:
        weight = layer.weight.detach()
        k_counts = kernel_histogram(weight)
        c_counts, dropped = channel_histogram(weight)
        pooled_kernel += k_counts
        pooled_channel += c_counts
        dropped_total += dropped
        entry: dict[str, Any] = {
            "name": name,
            "method": getattr(layer, "method", None),
            "tau": int(layer.tau),
            "shape": list(weight.shape),
            "kernel": distribution_stats(k_counts, tau_max, top),
            "channel": distribution_stats(c_counts, tau_max, top) if c_counts.sum() else None,
            "channel_dropped_weights": dropped,
            "selection": selection_usage(layer) if is_binary_subbit(layer) else None,
        }
        layers.append(entry)
    kernels = np.array([e["kernel"]["total"] for e in layers], dtype=np.float64)
    entropies = np.array([e["kernel"]["entropy_bits"] for e in layers])
    aggregate = {
        "layers": len(layers),
        "kernel": distribution_stats(pooled_kernel, tau_max, top),
        "channel": distribution_stats(pooled_channel, tau_max, top) if pooled_channel.sum() else None,
        "channel_dropped_weights": dropped_total,
        "mean_layer_entropy_bits": float((kernels * entropies).sum() / kernels.sum()),
    }
    return {"model": getattr(model, "model_name", type(model).__name__), "tau_max": tau_max, "layers": layers,
            "aggregate": aggregate}


def _save(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (temp file in the same directory, then os.replace)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_analysis(result: dict[str, Any], out_dir: str | Path, layer: str | None = None,
                  top: int = 32) -> list[Path]:
    """Draw the figures of an :func:`analyze` result into ``out_dir``; returns the PNG paths.

    ``rank_frequency.png`` (log-log, every layer, kernel- and channel-wise, with the pooled Zipf fit),
    ``coverage.png`` (coverage of the top 2^τ codewords, kernel- vs channel-wise) and ``top_codewords.png`` (the
    ``top`` most used codewords of layer ``layer``, or of all layers pooled, as 3×3 glyphs with their shares).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe in threads and on servers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = result["layers"]
    colors = colormaps["viridis"](np.linspace(0, 0.9, max(len(layers), 1)))
    paths = []

    fig = Figure(figsize=(11, 4.2))
    for ax, key, title in zip(fig.subplots(1, 2), ("kernel", "channel"), ("kernel-wise (3×3)", "channel-wise (9 ch)"),
                              strict=True):
        for entry, color in zip(layers, colors, strict=True):
            stats = entry[key]
            if stats:
                freq = np.asarray(stats["rank_frequency"], dtype=float) / stats["total"]
                ax.loglog(np.arange(1, len(freq) + 1), freq, color=color, lw=0.9, alpha=0.8)
        pooled = result["aggregate"][key]
        if pooled:
            freq = np.asarray(pooled["rank_frequency"], dtype=float) / pooled["total"]
            ax.loglog(np.arange(1, len(freq) + 1), freq, color="black", lw=2, label="all layers")
            s = pooled["zipf"]["exponent"]
            if s is not None:
                ranks = np.arange(1, NUM_CODEWORDS + 1)
                fit = ranks**-s / (ranks**-s).sum()
                ax.loglog(ranks, fit, "r--", lw=1.2, label=f"Zipf MLE s={s:.2f}, KS={pooled['zipf']['ks']:.3f}")
        ax.set(xlabel="rank", ylabel="share of kernels", title=f"rank-frequency, {title}")
        ax.legend(fontsize=8)
    path = out / "rank_frequency.png"
    _save(fig, path)
    paths.append(path)

    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
    taus = np.arange(1, result["tau_max"] + 1)
    for key, color in (("kernel", "tab:blue"), ("channel", "tab:orange")):
        for entry in layers:
            if entry[key]:
                ax.plot(taus, [entry[key]["coverage"][str(t)] for t in taus], color=color, lw=0.6, alpha=0.35)
        if result["aggregate"][key]:
            ax.plot(taus, [result["aggregate"][key]["coverage"][str(t)] for t in taus], "o-", color=color, lw=2,
                    label=f"{key}-wise, all layers (thin: per layer)")
    ax.set(xlabel=r"τ (top $2^{τ}$ codewords)", ylabel="coverage", ylim=(0, 1.02),
           title=r"share of kernels covered by the top $2^{τ}$ codewords")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = out / "coverage.png"
    _save(fig, path)
    paths.append(path)

    if layer is None:
        stats, label = result["aggregate"]["kernel"], "all layers"
    else:
        matches = [e for e in layers if e["name"] == layer]
        if not matches:
            raise ValueError(f"no analyzed layer named {layer!r}; layers: {', '.join(e['name'] for e in layers)}")
        stats, label = matches[0]["kernel"], layer
    counts = np.asarray(stats["histogram"])
    order = np.argsort(-counts, kind="stable")[:top]
    cols = 8
    rows = max(1, -(-len(order) // cols))
    fig = Figure(figsize=(cols * 1.1, rows * 1.35 + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    bits = (order[:, None] >> np.arange(CODE_LENGTH)) & 1  # bit i ⇔ row-major position i is +1
    for ax, index, glyph in zip(axes, order, bits, strict=False):
        ax.imshow(glyph.reshape(3, 3), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"#{index}\n{counts[index] / max(counts.sum(), 1):.1%}", fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"top {len(order)} codewords ({label}; white = +1, black = −1)", fontsize=9)
    path = out / "top_codewords.png"
    _save(fig, path)
    paths.append(path)
    return paths
