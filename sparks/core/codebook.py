"""The full binary codebook of 3×3 kernels and nearest-codeword assignment.

A 3×3 binary kernel is a vector in {-1, +1}^9, so there are N = 512 codewords. We follow SNN's index convention:
bit ``i`` of a codeword's index is set iff the row-major position ``i`` of the kernel is +1. Index 0 is the all -1
kernel and index 511 the all +1 kernel.
"""

from __future__ import annotations

import torch

KERNEL_SIZE = 3
CODE_LENGTH = KERNEL_SIZE * KERNEL_SIZE  # 9 weights per kernel
NUM_CODEWORDS = 2**CODE_LENGTH  # 512

_BIT_WEIGHTS = 2 ** torch.arange(CODE_LENGTH)  # bit i <-> row-major position i
_ASSIGN_CHUNK = 32768


def full_codebook(dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """All 512 codewords as a (512, 9) ±1 tensor; row k is the kernel with index k."""
    bits = (torch.arange(NUM_CODEWORDS).unsqueeze(1) // _BIT_WEIGHTS) % 2
    return (2 * bits - 1).to(dtype=dtype, device=device)


def index_to_kernel(index: torch.Tensor | int) -> torch.Tensor:
    """Codeword index (any shape) → ±1 kernels of shape (..., 3, 3)."""
    index = torch.as_tensor(index, dtype=torch.int64)
    if index.numel() and (index.min() < 0 or index.max() >= NUM_CODEWORDS):
        raise ValueError(f"codeword index must be in 0..{NUM_CODEWORDS - 1}")
    bits = (index.unsqueeze(-1) // _BIT_WEIGHTS.to(index.device)) % 2
    return (2 * bits - 1).to(torch.float32).reshape(*index.shape, KERNEL_SIZE, KERNEL_SIZE)


def kernel_to_index(kernel: torch.Tensor) -> torch.Tensor:
    """±1 (or any real: sign with 0 → +1) kernels of shape (..., 3, 3) → int64 codeword indices (...)."""
    if kernel.shape[-2:] != (KERNEL_SIZE, KERNEL_SIZE):
        raise ValueError(f"expected kernels of shape (..., 3, 3), got {tuple(kernel.shape)}")
    bits = (kernel.reshape(*kernel.shape[:-2], CODE_LENGTH) >= 0).to(torch.int64)
    return (bits * _BIT_WEIGHTS.to(kernel.device)).sum(-1)


def first_argmax_rows(scores: torch.Tensor, work: torch.Tensor | None = None) -> torch.Tensor:
    """``scores.argmax(dim=1)`` of a 2-D CPU float tensor (first index on ties, NaN counts as the maximum), faster.

    ATen's CPU argmax over a short contiguous row is a scalar loop (~10 ms for 262,144 × 32); this computes the same
    index from vectorised passes: the row maximum, a float mask (1 where a column equals it, or is NaN: a row with a
    NaN has a NaN maximum) weighted by n, n−1, …, 1, and the mask's row maximum, which names the first such column.
    No host sync. Overwrites ``scores``; ``work`` is an optional buffer of at least its shape.
    """
    n = scores.shape[1]
    if scores.device.type != "cpu" or not scores.is_floating_point() or n == 0:
        return scores.argmax(dim=1)
    work = torch.empty_like(scores) if work is None else work[: scores.shape[0], :n]
    top = scores.amax(dim=1, keepdim=True)
    nan = torch.ne(scores, scores, out=work)
    mask = torch.eq(scores, top, out=scores).add_(nan)
    key = mask.mul_(torch.arange(n, 0, -1, dtype=scores.dtype)).amax(dim=1)  # n − (first column of the mask)
    return key.neg_().add_(n).to(torch.int64)


def nearest_codeword(weight: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """Index into ``codewords`` of the nearest codeword for every 3×3 kernel of ``weight``.

    All ±1 codewords have the same norm (3), so the smallest L2 distance is the largest inner product; ties go to
    the first codeword (``argmax``'s rule).

    Args:
        weight: Tensor[C_out, C_in, 3, 3] (or any (..., 3, 3)) of real latent kernels.
        codewords: Tensor[n, 9] or Tensor[n, 3, 3] of ±1 codewords.

    Returns:
        Tensor[C_out, C_in] (the leading shape of ``weight``), int64 indices into ``codewords``.
    """
    flat = weight.detach().reshape(-1, CODE_LENGTH)
    book_t = codewords.detach().reshape(-1, CODE_LENGTH).to(flat.dtype).t().contiguous()
    out = torch.empty(flat.shape[0], dtype=torch.int64, device=flat.device)
    # first_argmax_rows' buffer, reused across chunks (its CPU path only)
    work = flat.new_empty(min(flat.shape[0], _ASSIGN_CHUNK), book_t.shape[1]) if flat.is_cpu else None
    # Chunks keep the (kernels × n) score block in cache: ~2× faster than one big product on CPU.
    for start in range(0, flat.shape[0], _ASSIGN_CHUNK):
        stop = start + _ASSIGN_CHUNK
        out[start:stop] = first_argmax_rows(flat[start:stop] @ book_t, work)
    return out.reshape(weight.shape[:-2])


def codeword_frequencies(weight: torch.Tensor) -> torch.Tensor:
    """How often each of the 512 codewords is the sign pattern of a kernel of ``weight`` → int64 (512,)."""
    return torch.bincount(kernel_to_index(weight.detach()).flatten(), minlength=NUM_CODEWORDS)

