"""Bit streams and codewords of the ``.sparks`` format: packing τ-bit indices, decoding 9-bit codewords (no torch).

Unpacking works in chunks and returns ``uint16`` values, so decoding a layer costs a few bytes per kernel index
instead of the 8·bits-byte int64 intermediate a one-shot unpack would make (docs/format.md, *Bit streams*).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparks.errors import SparksFormatError

CODE_BITS = 9  # a codeword is its 9-bit index (bit i = row-major position i is +1)
FULL_CODEBOOK = 1 << CODE_BITS  # n = 512: every codeword, stored implicitly in index order
_CHUNK = 1 << 18  # values unpacked per step (a multiple of 8, so every chunk starts on a byte)
# the ±1 kernel of every codeword, float32 (512, 3, 3)
_KERNELS = (2.0 * ((np.arange(FULL_CODEBOOK)[:, None] >> np.arange(CODE_BITS)) & 1) - 1.0).astype(
    np.float32).reshape(FULL_CODEBOOK, 3, 3)


def index_bits(n: int) -> int:
    """Bits per stored index into n codewords: ⌈log2 n⌉, at least 1."""
    return max(1, (int(n) - 1).bit_length())


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes holding ``count`` values of ``bits`` bits each."""
    return (count * bits + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative ints → uint8 stream; value k occupies stream bits [k·bits, (k+1)·bits), least significant bit
    first, and stream bit m is bit (m mod 8) of byte m // 8 (little-endian bit order)."""
    values = np.asarray(values).ravel()
    if values.size and (values.min() < 0 or values.max() >= (1 << bits)):
        raise ValueError(f"values must be in 0..{(1 << bits) - 1} to pack in {bits} bits")
    out = np.empty(packed_nbytes(values.size, bits), dtype=np.uint8)
    shifts = np.arange(bits, dtype=np.int64)
    for start in range(0, values.size, _CHUNK):
        chunk = values[start:start + _CHUNK].astype(np.int64)
        packed = np.packbits(((chunk[:, None] >> shifts) & 1).astype(np.uint8).ravel(), bitorder="little")
        first = start * bits // 8
        out[first:first + packed.size] = packed
    return out


def unpack_bits(data: np.ndarray, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` → uint16 (count,), for ``bits`` ≤ 16; memory: the output plus one chunk."""
    if data.dtype != np.uint8 or data.ndim != 1 or data.size != packed_nbytes(count, bits) or not 1 <= bits <= 16:
        raise SparksFormatError(f"packed stream of {data.size} bytes cannot hold {count} values of {bits} bits")
    out = np.empty(count, dtype=np.uint16)
    weights = (np.uint16(1) << np.arange(bits, dtype=np.uint16))
    for start in range(0, count, _CHUNK):
        n = min(_CHUNK, count - start)
        first = start * bits // 8
        raw = data[first:first + packed_nbytes(n, bits)]
        stream = np.unpackbits(raw, count=n * bits, bitorder="little").reshape(n, bits)
        out[start:start + n] = (stream * weights).sum(axis=1, dtype=np.uint16)
    return out


def codeword_to_kernel(codes: np.ndarray) -> np.ndarray:
    """9-bit codeword indices (...) → ±1 float32 kernels (..., 3, 3) (bit i set ⇔ row-major position i is +1)."""
    codes = np.asarray(codes)
    return _KERNELS[codes.astype(np.intp, copy=False) if codes.dtype.kind not in "iu" else codes]


def decode_subbit(op: dict[str, Any], tensors: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Sub-codebook and kernel indices of a validated ``subbit_conv2d`` op → (codes int64 (n,), indices uint16
    (C_out, C_in)). With n = 512 the codebook is implicit: every codeword in index order."""
    name, n = op["name"], op["n"]
    if n == FULL_CODEBOOK:
        codes = np.arange(FULL_CODEBOOK, dtype=np.int64)
    else:
        codes = unpack_bits(tensors[f"{name}.codebook"], n, CODE_BITS).astype(np.int64)
    idx = unpack_bits(tensors[f"{name}.indices"], op["out_channels"] * op["in_channels"], index_bits(n))
    return codes, idx.reshape(op["out_channels"], op["in_channels"])
