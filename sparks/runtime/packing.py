"""Sign packing for the packed runtime (numpy + numba, no torch): activations and ±1 kernels → uint64 words.

Bit ``c % 64`` of word ``c // 64`` is channel c (x >= 0, or weight +1); pad bits of the last word are 0.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from sparks.runtime.builds import parallel_and_serial

__all__ = ["WORD_BITS", "num_words", "pack_signs", "pack_kernels"]

WORD_BITS = 64
_EMPTY_F32 = np.zeros(0, dtype=np.float32)


def num_words(c: int) -> int:
    """uint64 words per pixel for c channels."""
    return (c + WORD_BITS - 1) // WORD_BITS


def _pack_signs_py(x, bias, n_words):
    """Bit c % 64 of word c // 64 is (x + bias[c] >= 0) (float32 add, as torch's LearnableBias then sign), or
    x >= 0 when ``bias`` is empty. Compiled parallel and serial below."""
    n, h, w, c = x.shape
    shifted = bias.shape[0] == c
    out = np.zeros((n, h, w, n_words), dtype=np.uint64)
    for r in prange(n * h):
        b, y = r // h, r % h
        for xx in range(w):
            px = x[b, y, xx]
            for k in range(n_words):
                word = np.uint64(0)
                for bit in range(min(WORD_BITS, c - k * WORD_BITS)):
                    v = px[k * WORD_BITS + bit]
                    if shifted:
                        v = v + bias[k * WORD_BITS + bit]
                    if v >= 0:
                        word |= np.uint64(1) << np.uint64(bit)
                out[b, y, xx, k] = word
    return out


_pack_signs, _pack_signs_serial = parallel_and_serial(_pack_signs_py)


def pack_signs(x: np.ndarray, bias: np.ndarray | None = None, parallel: bool = True) -> np.ndarray:
    """Pack the signs of NHWC activations: float32 (N, H, W, C) → uint64 (N, H, W, ceil(C/64)), bit set iff x >= 0
    (iff x + bias >= 0 in float32 when a per-channel ``bias`` is given: a LearnableBias fused into the packing).
    ``parallel=False`` runs on the calling thread only."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"pack_signs expects an (N, H, W, C) array, got shape {x.shape}")
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    b = _EMPTY_F32 if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    if bias is not None and b.shape != (x.shape[3],):
        raise ValueError(f"bias must have shape ({x.shape[3]},), got {b.shape}")
    fn = _pack_signs if parallel else _pack_signs_serial
    return fn(np.ascontiguousarray(x), b, num_words(x.shape[3]))


def pack_kernels(w_pm1: np.ndarray) -> np.ndarray:
    """Pack ±1 kernels (C_out, C_in, 3, 3) → uint64 (C_out, 3, 3, ceil(C_in/64)), bit set iff the weight is +1."""
    w = np.asarray(w_pm1)
    if w.ndim != 4 or w.shape[2:] != (3, 3):
        raise ValueError(f"pack_kernels expects ±1 kernels of shape (C_out, C_in, 3, 3), got {w.shape}")
    if not np.all(np.abs(w) == 1):
        raise ValueError("pack_kernels expects every weight to be exactly +1 or -1")
    c_out, c_in = w.shape[:2]
    n_words = num_words(c_in)
    bits = np.zeros((c_out, 3, 3, n_words * WORD_BITS), dtype=np.uint8)
    bits[..., :c_in] = (w > 0).transpose(0, 2, 3, 1)
    # little bit order: byte j of a little-endian uint64 holds bits 8j..8j+7
    packed = np.packbits(bits, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64).reshape(c_out, 3, 3, n_words)
