"""Exact maximum-weight assignments of many layers at once, with one device→host transfer per call.

Every Sparks layer reads its hard selection off an n×512 score matrix with the Hungarian algorithm (scipy's
``linear_sum_assignment``, on the host). Called layer by layer, a ResNet-18 on a GPU pays 16 device→host syncs per
training step. The scores change only at ``optimizer.step()``, so all layers' assignments can be solved together
right after the step: :func:`batched_assignment` stacks the score matrices, moves them to the host in ONE transfer,
runs scipy per layer and sends the answers back in one host→device copy (which does not wait for the device).

:func:`refresh_selections` is that step-time refresh for a list of (scores, current selection, hysteresis margin):
the same read-off as ``GumbelSinkhornSelector.forward`` (scores plus κ on the current selection), for all layers in
one call. A refreshed selection is a fixed point of the read-off (re-running it with the new selection as the
biased one returns the same assignment, up to exact ties), so a forward that recomputes it is unaffected.

Why not an on-device auction algorithm: it is exact only for integer (or ε-scaled) benefits and its number of
bidding rounds is data dependent, so the loop needs a host-side convergence test (a sync per round) or a worst-case
round count far above scipy's cost for 32×512 problems. One batched transfer per step is cheaper and stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def stack_padded(matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """Tensor[k, R_max, C] holding the R_i×C ``matrices`` (same C, same device) zero-padded to R_max rows."""
    if not matrices:
        raise ValueError("no score matrices given")
    cols = {m.shape[-1] for m in matrices}
    if len(cols) != 1 or any(m.dim() != 2 for m in matrices):
        raise ValueError(f"expected 2-D score matrices with one column count, got shapes "
                         f"{[tuple(m.shape) for m in matrices]}")
    rows = max(m.shape[0] for m in matrices)
    first = matrices[0]
    if all(m.shape[0] == rows for m in matrices):
        return torch.stack([m.detach() for m in matrices])
    out = first.new_zeros(len(matrices), rows, first.shape[1])
    for i, m in enumerate(matrices):
        out[i, : m.shape[0]] = m.detach()
    return out


def batched_assignment(scores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Column chosen for each row of each R_i×C score matrix (R_i ≤ C) by its maximum-weight assignment.

    Exactly what ``sparks.core.selection.hungarian`` returns for each matrix (scipy on float64 copies), but with one
    device→host transfer for all matrices and one host→device copy of the answers. Returns int64 Tensor[R_i] each,
    on the matrices' device.
    """
    stacked = stack_padded(scores)
    device = stacked.device
    if any(m.shape[0] > m.shape[1] for m in scores):
        raise ValueError("each score matrix needs at most as many rows as columns")
    host = stacked.cpu().numpy().astype(np.float64)  # the one device→host transfer (float32 → float64 is exact)
    cols = np.zeros(stacked.shape[:2], dtype=np.int64)
    for i, m in enumerate(scores):
        r = m.shape[0]
        row_ind, col_ind = linear_sum_assignment(host[i, :r], maximize=True)
        cols[i, row_ind] = col_ind
    back = torch.from_numpy(cols)
    if device.type != "cpu":
        back = back.pin_memory().to(device, non_blocking=True)  # host→device: queued, no wait for the device
    return [back[i, : m.shape[0]] for i, m in enumerate(scores)]


def biased_scores(scores: torch.Tensor, selected: torch.Tensor, margin: float) -> torch.Tensor:
    """A detached copy of ``scores`` (n×C) with ``margin`` added at each row's current column ``selected[row]``."""
    biased = scores.detach().clone()
    if margin:
        biased.scatter_add_(1, selected.view(-1, 1), biased.new_full((selected.numel(), 1), float(margin)))
    return biased


@torch.no_grad()
def refresh_selections(items: Sequence[tuple[torch.Tensor, torch.Tensor, float]], *,
                       write: bool = True) -> list[torch.Tensor]:
    """Hard selections of many layers from their (scores, current selection, hysteresis margin), in one batch.

    Each new selection is the maximum-weight assignment of ``scores`` plus ``margin`` on the current selection (a
    row switches codeword only when another one beats it by the margin), the read-off of
    ``GumbelSinkhornSelector.forward``. ``write``: copy the result into each ``selected`` buffer (in place, so
    module buffers update). Meant to run once per optimiser step, after ``optimizer.step()``.
    """
    biased = [biased_scores(s, sel, m) for s, sel, m in items]
    new = batched_assignment(biased)
    if write:
        for (_, selected, _), value in zip(items, new, strict=True):
            selected.copy_(value)
    return new
