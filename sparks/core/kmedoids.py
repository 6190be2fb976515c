"""Reconstruction-optimal codeword selection: facility location over the 512 codewords, by exact best-swap search.

For kernels w_k with per-output-channel scale α_o (and optional per-kernel weights h_k ≥ 0), the error of a
sub-codebook S is E(S) = Σ_k h_k min_{v∈S} ‖w_k − α_o·v‖². Every codeword has ‖v‖² = 9, so
E(S) = const − 2·F(S) with F(S) = Σ_k max_{v∈S} s_k·v, s_k = h_k·α_o·w_k: maximising F is a facility-location
(k-medoids) problem. The nearest codeword is the largest inner product, the same rule the forward pass uses.

The exact change of F when row j of S is replaced by candidate c is computed for all (j, c) at once from each
kernel's best and second-best inner product (:func:`swap_gains`), so a best-swap local search costs one
kernels × 512 pass per swap. :func:`kmedoids_selection` alternates assignment and the best single swap until no
swap helps.
"""

from __future__ import annotations

import torch

from sparks.core.codebook import CODE_LENGTH, full_codebook, kernel_to_index


def scaled_kernels(weight: torch.Tensor, kernel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """s_k = h_k·α_o·w_k for every kernel of ``weight`` (C_out, C_in, 3, 3) → Tensor[C_out·C_in, 9].

    α_o = mean |W| over (C_in, 3, 3) (the forward scale); ``kernel_weights`` h (C_out, C_in) default to 1.
    """
    w = weight.detach()
    alpha = w.abs().mean(dim=(1, 2, 3), keepdim=True)
    s = (alpha * w).reshape(-1, CODE_LENGTH)
    if kernel_weights is not None:
        s = s * kernel_weights.detach().reshape(-1, 1).to(s.dtype)
    return s


def sample_rows(kernels: torch.Tensor, max_rows: int | None, seed: int = 0) -> torch.Tensor:
    """At most ``max_rows`` rows of ``kernels``, drawn without replacement with a seeded generator (all if fewer).

    Large layers (a full-width ResNet-18 has up to 262,144 kernels per layer) are searched on a sample, so a swap
    costs max_rows × 512 products; the layers of the width-0.25 CIFAR model (≤ 16,384 kernels) are searched exactly.
    """
    if max_rows is None or kernels.shape[0] <= max_rows:
        return kernels
    rows = torch.randperm(kernels.shape[0], generator=torch.Generator().manual_seed(seed))[:max_rows]
    return kernels[rows.to(kernels.device)]


def coverage_value(scores: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """F(S) = Σ_k max_{j∈S} scores[k, j] for a kernels × candidates inner-product matrix (a 0-d tensor)."""
    return scores[:, selected].max(dim=1).values.sum()


def swap_gains(scores: torch.Tensor, selected: torch.Tensor,
               workspace: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Exact change of F when row j of ``selected`` is replaced by candidate c, for all (j, c) → Tensor[n, C].

    ``scores`` is the kernels × candidates matrix of inner products s_k·B_c. For a kernel k with best value b1 (on
    row a_k) and second best b2: after the swap its value is max(G_kc, b1) if a_k ≠ j, else max(G_kc, b2). So
    gain(j, c) = Σ_k max(G_kc − b1_k, 0) + Σ_{k: a_k = j} [max(G_kc, b2_k) − max(G_kc, b1_k)]. Candidates already
    selected get −inf (a swap must keep the codewords distinct). Needs n ≥ 2. ``workspace``: two tensors shaped like
    ``scores`` to compute in (a search reuses them for every swap: allocating kernels × 512 temporaries per swap
    made the kernel map and zero-fill them afresh each time, 23 of the 25 s of creating a width-1 ResNet-18).
    """
    return _gains_and_value(scores, selected, workspace)[0]


def _gains_and_value(scores: torch.Tensor, selected: torch.Tensor,
                     workspace: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`swap_gains` and F(S) (:func:`coverage_value`, bit for bit) from the same best values b1."""
    n = selected.numel()
    top = scores[:, selected].topk(2, dim=1)
    b1, b2, owner = top.values[:, 0:1], top.values[:, 1:2], top.indices[:, 0]
    above_b1, work = workspace if workspace is not None else (torch.empty_like(scores), torch.empty_like(scores))
    torch.maximum(scores, b1, out=above_b1)
    gains_all = torch.sub(above_b1, b1, out=work).sum(dim=0, keepdim=True)
    torch.maximum(scores, b2, out=work).sub_(above_b1)
    correction = scores.new_zeros(n, scores.shape[1]).index_add_(0, owner, work)
    gains = gains_all + correction
    gains[:, selected] = -torch.inf
    return gains, top.values[:, 0].contiguous().sum()  # the row maxima, summed as coverage_value sums them


def best_swap_search(scores: torch.Tensor, selected: torch.Tensor, max_swaps: int = 10_000,
                     rtol: float = 1e-7) -> tuple[torch.Tensor, int]:
    """Apply the best single swap while it raises F by more than ``rtol``·|F|; return (selection, swaps made).

    The selection keeps its row order (row j's codeword is replaced in place), so a learned selector's rows stay
    aligned with their scores.
    """
    selected = selected.clone()
    if selected.numel() >= scores.shape[1]:
        return selected, 0
    if selected.numel() == 1:  # no second best: the single best candidate is the column of largest sum
        best = scores.sum(dim=0).argmax()
        return best.reshape(1), int(best != selected[0])
    swaps = 0
    workspace = (torch.empty_like(scores), torch.empty_like(scores))
    while swaps < max_swaps:
        gains, value = _gains_and_value(scores, selected, workspace)
        flat = int(gains.argmax())
        row, cand = divmod(flat, gains.shape[1])
        if not gains[row, cand] > rtol * value.abs().clamp_min(1e-30):
            break
        selected[row] = cand
        swaps += 1
    return selected, swaps


def kmedoids_selection(weight: torch.Tensor, n: int, init: torch.Tensor | None = None,
                       kernel_weights: torch.Tensor | None = None, candidates: torch.Tensor | None = None,
                       max_swaps: int = 10_000, max_kernels: int | None = 65_536) -> torch.Tensor:
    """The n codewords (indices into the full codebook) that locally minimise Σ_k h_k min_v ‖w_k − α_o·v‖².

    Args:
        weight: latent kernels, Tensor[C_out, C_in, 3, 3].
        n: number of codewords to select.
        init: starting selection (codeword indices, n distinct); default the n most frequent sign patterns.
        kernel_weights: optional h, Tensor[C_out, C_in] of non-negative per-kernel weights.
        candidates: optional subset of codeword indices to choose from (default all 512).
        max_swaps: stop after this many swaps (the search normally stops earlier, at a local optimum).
        max_kernels: search on a seeded random sample of this many kernels if the layer has more (None: all).

    Returns:
        int64 Tensor[n] of codeword indices: no single swap with an unselected candidate lowers the error.
    """
    book = full_codebook(dtype=weight.dtype, device=weight.device)
    pool = torch.arange(book.shape[0], device=weight.device) if candidates is None else candidates.to(weight.device)
    if not 1 <= n <= pool.numel():
        raise ValueError(f"n must be in 1..{pool.numel()}, got {n}")
    scores = sample_rows(scaled_kernels(weight, kernel_weights), max_kernels) @ book[pool].t()
    if init is None:
        counts = torch.bincount(kernel_to_index(weight.detach()).flatten(), minlength=book.shape[0])[pool]
        start = torch.sort(-counts, stable=True).indices[:n]
    else:
        position = {int(c): i for i, c in enumerate(pool.tolist())}
        start = torch.tensor([position[int(c)] for c in init[:n].tolist()], dtype=torch.int64)
    selected, _ = best_swap_search(scores, start.to(weight.device), max_swaps=max_swaps)
    return pool[selected]


def accept_swaps(kernels: torch.Tensor, current: torch.Tensor, proposed: torch.Tensor,
                 min_gain: float = 0.0) -> torch.Tensor:
    """The best of a proposed selection, judged by its exact effect on F for scaled kernels s (Tensor[K, 9]).

    The proposal removes codewords R = current \\ proposed and adds A = proposed \\ current. Two outcomes are
    evaluated exactly: the whole proposal (each removed row takes an added codeword), and greedy single swaps
    R → A kept only while each raises F. The better one is returned if it beats ``current`` by more than
    ``min_gain``·|F(current)|, else ``current``. Rows keep their order: a row either keeps its codeword or takes
    one from A. Costs K × (n + |A|) products.
    """
    current_list = current.tolist()
    proposed_set, current_set = set(proposed.tolist()), set(current_list)
    removed = [row for row, code in enumerate(current_list) if code not in proposed_set]
    added = [code for code in proposed.tolist() if code not in current_set]
    if not removed or current.numel() < 2:
        return current
    columns = torch.tensor(current_list + added, dtype=torch.int64, device=kernels.device)
    scores = kernels @ full_codebook(dtype=kernels.dtype, device=kernels.device)[columns].t()
    n = current.numel()
    start = torch.arange(n, device=kernels.device)
    joint = start.clone()
    joint[removed] = torch.arange(n, n + len(added), device=kernels.device)
    greedy = start.clone()
    rows, cands = list(removed), list(range(n, n + len(added)))
    while rows:
        gains = swap_gains(scores, greedy)[rows][:, cands]
        i, j = divmod(int(gains.argmax()), len(cands))
        if not gains[i, j] > 0:
            break
        greedy[rows.pop(i)] = cands.pop(j)
    best = max((joint, greedy), key=lambda sel: float(coverage_value(scores, sel)))
    base = float(coverage_value(scores, start))
    if float(coverage_value(scores, best)) > base + min_gain * abs(base):
        return columns[best].to(current.device)
    return current


def align_rows(current: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``target``'s codewords in ``current``'s row order: shared codewords keep their rows, the others fill the rest."""
    target_set, current_set = set(target.tolist()), set(current.tolist())
    incoming = iter([code for code in target.tolist() if code not in current_set])
    out = [code if code in target_set else next(incoming) for code in current.tolist()]
    return torch.tensor(out, dtype=current.dtype, device=current.device)
