"""Real-valued NHWC ops of the packed engine (numpy + numba, no torch): convs by im2col + matmul, pooling, RPReLU.

Matrix products are numpy's BLAS sgemm, one call per image (so that a row's bits never depend on the batch it came
in); like oneDNN's convolutions in torch they block the sum over k and use FMA, but not in oneDNN's order, so results
match the torch rebuild up to float32 rounding (docs/benchmarks.md, parity). The element-wise steps (bias, BN,
residual, RPReLU, pooling) keep torch's float32 order of operations exactly (no FMA).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sparks.runtime.builds import parallel_and_serial

__all__ = ["matmul", "linear", "conv_matrix", "conv2d_nhwc", "rprelu_nhwc", "pool2d_nhwc", "global_avgpool"]


def _rprelu_py(x, other, s_in, w, s_out):  # pragma: no cover - compiled twice below
    """(x [+ other]) + s_in → PReLU(w) → + s_out over (rows, C) in float32, in torch's order; ``other`` may be empty."""
    rows, c = x.shape
    out = np.empty_like(x)
    fused = other.shape[0] == rows
    wc = w.shape[0] == c
    for r in prange(rows):
        for j in range(c):
            v = x[r, j]
            if fused:
                v = v + other[r, j]
            v = v + s_in[j]
            slope = w[j] if wc else w[0]
            out[r, j] = (v if v > 0 else slope * v) + s_out[j]
    return out


_rprelu, _rprelu_serial = parallel_and_serial(_rprelu_py)
_NO_OTHER = np.zeros((0, 0), dtype=np.float32)


@njit(cache=True, nogil=True)
def _bias_affine(out, bias, scale, shift):  # pragma: no cover - compiled
    """In place over (rows, O): ``+ bias`` and then ``·scale + shift`` where given (a following BN), each one float32
    rounding as in torch (no FMA)."""
    rows, n_out = out.shape
    has_bias = bias.shape[0] == n_out
    has_affine = scale.shape[0] == n_out
    for r in range(rows):
        o_r = out[r]
        for o in range(n_out):
            v = o_r[o]
            if has_bias:
                v = v + bias[o]
            if has_affine:
                v = v * scale[o] + shift[o]
            o_r[o] = v


# RPReLU values below which it runs on one thread: measured on the 2-vCPU test machine, 2 threads lost at 1M values
# (1.9x slower) and won at 4.2M (docs/benchmarks.md, third session)
RPRELU_PARALLEL_MIN_VALUES = 1 << 22
_NONE = np.zeros(0, dtype=np.float32)


def matmul(a: np.ndarray, wt: np.ndarray, bias: np.ndarray | None = None,
           affine: tuple[np.ndarray, np.ndarray] | None = None, rows_per_call: int | None = None) -> np.ndarray:
    """``a @ wt (+ bias) (·scale + shift)`` for the real layers: the product by numpy's BLAS (sgemm) in calls of
    exactly ``rows_per_call`` rows (all rows if None; a short last block is padded with zero rows). BLAS picks its
    kernel, and so its summation order, by the matrix shape (OpenBLAS: one row takes gemv, a small product a kernel
    that sums all of k at once), so the engine passes a fixed block (one image's pixels; 8 rows for a linear layer):
    every image then gets the same bits at any batch size, chunk or thread count. BLAS's own threads are the caller's
    business (the engine runs with :func:`~sparks.runtime.threads.single_threaded_blas`)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    wt = np.ascontiguousarray(wt, dtype=np.float32)
    rows = a.shape[0]
    step = rows_per_call or max(rows, 1)
    out = np.empty((rows, wt.shape[1]), dtype=np.float32)
    full = rows - rows % step
    for r0 in range(0, full, step):
        np.matmul(a[r0:r0 + step], wt, out=out[r0:r0 + step])
    if full < rows:
        block = np.zeros((step, a.shape[1]), dtype=np.float32)
        block[: rows - full] = a[full:]
        out[full:] = (block @ wt)[: rows - full]
    if bias is not None or affine is not None:
        scale, shift = affine if affine is not None else (_NONE, _NONE)
        _bias_affine(out, _NONE if bias is None else bias, scale, shift)
    return out


# a linear layer's BLAS calls take this many rows (images) each, the last padded: one call shape at every batch size
LINEAR_ROWS_PER_CALL = 8


def linear(x: np.ndarray, wt: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """A linear layer on (N, F) ``x`` with (F, O) ``wt``: :func:`matmul` in calls of :data:`LINEAR_ROWS_PER_CALL`
    rows."""
    return matmul(x, wt, bias, None, LINEAR_ROWS_PER_CALL)


def rprelu_nhwc(
    x: np.ndarray, s_in: np.ndarray, w: np.ndarray, s_out: np.ndarray, other: np.ndarray | None = None,
    parallel: bool = True,
) -> np.ndarray:
    """RPReLU (shift, PReLU, shift) of NHWC ``x`` (+ ``other`` first: the residual add fused in)."""
    c = x.shape[-1]
    flat = np.ascontiguousarray(x).reshape(-1, c)
    extra = _NO_OTHER if other is None else np.ascontiguousarray(other).reshape(-1, c)
    fn = _rprelu if parallel and flat.size >= RPRELU_PARALLEL_MIN_VALUES else _rprelu_serial
    return fn(flat, extra, s_in, w, s_out).reshape(x.shape)


def conv_matrix(w: np.ndarray) -> np.ndarray:
    """Torch-layout conv weights (C_out, C_in, kh, kw) → the (C_in·kh·kw, C_out) float32 matrix the matmul takes."""
    return np.ascontiguousarray(w.reshape(w.shape[0], -1).T, dtype=np.float32)


@njit(cache=True, nogil=True)
def _im2col(x, kh, kw, sh, sw, ph, pw, ho, wo):  # pragma: no cover - compiled
    """(N, H, W, C) → (N·Ho·Wo, C·kh·kw) windows in torch's weight order (c, ky, kx); taps outside the image (the
    zero padding ph, pw) read 0, so the input is never copied into a padded array."""
    n, h, w, c = x.shape
    cols = np.empty((n * ho * wo, c * kh * kw), dtype=np.float32)
    r = 0
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                row = cols[r]
                for i in range(kh):
                    iy = oy * sh - ph + i
                    for j in range(kw):
                        ix = ox * sw - pw + j
                        inside = 0 <= iy < h and 0 <= ix < w
                        for ch in range(c):
                            row[(ch * kh + i) * kw + j] = x[b, iy, ix, ch] if inside else np.float32(0)
                r += 1
    return cols


def conv2d_nhwc(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int], padding: tuple[int, int],
    affine: tuple[np.ndarray, np.ndarray] | None = None, wt: np.ndarray | None = None,
) -> np.ndarray:
    """Real conv (zero padding) of NHWC ``x`` with torch-layout weights (C_out, C_in, kh, kw), by im2col + matmul;
    ``affine`` = (scale, shift) of a BN that follows, applied in the matmul's epilogue; ``wt``: :func:`conv_matrix`
    of ``w``, made once by a caller that runs the conv many times."""
    c_out, c_in, kh, kw = w.shape
    if wt is None:
        wt = conv_matrix(w)
    (sh, sw), (ph, pw) = stride, padding
    n, h, w_in = x.shape[:3]
    if kh == kw == 1 and ph == pw == 0:
        picked = x[:, ::sh, ::sw, :]
        ho, wo = picked.shape[1:3]
        cols = picked.reshape(-1, c_in)
    else:
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w_in + 2 * pw - kw) // sw + 1
        cols = _im2col(np.ascontiguousarray(x, dtype=np.float32), kh, kw, sh, sw, ph, pw, ho, wo)
    return matmul(cols, wt, bias, affine, ho * wo).reshape(n, ho, wo, c_out)


def _pool_out(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    span = size + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


@njit(cache=True, nogil=True)
def _avgpool_inside(x, kh, kw, sh, sw, ho, wo):  # pragma: no cover - compiled
    """Average pool whose windows all lie inside the input (no padding): the fast path of :func:`pool2d_nhwc`,
    summing in torch's (row, column) order and dividing by kh·kw."""
    n, _, _, c = x.shape
    out = np.empty((n, ho, wo, c), dtype=np.float32)
    count = np.float32(kh * kw)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                o = out[b, oy, ox]
                o[:] = x[b, oy * sh, ox * sw]
                for i in range(kh):
                    for j in range(kw):
                        if i or j:
                            t = x[b, oy * sh + i, ox * sw + j]
                            for ch in range(c):
                                o[ch] = o[ch] + t[ch]
                for ch in range(c):
                    o[ch] = o[ch] / count
    return out


def pool2d_nhwc(
    x: np.ndarray,
    kind: str,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    ceil_mode: bool,
    count_include_pad: bool = True,
) -> np.ndarray:
    """torch's AvgPool2d / MaxPool2d on NHWC, summing the window in torch's (row, column) order."""
    n, h, w, c = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    ho, wo = _pool_out(h, kh, sh, ph, ceil_mode), _pool_out(w, kw, sw, pw, ceil_mode)
    if kind == "avg" and ph == pw == 0 and (ho - 1) * sh + kh <= h and (wo - 1) * sw + kw <= w:
        return _avgpool_inside(np.ascontiguousarray(x, dtype=np.float32), kh, kw, sh, sw, ho, wo)
    # pad so that every window lies inside: left by p, right up to the last window's end
    pad_h, pad_w = max(0, (ho - 1) * sh + kh - h - ph), max(0, (wo - 1) * sw + kw - w - pw)
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (ph, pad_h), (pw, pad_w), (0, 0)), constant_values=fill)
    acc = None
    for i in range(kh):
        for j in range(kw):
            tap = xp[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
            acc = tap.copy() if acc is None else (np.maximum(acc, tap) if kind == "max" else acc + tap)
    if kind == "max":
        return acc
    starts_h, starts_w = np.arange(ho) * sh - ph, np.arange(wo) * sw - pw
    if count_include_pad:  # torch: the window clipped to the padded input
        cnt_h = np.minimum(starts_h + kh, h + ph) - starts_h
        cnt_w = np.minimum(starts_w + kw, w + pw) - starts_w
    else:
        cnt_h = np.minimum(starts_h + kh, h) - np.maximum(starts_h, 0)
        cnt_w = np.minimum(starts_w + kw, w) - np.maximum(starts_w, 0)
    count = (cnt_h[:, None] * cnt_w[None, :]).astype(np.float32)
    return acc / count[None, :, :, None]


def global_avgpool(x: np.ndarray) -> np.ndarray:
    """Mean over H×W, summed sequentially in float32 (as torch's CPU kernel does) → (N, 1, 1, C)."""
    n, h, w, c = x.shape
    flat = x.reshape(n, h * w, c)
    acc = flat[:, 0].copy()
    for i in range(1, h * w):
        acc += flat[:, i]
    return (acc / np.float32(h * w)).reshape(n, 1, 1, c)
