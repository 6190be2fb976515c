"""Numba bit kernels for the packed CPU runtime: sign packing and 3×3 binary convolutions (numpy + numba, no torch).

Activations are NHWC with channels packed 64 to a uint64 word (bit ``c % 64`` of word ``c // 64`` is ``x >= 0``, pad
bits 0). A binary 3×3 conv with padding 1 then is, per in-image tap, ``c_in - 2 * popcount(x ^ w)`` summed over words:
zero padding of the ±1 activations means out-of-image taps contribute nothing. The paper's codeword-reuse formulation
lives in :mod:`sparks.runtime.lut` (measured slower on CPU; see :func:`choose_binary_kernel`). Results are exact
integers, equal to ``F.conv2d(sign(x), w, stride, padding=1)``.
All kernels are JIT-compiled for the host CPU (VPOPCNTQ where AVX-512 has it, POPCNT or a bit trick elsewhere) and
cached on disk, so a new process loads them in well under a second.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from sparks.runtime.builds import parallel_and_serial
from sparks.runtime.packing import WORD_BITS, num_words, pack_kernels, pack_signs
from sparks.runtime.popcount import popcount64

__all__ = [
    "pack_signs",
    "pack_kernels",
    "binary_conv3x3",
    "binary_conv3x3_fused",
    "choose_binary_kernel",
    "prepare_kernels",
    "PreparedKernels",
    "popcount64",
    "inner_loop_peak",
]

_EMPTY_F32 = np.zeros(0, dtype=np.float32)
# output rows per work item of the dense kernel: its scratch buffers are allocated once per item (one per row cost
# 4-5 % of a 64-channel layer at 32×32; fourth session)
ROWS_PER_BLOCK = 8




# ---------------------------------------------------------------------------------------------------------------------
# dense xor-popcount conv


@njit(cache=True)
def _last_word_mask(c_in):
    rem = c_in % WORD_BITS
    if rem == 0:
        return ~np.uint64(0)
    return (np.uint64(1) << np.uint64(rem)) - np.uint64(1)


@njit(cache=True)
def _transpose_kernels(wp, c_in):
    """(C_out, 3, 3, Kw) → (9*Kw, C_out): one contiguous row of all output channels per (tap, word), pad bits of the
    last word cleared; and the popcount of every kernel tap, (9, C_out), for the border correction."""
    c_out, _, _, n_words = wp.shape
    n_rows = 9 * n_words
    wt = np.ascontiguousarray(wp.reshape(c_out, n_rows).T)  # numba's blocked transpose: ~2x a plain loop
    mask = _last_word_mask(c_in)
    if mask != ~np.uint64(0):
        for r in range(n_words - 1, n_rows, n_words):
            for co in range(c_out):
                wt[r, co] &= mask
    tap_pop = np.zeros((9, c_out), dtype=np.int64)
    for r in range(n_rows):
        t = r // n_words
        for co in range(c_out):
            tap_pop[t, co] += popcount64(wt[r, co])
    return wt, tap_pop


@njit(cache=True)
def _sweep3(acc, wt, xv, rows, p, first):
    """acc[ox, co] += Σ_{j<3} popcount(xv[p+j, ox] ^ wt[rows[p+j], co]) for all ox (``first``: = instead of +=, so
    the accumulators need no zeroing pass); two pixels share a weight load."""
    wo, c_out = acc.shape
    w0, w1, w2 = wt[rows[p]], wt[rows[p + 1]], wt[rows[p + 2]]
    ox = 0
    while ox + 2 <= wo:
        a0, a1, a2 = xv[p, ox], xv[p + 1, ox], xv[p + 2, ox]
        b0, b1, b2 = xv[p, ox + 1], xv[p + 1, ox + 1], xv[p + 2, ox + 1]
        acc_a = acc[ox]
        acc_b = acc[ox + 1]
        for co in range(c_out):
            v0, v1, v2 = w0[co], w1[co], w2[co]
            acc_a[co] = (0 if first else acc_a[co]) + popcount64(a0 ^ v0) + popcount64(a1 ^ v1) + popcount64(a2 ^ v2)
            acc_b[co] = (0 if first else acc_b[co]) + popcount64(b0 ^ v0) + popcount64(b1 ^ v1) + popcount64(b2 ^ v2)
        ox += 2
    if ox < wo:
        a0, a1, a2 = xv[p, ox], xv[p + 1, ox], xv[p + 2, ox]
        acc_a = acc[ox]
        for co in range(c_out):
            acc_a[co] = ((0 if first else acc_a[co])
                         + popcount64(a0 ^ w0[co]) + popcount64(a1 ^ w1[co]) + popcount64(a2 ^ w2[co]))


@njit(cache=True)
def _sweep9(acc, wt, xv, rows, p, first):
    """:func:`_sweep3` over nine (tap, word) pairs, one 3×3 kernel's worth at 64 channels: a ninth of the
    accumulator traffic per popcount, and no leftover pairs at the ResNet widths (9·words pairs per pixel)."""
    wo, c_out = acc.shape
    w0, w1, w2 = wt[rows[p]], wt[rows[p + 1]], wt[rows[p + 2]]
    w3, w4, w5 = wt[rows[p + 3]], wt[rows[p + 4]], wt[rows[p + 5]]
    w6, w7, w8 = wt[rows[p + 6]], wt[rows[p + 7]], wt[rows[p + 8]]
    ox = 0
    while ox + 2 <= wo:
        a0, a1, a2, a3, a4 = xv[p, ox], xv[p + 1, ox], xv[p + 2, ox], xv[p + 3, ox], xv[p + 4, ox]
        a5, a6, a7, a8 = xv[p + 5, ox], xv[p + 6, ox], xv[p + 7, ox], xv[p + 8, ox]
        b0, b1, b2, b3, b4 = xv[p, ox + 1], xv[p + 1, ox + 1], xv[p + 2, ox + 1], xv[p + 3, ox + 1], xv[p + 4, ox + 1]
        b5, b6, b7, b8 = xv[p + 5, ox + 1], xv[p + 6, ox + 1], xv[p + 7, ox + 1], xv[p + 8, ox + 1]
        acc_a = acc[ox]
        acc_b = acc[ox + 1]
        for co in range(c_out):
            v0, v1, v2, v3, v4 = w0[co], w1[co], w2[co], w3[co], w4[co]
            v5, v6, v7, v8 = w5[co], w6[co], w7[co], w8[co]
            acc_a[co] = (0 if first else acc_a[co]) + ((popcount64(a0 ^ v0) + popcount64(a1 ^ v1) + popcount64(a2 ^ v2))
                          + (popcount64(a3 ^ v3) + popcount64(a4 ^ v4) + popcount64(a5 ^ v5))
                          + (popcount64(a6 ^ v6) + popcount64(a7 ^ v7) + popcount64(a8 ^ v8)))
            acc_b[co] = (0 if first else acc_b[co]) + ((popcount64(b0 ^ v0) + popcount64(b1 ^ v1) + popcount64(b2 ^ v2))
                          + (popcount64(b3 ^ v3) + popcount64(b4 ^ v4) + popcount64(b5 ^ v5))
                          + (popcount64(b6 ^ v6) + popcount64(b7 ^ v7) + popcount64(b8 ^ v8)))
        ox += 2
    if ox < wo:
        for q in range(p, p + 9, 3):
            _sweep3(acc[ox:], wt, xv[:, ox:], rows, q, first and q == p)


@njit(cache=True)
def _row_popcounts(xp, wt, tap_pop, b, oy, stride, mask, acc, xv, rows, n_taps):
    """One output row: acc[ox, co] = Σ over in-image taps and words of popcount(x ^ w[co]); n_taps[ox] = tap count.

    Out-of-image columns are read as x = 0 words, which adds popcount(w) for those taps; it is subtracted afterwards
    (tap_pop) at the two border columns, so every pixel of the row runs the same branch-free chunks of (tap, word)
    pairs.
    """
    _, h, w, n_words = xp.shape
    wo, c_out = acc.shape
    n_pairs = 0
    n_rows_valid = 0
    for ky in range(3):
        iy = oy * stride - 1 + ky
        if iy < 0 or iy >= h:
            continue
        n_rows_valid += 1
        src = xp[b, iy]
        for kx in range(3):
            lo = 1 if kx == 0 else 0  # columns [lo, hi) read inside the image: 0 <= ox·stride - 1 + kx < w
            hi = min(wo, (w - kx) // stride + 1)
            for k in range(n_words):
                m = mask if k == n_words - 1 else ~np.uint64(0)
                xr = xv[n_pairs]
                xr[:lo] = 0
                for ox in range(lo, hi):
                    xr[ox] = src[ox * stride - 1 + kx, k] & m
                xr[hi:] = 0
                rows[n_pairs] = (ky * 3 + kx) * n_words + k
                n_pairs += 1
    # columns in blocks whose accumulators (≤ 32 KiB) stay in L1 while all weight rows stream past them
    block = max(2, (4096 // c_out) & ~1)
    for o0 in range(0, wo, block):
        o1 = min(o0 + block, wo)
        p = 0
        while p + 9 <= n_pairs:
            _sweep9(acc[o0:o1], wt, xv[:, o0:o1], rows, p, p == 0)
            p += 9
        while p < n_pairs:  # n_pairs = 3·words·(in-image kernel rows): a multiple of 3
            _sweep3(acc[o0:o1], wt, xv[:, o0:o1], rows, p, p == 0)
            p += 3
    n_taps[:] = 3 * n_rows_valid
    for ox in (0, wo - 1):  # only the first and last column can have taps outside the image
        n_cols_valid = 0
        for kx in range(3):
            ix = ox * stride - 1 + kx
            if 0 <= ix < w:
                n_cols_valid += 1
                continue
            for ky in range(3):
                iy = oy * stride - 1 + ky
                if 0 <= iy < h:
                    t = ky * 3 + kx
                    for co in range(c_out):
                        acc[ox, co] -= tap_pop[t, co]
        n_taps[ox] = n_rows_valid * n_cols_valid
        if wo == 1:
            break


def _conv_dense_py(xp, wt, tap_pop, c_in, stride, mode, scale, shift, res, s_in, slope, s_out):
    """Body of the dense kernels (compiled parallel and serial below), work split over blocks of
    :data:`ROWS_PER_BLOCK` (image, output row) pairs that share their scratch buffers.

    ``mode`` 0: int32 output; 1: float32 ``acc·scale + shift``; 2: mode 1, then ``+ res`` (if ``res`` is not empty),
    then RPReLU ``v + s_in → (v > 0 ? v : slope·v) → + s_out``; every step one float32 rounding, in torch's order.
    """
    n, h, w, n_words = xp.shape
    c_out = wt.shape[1]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    mask = _last_word_mask(c_in)
    out_i = np.empty((n, ho, wo, c_out) if mode == 0 else (0, 0, 0, 0), dtype=np.int32)
    out_f = np.empty((n, ho, wo, c_out) if mode != 0 else (0, 0, 0, 0), dtype=np.float32)
    has_res = res.shape[0] == n
    max_pairs = 9 * n_words
    n_rows = n * ho
    for blk in prange((n_rows + ROWS_PER_BLOCK - 1) // ROWS_PER_BLOCK):
        acc = np.empty((wo, c_out), dtype=np.int64)
        xv = np.empty((max_pairs, wo), dtype=np.uint64)
        rows = np.empty(max_pairs, dtype=np.int64)
        n_taps = np.empty(wo, dtype=np.int64)
        for r in range(blk * ROWS_PER_BLOCK, min(n_rows, (blk + 1) * ROWS_PER_BLOCK)):
            b, oy = r // ho, r % ho
            _row_popcounts(xp, wt, tap_pop, b, oy, stride, mask, acc, xv, rows, n_taps)
            for ox in range(wo):
                valid = c_in * n_taps[ox]
                a = acc[ox]
                if mode == 0:
                    oi = out_i[b, oy, ox]
                    for co in range(c_out):
                        oi[co] = valid - 2 * a[co]
                elif mode == 1:
                    of = out_f[b, oy, ox]
                    for co in range(c_out):
                        of[co] = np.float32(valid - 2 * a[co]) * scale[co] + shift[co]
                else:
                    of = out_f[b, oy, ox]
                    rr = res[b, oy, ox] if has_res else scale
                    for co in range(c_out):
                        v = np.float32(valid - 2 * a[co]) * scale[co] + shift[co]
                        if has_res:
                            v = v + rr[co]
                        v = v + s_in[co]
                        v = v if v > 0 else slope[co] * v
                        of[co] = v + s_out[co]
    return out_i, out_f


_conv_dense, _conv_dense_serial = parallel_and_serial(_conv_dense_py)
_EMPTY_RES = np.zeros((0, 0, 0, 0), dtype=np.float32)


@njit(cache=True, nogil=True)
def _sweep_loop(acc, wt, xv, rows, reps):
    for _ in range(reps):
        for p in range(0, rows.shape[0], 9):
            _sweep9(acc, wt, xv, rows, p, p == 0)


def inner_loop_peak(seconds: float = 0.3, c_out: int = 128, width: int = 16, words: int = 2) -> float:
    """Binary MACs per second of the dense kernel's inner loop alone (:func:`_sweep9` on data that stays in L1), on
    the calling thread, best of repeated timings over about ``seconds``: the ceiling a whole binary conv can approach
    on this CPU (it adds the tap gather, border correction and epilogue), measured rather than assumed."""
    rng = np.random.default_rng(0)
    n_pairs = 9 * words
    wt = rng.integers(0, 1 << 62, (n_pairs, c_out), dtype=np.int64).view(np.uint64)
    xv = rng.integers(0, 1 << 62, (n_pairs, width), dtype=np.int64).view(np.uint64)
    rows = np.arange(n_pairs, dtype=np.int64)
    acc = np.empty((width, c_out), dtype=np.int64)
    macs_per_rep = n_pairs * 64 * width * c_out
    reps = max(1, int(2e7 // macs_per_rep))
    _sweep_loop(acc, wt, xv, rows, 1)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        _sweep_loop(acc, wt, xv, rows, reps)
        best = min(best, time.perf_counter() - t0)
    return reps * macs_per_rep / best


def check_conv_args(xp: np.ndarray, c_in: int, stride: int) -> np.ndarray:
    """Validate packed activations for a 3×3 conv of c_in channels and the stride; return them C-contiguous."""
    xp = np.asarray(xp)
    if xp.ndim != 4 or xp.dtype != np.uint64:
        raise ValueError(f"packed activations must be uint64 (N, H, W, words), got {xp.dtype} {xp.shape}")
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride}")
    if not 1 <= c_in <= xp.shape[3] * WORD_BITS or num_words(c_in) != xp.shape[3]:
        raise ValueError(f"c_in={c_in} does not match {xp.shape[3]} packed words per pixel")
    return np.ascontiguousarray(xp)


class PreparedKernels(NamedTuple):
    """Packed kernels re-laid out for the dense kernel (see :func:`prepare_kernels`); pass it in place of ``wp``."""

    wt: np.ndarray  # uint64 (9 * words, C_out): one row of all output channels per (tap, word)
    tap_pop: np.ndarray  # int64 (9, C_out): popcount of each kernel tap, for the border correction
    c_in: int


def prepare_kernels(wp: np.ndarray, c_in: int) -> PreparedKernels:
    """Re-lay out :func:`pack_kernels` output once, so repeated calls skip the per-call transpose (O(weights))."""
    wp = np.asarray(wp)
    if wp.ndim != 4 or wp.dtype != np.uint64 or wp.shape[1:3] != (3, 3) or num_words(c_in) != wp.shape[3]:
        raise ValueError(f"packed kernels must be uint64 (C_out, 3, 3, {num_words(c_in)}), got {wp.dtype} {wp.shape}")
    wt, tap_pop = _transpose_kernels(np.ascontiguousarray(wp), int(c_in))
    return PreparedKernels(wt, tap_pop, int(c_in))


def _dense_weights(xp: np.ndarray, wp: np.ndarray | PreparedKernels, c_in: int) -> PreparedKernels:
    if isinstance(wp, PreparedKernels):
        if wp.c_in != c_in:
            raise ValueError(f"prepared kernels are for c_in={wp.c_in}, got c_in={c_in}")
        return wp
    wp = np.asarray(wp)
    if wp.ndim != 4 or wp.dtype != np.uint64 or wp.shape[1:] != (3, 3, xp.shape[3]):
        raise ValueError(f"packed kernels must be uint64 (C_out, 3, 3, {xp.shape[3]}), got {wp.dtype} {wp.shape}")
    return prepare_kernels(wp, c_in)


def binary_conv3x3(xp: np.ndarray, wp: np.ndarray | PreparedKernels, c_in: int, stride: int) -> np.ndarray:
    """Binary 3×3 conv, padding 1 (zero-padded ±1 activations), by xor-popcount → int32 (N, Ho, Wo, C_out).

    Args:
        xp: uint64 (N, H, W, ceil(c_in/64)) from :func:`pack_signs`.
        wp: uint64 (C_out, 3, 3, ceil(c_in/64)) from :func:`pack_kernels`, or its :func:`prepare_kernels` form.
        c_in: number of real input channels (the last word is masked to it).
        stride: 1 or 2; Ho = (H - 1) // stride + 1.
    """
    xp = check_conv_args(xp, c_in, stride)
    k = _dense_weights(xp, wp, c_in)
    return _conv_dense(xp, k.wt, k.tap_pop, int(c_in), int(stride), 0, _EMPTY_F32, _EMPTY_F32, _EMPTY_RES, _EMPTY_F32,
                       _EMPTY_F32, _EMPTY_F32)[0]


def binary_conv3x3_fused(
    xp: np.ndarray,
    wp: np.ndarray | PreparedKernels,
    c_in: int,
    stride: int,
    scale: np.ndarray,
    shift: np.ndarray,
    parallel: bool = True,
) -> np.ndarray:
    """:func:`binary_conv3x3` with a per-channel affine epilogue: float32(acc) * scale + shift (float32, no FMA).
    ``parallel=False`` runs on the calling thread only."""
    xp = check_conv_args(xp, c_in, stride)
    k = _dense_weights(xp, wp, c_in)
    c_out = k.wt.shape[1]
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    shift = np.ascontiguousarray(shift, dtype=np.float32)
    if scale.shape != (c_out,) or shift.shape != (c_out,):
        raise ValueError(f"scale and shift must have shape ({c_out},), got {scale.shape} and {shift.shape}")
    fn = _conv_dense if parallel else _conv_dense_serial
    return fn(xp, k.wt, k.tap_pop, int(c_in), int(stride), 1, scale, shift, _EMPTY_RES, _EMPTY_F32,
                       _EMPTY_F32, _EMPTY_F32)[1]


def binary_conv3x3_block(
    xp: np.ndarray,
    prepared: PreparedKernels,
    stride: int,
    scale: np.ndarray,
    shift: np.ndarray,
    residual: np.ndarray | None,
    s_in: np.ndarray,
    slope: np.ndarray,
    s_out: np.ndarray,
    parallel: bool = True,
) -> np.ndarray:
    """A whole ReActNet block after the packing, in one pass: ``rprelu(conv·scale + shift [+ residual])`` with
    per-channel float32 (C_out,) ``scale, shift, s_in, slope, s_out`` and an optional NHWC ``residual`` of the output
    shape; bit-identical to running the ops one by one. For the engine: arguments are not re-validated."""
    c_out = prepared.wt.shape[1]
    xp = check_conv_args(xp, prepared.c_in, stride)
    n, h, w, _ = xp.shape
    res = _EMPTY_RES if residual is None else np.ascontiguousarray(residual, dtype=np.float32)
    fn = _conv_dense if parallel else _conv_dense_serial
    if res.shape[0] and res.shape != (n, (h - 1) // stride + 1, (w - 1) // stride + 1, c_out):
        raise ValueError(f"residual shape {res.shape} does not match the conv output")
    return fn(xp, prepared.wt, prepared.tap_pop, prepared.c_in, stride, 2, scale, shift, res, s_in, slope, s_out)[1]


def choose_binary_kernel(c_in: int, c_out: int, h: int, w: int, n: int) -> str:
    """Which kernel to run a binary 3×3 layer with: ``"dense"`` or ``"lut"``.

    Rule, from the measurements in docs/benchmarks.md ("Packed kernels"): always ``"dense"``. On the AVX-512
    (VPOPCNTQ) CPU the LUT kernel was never faster: about equal at c_in = 1, 1.2–1.7× slower at c_in = 3–16 and
    4–18× slower at the ResNet shapes (c_in ≥ 64), because one 512-bit popcount covers 512 weight-activation products
    while the LUT still adds one int16 per (c_out, c_in, pixel). The arguments (c_in, c_out, spatial size, codebook
    size n) are kept so that a rule for other hardware can use them.
    """
    return "dense"
