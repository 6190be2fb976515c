"""Selection diagnostics per sub-bit layer: what the selection did since the last look, and how good it is now.

* ``switches``: codewords in the sub-codebook now that were not in it at the previous call (0 on the first call);
* ``events``: row switches made by a learned selector since the previous call, back-and-forth ones included
  (None for other methods and on the first call);
* ``coverage``: share of kernels whose own sign pattern is in the sub-codebook (those are stored without error in
  their signs);
* ``error``: relative reconstruction error ‖W − α·V[idx]‖/‖W‖ of the latent weights;
* ``entropy``: mean entropy (bits) of the rows of the soft permutation at the current temperature (learned
  selections only; None otherwise): 0 means every row has settled on one codeword.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sparks.core.codebook import full_codebook, kernel_to_index
from sparks.core.layers import subbit_layers
from sparks.core.methods import channel_alpha


def relative_error(weight: torch.Tensor, codes: torch.Tensor) -> float:
    """‖W − α·V[idx]‖/‖W‖ for the sub-codebook of codeword indices ``codes`` (nearest codeword per kernel)."""
    w = weight.detach().double()
    book = full_codebook(torch.float64, device=w.device)[codes]
    idx = (w.reshape(-1, 9) @ book.t()).argmax(dim=1)
    approx = channel_alpha(w) * book[idx].reshape(w.shape)
    return float((w - approx).norm() / w.norm().clamp_min(1e-30))


def soft_entropy_bits(selector: nn.Module) -> float:
    """Mean row entropy (bits) of a Gumbel-Sinkhorn selector's noise-free soft permutation."""
    with torch.no_grad():
        noise, selector.noise = selector.noise, 0.0
        try:
            p = selector.soft_permutation().clamp_min(1e-30)
        finally:
            selector.noise = noise
        return float(-(p * p.log()).sum(dim=1).mean() / math.log(2))


@torch.no_grad()
def selection_diagnostics(model: nn.Module, previous: dict[str, list[int]] | None = None) -> dict[str, dict]:
    """Per binary sub-bit layer: switches (against ``previous``), coverage, error, entropy and the ``codes`` now.

    Pass the result of the last call as ``previous`` to count switches; layers of non-binary methods are skipped.
    """
    out: dict[str, dict] = {}
    for name, layer in subbit_layers(model):
        if not layer.quantizer.binary:
            continue
        codes = kernel_to_index(layer.subcodebook()).flatten()
        before = set((previous or {}).get(name, {}).get("codes", codes.tolist()))
        patterns = kernel_to_index(layer.weight.detach()).flatten()
        selector = getattr(layer.quantizer, "selector", None)
        events = None if selector is None else selector.switch_events
        last_events = (previous or {}).get(name, {}).get("events_total")
        out[name] = {
            "switches": sum(1 for c in codes.tolist() if c not in before),
            "coverage": float(torch.isin(patterns, codes).float().mean()),
            "error": relative_error(layer.weight, codes),
            "entropy": None if selector is None else soft_entropy_bits(selector),
            "codes": codes.tolist(),
            "events": None if events is None or last_events is None else events - last_events,
            "events_total": events,
        }
    return out


def summarize(diagnostics: dict[str, dict]) -> dict[str, float]:
    """Scalars for a metrics row: total switches, mean coverage, error and entropy over the layers."""
    if not diagnostics:
        return {}
    rows = list(diagnostics.values())
    summary = {"sel_switches": float(sum(r["switches"] for r in rows)),
               "sel_coverage": sum(r["coverage"] for r in rows) / len(rows),
               "sel_error": sum(r["error"] for r in rows) / len(rows)}
    events = [r["events"] for r in rows if r.get("events") is not None]
    if events:
        summary["sel_events"] = float(sum(events))
    entropies = [r["entropy"] for r in rows if r["entropy"] is not None]
    if entropies:
        summary["sel_entropy"] = sum(entropies) / len(entropies)
    return summary
