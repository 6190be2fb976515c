"""The paper's codeword-reuse (LUT) binary 3×3 conv, kept for measurement (numba; no torch import).

Per input channel and output pixel, the responses to the n codewords are computed once, and every output channel then
adds the one its kernel index selects. On CPUs with a vector popcount the dense xor-popcount kernel of
:mod:`sparks.runtime.kernels` is faster at every measured shape (docs/benchmarks.md, "Packed kernels"), so
:func:`~sparks.runtime.kernels.choose_binary_kernel` picks dense; this kernel stays for other hardware and for the
comparison.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types

from sparks.runtime.kernels import WORD_BITS, check_conv_args
from sparks.runtime.popcount import ctpop_intrinsic

_popcount16 = ctpop_intrinsic(16, types.int16, types.uint16)  # uint16 -> int16 (VPOPCNTW with AVX512-BITALG)


LUT_MAX_C_IN = 32767 // 9  # int16 partial sums: |out| <= 9 * c_in


@njit(cache=True)
def _patch_codes(xp, stride, m0, n_pix, ho, wo, codes, valid, n_taps):
    """codes[q, ci]: 9-bit sign pattern (bit t ⇔ tap t is +1) of channel ci around output pixel m0 + q (flat NHW);
    valid[q]: in-image taps as a 9-bit mask; n_taps[q]: their count. Pixels q >= n_pix are left all-invalid."""
    _, h, w, n_words = xp.shape
    c_in = codes.shape[1]
    codes[:] = 0
    valid[:] = 0
    n_taps[:] = 0
    for q in range(n_pix):
        m = m0 + q
        b, oy, ox = m // (ho * wo), (m // wo) % ho, m % wo
        for ky in range(3):
            iy = oy * stride - 1 + ky
            if iy < 0 or iy >= h:
                continue
            for kx in range(3):
                ix = ox * stride - 1 + kx
                if ix < 0 or ix >= w:
                    continue
                t = ky * 3 + kx
                valid[q] |= np.uint16(1 << t)
                n_taps[q] += 1
                for k in range(n_words):
                    v = xp[b, iy, ix, k]
                    base = k * WORD_BITS
                    for bit in range(min(WORD_BITS, c_in - base)):
                        codes[q, base + bit] |= np.uint16(((v >> np.uint64(bit)) & np.uint64(1)) << np.uint64(t))


@njit(cache=True, parallel=True)
def _conv_lut(xp, codewords, indices_t, stride, tile):
    n, h, w, _ = xp.shape
    c_in, c_out = indices_t.shape
    n_code = codewords.shape[0]
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    m_total = n * ho * wo
    out = np.empty((m_total, c_out), dtype=np.int32)
    for ti in prange((m_total + tile - 1) // tile):
        m0 = ti * tile
        n_pix = min(tile, m_total - m0)
        codes_qc = np.empty((tile, c_in), dtype=np.uint16)
        valid = np.empty(tile, dtype=np.uint16)
        n_taps = np.empty(tile, dtype=np.int16)
        _patch_codes(xp, stride, m0, n_pix, ho, wo, codes_qc, valid, n_taps)
        codes = np.ascontiguousarray(codes_qc.T)  # built pixel-major (contiguous writes), read channel-major
        table = np.empty((n_code, tile), dtype=np.int16)
        acc = np.zeros((c_out, tile), dtype=np.int16)
        for ci in range(c_in):
            # responses of this channel's patches to the n codewords, once; every output channel then adds a row
            cc = codes[ci]
            for j in range(n_code):
                cwj = codewords[j]
                tj = table[j]
                for q in range(tile):
                    tj[q] = n_taps[q] - 2 * _popcount16((cc[q] ^ cwj) & valid[q])
            idx = indices_t[ci]
            for co in range(c_out):
                row = table[idx[co]]
                arow = acc[co]
                for q in range(tile):
                    arow[q] += row[q]
        for q in range(n_pix):
            for co in range(c_out):
                out[m0 + q, co] = acc[co, q]
    return out.reshape(n, ho, wo, c_out)


def binary_conv3x3_lut(
    xp: np.ndarray, codewords: np.ndarray, indices: np.ndarray, c_in: int, stride: int
) -> np.ndarray:
    """Binary 3×3 conv by codeword reuse: kernel (co, ci) is ``codewords[indices[co, ci]]`` → int32 (N, Ho, Wo, C_out).

    Per tile of output pixels and input channel, the responses to the n codewords are computed once (patch-validity
    aware at borders); every output channel then adds the row its index selects (int16 partial sums, vectorised over
    the tile's pixels).

    Args:
        xp: uint64 (N, H, W, ceil(c_in/64)) from :func:`pack_signs`.
        codewords: (n,) 9-bit codeword indices (SNN convention: bit i ⇔ row-major position i is +1).
        indices: integer (C_out, c_in) into ``codewords``.
        c_in, stride: as :func:`binary_conv3x3`; c_in <= 3640 (int16 partial sums).
    """
    xp = check_conv_args(xp, c_in, stride)
    if c_in > LUT_MAX_C_IN:
        raise ValueError(f"the LUT kernel supports c_in <= {LUT_MAX_C_IN}, got {c_in}; use binary_conv3x3")
    codewords = np.asarray(codewords)
    indices = np.asarray(indices)
    if codewords.ndim != 1 or codewords.size == 0 or codewords.min() < 0 or codewords.max() >= 512:
        raise ValueError(f"codewords must be a non-empty 1-D array of indices in 0..511, got shape {codewords.shape}")
    n_code = codewords.shape[0]
    if indices.ndim != 2 or indices.shape[1] != c_in:
        raise ValueError(f"indices must have shape (C_out, {c_in}), got {indices.shape}")
    if indices.size and (indices.min() < 0 or indices.max() >= n_code):
        raise ValueError(f"indices must lie in 0..{n_code - 1}")
    n, h, w, _ = xp.shape
    m_total = n * ((h - 1) // stride + 1) * ((w - 1) // stride + 1)
    # 128 pixels: the int16 loops vectorise (LLVM's vector body wants >= 128 iterations); fewer for tiny layers
    tile = 128 if m_total > 96 else max(16, -(-m_total // 16) * 16)
    indices_t = np.ascontiguousarray(indices.T, dtype=np.int32)
    return _conv_lut(xp, codewords.astype(np.uint16), indices_t, int(stride), tile)
