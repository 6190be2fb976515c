"""Real-valued NHWC ops of the packed engine (numpy + numba, no torch): convs by im2col + matmul, pooling, RPReLU.

Each follows torch's float32 order of operations (sums in order, no FMA), so results match the torch rebuild up to
the summation order of oneDNN's convolutions (see docs/benchmarks.md, parity).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sparks.runtime.builds import parallel_and_serial

__all__ = ["matmul", "conv_matrix", "conv2d_nhwc", "rprelu_nhwc", "pool2d_nhwc", "global_avgpool", "PARALLEL_MIN_WORK"]


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


def _matmul_py(a, wt, bias, scale, shift):  # pragma: no cover - compiled twice below
    """a (R, K) @ wt (K, O) in float32, summing over k in order from 0 (no FMA), then ``+ bias`` and ``·scale +
    shift`` if given (a following BN), each one rounding. Register tiles of 4 rows share each weight row load."""
    rows, k_dim = a.shape
    n_out = wt.shape[1]
    out = np.empty((rows, n_out), dtype=np.float32)
    has_bias = bias.shape[0] == n_out
    has_affine = scale.shape[0] == n_out
    for rb in prange((rows + 3) // 4):
        r0 = rb * 4
        nr = min(4, rows - r0)
        acc = np.zeros((4, n_out), dtype=np.float32)
        if nr == 4:
            a0, a1, a2, a3 = a[r0], a[r0 + 1], a[r0 + 2], a[r0 + 3]
            acc0, acc1, acc2, acc3 = acc[0], acc[1], acc[2], acc[3]
            k = 0
            while k + 4 <= k_dim:  # four k per accumulator load/store, still added one after another
                wa, wb, wc, wd = wt[k], wt[k + 1], wt[k + 2], wt[k + 3]
                p0, p1, p2, p3 = a0[k], a0[k + 1], a0[k + 2], a0[k + 3]
                q0, q1, q2, q3 = a1[k], a1[k + 1], a1[k + 2], a1[k + 3]
                r0_, r1, r2, r3 = a2[k], a2[k + 1], a2[k + 2], a2[k + 3]
                s0, s1, s2, s3 = a3[k], a3[k + 1], a3[k + 2], a3[k + 3]
                for o in range(n_out):
                    w0, w1, w2, w3 = wa[o], wb[o], wc[o], wd[o]
                    acc0[o] = (((acc0[o] + p0 * w0) + p1 * w1) + p2 * w2) + p3 * w3
                    acc1[o] = (((acc1[o] + q0 * w0) + q1 * w1) + q2 * w2) + q3 * w3
                    acc2[o] = (((acc2[o] + r0_ * w0) + r1 * w1) + r2 * w2) + r3 * w3
                    acc3[o] = (((acc3[o] + s0 * w0) + s1 * w1) + s2 * w2) + s3 * w3
                k += 4
            while k < k_dim:
                v0, v1, v2, v3 = a0[k], a1[k], a2[k], a3[k]
                wk = wt[k]
                for o in range(n_out):
                    w = wk[o]
                    acc0[o] += v0 * w
                    acc1[o] += v1 * w
                    acc2[o] += v2 * w
                    acc3[o] += v3 * w
                k += 1
        else:
            for j in range(nr):
                aj, accj = a[r0 + j], acc[j]
                for k in range(k_dim):
                    v, wk = aj[k], wt[k]
                    for o in range(n_out):
                        accj[o] += v * wk[o]
        for j in range(nr):
            accj, oj = acc[j], out[r0 + j]
            for o in range(n_out):
                v = accj[o]
                if has_bias:
                    v = v + bias[o]
                if has_affine:
                    v = v * scale[o] + shift[o]
                oj[o] = v
    return out


_matmul_parallel, _matmul_serial = parallel_and_serial(_matmul_py)
# multiply-adds below which a matmul runs on one thread, and values below which an RPReLU does: measured on the 2-vCPU
# test machine, 2 threads lost up to 34M multiply-adds (1.36x slower) and won at 134M (2.0x faster); the RPReLU lost at
# 1M values (1.9x) and won at 4.2M (docs/benchmarks.md, third session)
PARALLEL_MIN_WORK = 1 << 26
RPRELU_PARALLEL_MIN_VALUES = 1 << 22
_NONE = np.zeros(0, dtype=np.float32)


def matmul(a: np.ndarray, wt: np.ndarray, bias: np.ndarray | None = None,
           affine: tuple[np.ndarray, np.ndarray] | None = None, parallel: bool = True) -> np.ndarray:
    """``a @ wt (+ bias) (·scale + shift)`` for the real layers, in numba (its threads follow
    ``numba.set_num_threads``; numpy's BLAS would start its own thread pool, which spins badly on a shared machine).
    Small products run serially whatever ``parallel`` says."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    wt = np.ascontiguousarray(wt, dtype=np.float32)
    parallel = parallel and a.size * wt.shape[1] >= PARALLEL_MIN_WORK
    fn = _matmul_parallel if parallel else _matmul_serial
    scale, shift = affine if affine is not None else (_NONE, _NONE)
    return fn(a, wt, _NONE if bias is None else bias, scale, shift)


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
    affine: tuple[np.ndarray, np.ndarray] | None = None, parallel: bool = True, wt: np.ndarray | None = None,
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
        cols = x[:, ::sh, ::sw, :]
        ho, wo = cols.shape[1:3]
        out = matmul(cols.reshape(-1, c_in), wt, bias, affine, parallel)
    else:
        ho, wo = (h + 2 * ph - kh) // sh + 1, (w_in + 2 * pw - kw) // sw + 1
        cols = _im2col(np.ascontiguousarray(x, dtype=np.float32), kh, kw, sh, sw, ph, pw, ho, wo)
        out = matmul(cols, wt, bias, affine, parallel)
    return out.reshape(n, ho, wo, c_out)


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
