"""The packed CPU engine: runs a validated ``.sparks`` layer table with numpy and the numba bit kernels (no torch).

Activations are NHWC float32. A sub-bit conv packs the signs of its input 64 channels to a word, runs the dense
(xor-popcount) or codeword-reuse (LUT) kernel chosen by :func:`~sparks.runtime.kernels.choose_binary_kernel`, and
applies α — fused with the BN right after it (scale = α·γ/σ, shift = β − γμ/σ) — in the kernel's output transform.
Real layers (stem, 1×1 shortcuts, FC) are float32 im2col/matmul; pooling and elementwise ops follow torch's order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numba import njit, prange
from numpy.lib.stride_tricks import sliding_window_view

from sparks.deploy.format import codeword_to_kernel, decode_subbit, validate
from sparks.runtime import kernels, lut


@dataclass
class BinaryLayer:
    """One sub-bit conv of the plan, with its packed weights and the fused output transform."""

    name: str
    c_in: int
    c_out: int
    stride: int
    n: int
    wp: np.ndarray  # uint64 (C_out, 3, 3, words) for the dense kernel
    codes: np.ndarray  # uint16 (n,) 9-bit codewords for the LUT kernel
    indices: np.ndarray  # int32 (C_out, C_in)
    scale: np.ndarray  # float32 (C_out,)
    shift: np.ndarray  # float32 (C_out,)
    input_hw: tuple[int, int] | None = field(default=None)  # spatial size of the last input seen
    prepared: Any = field(default=None, repr=False)  # the dense kernel's weight layout, made once

    def __post_init__(self) -> None:
        self.prepared = kernels.prepare_kernels(self.wp, self.c_in)

    def __call__(self, x: np.ndarray, kernel: str | None = None) -> np.ndarray:
        _, h, w, _ = x.shape
        self.input_hw = (h, w)
        xp = kernels.pack_signs(x)
        kernel = kernel or kernels.choose_binary_kernel(self.c_in, self.c_out, h, w, self.n)
        if kernel == "lut":
            acc = lut.binary_conv3x3_lut(xp, self.codes, self.indices, self.c_in, self.stride)
            return acc.astype(np.float32) * self.scale + self.shift
        return kernels.binary_conv3x3_fused(xp, self.prepared, self.c_in, self.stride, self.scale, self.shift)


@njit(cache=True, parallel=True)
def _rprelu(x, other, s_in, w, s_out):  # pragma: no cover - compiled
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


_NO_OTHER = np.zeros((0, 0), dtype=np.float32)


def _matmul_py(a, wt):  # pragma: no cover - compiled twice below
    """a (R, K) @ wt (K, O) in float32, summing over k in order; vectorised over O, rows in parallel."""
    rows, k_dim = a.shape
    n_out = wt.shape[1]
    out = np.zeros((rows, n_out), dtype=np.float32)
    for r in prange(rows):
        for k in range(k_dim):
            v = a[r, k]
            for o in range(n_out):
                out[r, o] += v * wt[k, o]
    return out


_matmul_parallel = njit(cache=True, parallel=True)(_matmul_py)
_matmul_serial = njit(cache=True)(_matmul_py)
_PARALLEL_MACS = 1 << 22  # below this, waking worker threads costs more than it saves


def matmul(a: np.ndarray, wt: np.ndarray) -> np.ndarray:
    """``a @ wt`` for the real layers, in numba (its threads follow ``numba.set_num_threads``; numpy's BLAS would
    start its own thread pool, which spins badly on a shared machine)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    fn = _matmul_parallel if a.size * wt.shape[1] >= _PARALLEL_MACS else _matmul_serial
    return fn(a, np.ascontiguousarray(wt, dtype=np.float32))


def rprelu_nhwc(
    x: np.ndarray, s_in: np.ndarray, w: np.ndarray, s_out: np.ndarray, other: np.ndarray | None = None
) -> np.ndarray:
    """RPReLU (shift, PReLU, shift) of NHWC ``x`` (+ ``other`` first: the residual add fused in)."""
    c = x.shape[-1]
    flat = np.ascontiguousarray(x).reshape(-1, c)
    extra = _NO_OTHER if other is None else np.ascontiguousarray(other).reshape(-1, c)
    return _rprelu(flat, extra, s_in, w, s_out).reshape(x.shape)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def conv2d_nhwc(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, stride: tuple[int, int], padding: tuple[int, int]
) -> np.ndarray:
    """Real conv (zero padding) of NHWC ``x`` with torch-layout weights (C_out, C_in, kh, kw), by im2col + matmul."""
    c_out, c_in, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    if ph or pw:
        x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    n = x.shape[0]
    if kh == kw == 1:
        cols = x[:, ::sh, ::sw, :]
        ho, wo = cols.shape[1:3]
        out = matmul(cols.reshape(-1, c_in), w.reshape(c_out, c_in).T)
    else:
        win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::sh, ::sw]  # (N, Ho, Wo, C, kh, kw)
        ho, wo = win.shape[1:3]
        out = matmul(win.reshape(-1, c_in * kh * kw), w.reshape(c_out, -1).T)
    out = out.reshape(n, ho, wo, c_out)
    return out + bias if bias is not None else out


def _pool_out(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    span = size + 2 * p - k
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
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


class PackedModel:
    """A ``.sparks`` model on the packed engine: ``model(images)`` → logits ndarray (N, num_classes).

    Args:
        metadata, tensors: the output of :func:`sparks.format.read_sparks` (validated again here).
        fuse_bn: fold a BN that directly follows a sub-bit conv into its output transform.
        limits: the :class:`sparks.limits.Limits` the file was read with (defaults otherwise).
    """

    def __init__(self, metadata: dict[str, Any], tensors: dict[str, np.ndarray], fuse_bn: bool = True,
                 limits: Any = None) -> None:
        validate(metadata, tensors, limits)
        self.metadata = metadata
        self.num_classes = metadata["num_classes"]
        inp = metadata["input"]
        self.input_shape = (inp["channels"], inp["height"], inp["width"])
        self.binary_layers: list[BinaryLayer] = []
        self._plan: list[tuple[Callable[..., np.ndarray], list[str], str]] = []
        ops = metadata["ops"]
        uses = Counter(v for op in ops for v in op["inputs"])
        skip = set()
        for i, op in enumerate(ops):
            if i in skip:
                continue
            nxt = ops[i + 1] if i + 1 < len(ops) else None
            fuse = (
                fuse_bn
                and op["op"] == "subbit_conv2d"
                and nxt is not None
                and nxt["op"] == "batchnorm"
                and nxt["inputs"] == [op["output"]]
                and uses[op["output"]] == 1
            )
            add_act = (
                op["op"] == "add"
                and nxt is not None
                and nxt["op"] in ("rprelu", "prelu")
                and nxt["inputs"] == [op["output"]]
                and uses[op["output"]] == 1
            )
            if fuse:
                skip.add(i + 1)
                fn = self._subbit(op, tensors, nxt)
                self._plan.append((fn, op["inputs"], nxt["output"]))
            elif add_act:  # residual add fused into the activation that consumes it
                skip.add(i + 1)
                self._plan.append((self._op(nxt, tensors), op["inputs"], nxt["output"]))
            else:
                self._plan.append((self._op(op, tensors), op["inputs"], op["output"]))
        self.output = ops[-1]["output"]
        # free each value after its last use, so a batch holds only the live activations
        last = {v: i for i, (_, inputs, _) in enumerate(self._plan) for v in inputs}
        self._free = [[v for v in dict.fromkeys(inputs) if last[v] == i and v != self.output]
                      for i, (_, inputs, _) in enumerate(self._plan)]

    def _subbit(self, op: dict[str, Any], tensors: dict[str, np.ndarray], bn: dict[str, Any] | None) -> BinaryLayer:
        name = op["name"]
        codes, idx = decode_subbit(op, tensors)
        alpha = _f32(tensors[f"{name}.alpha"])
        bias = _f32(tensors[f"{name}.bias"]) if op["bias"] else np.zeros_like(alpha)
        scale, shift = alpha, bias
        if bn is not None:
            s, t = _f32(tensors[f"{bn['name']}.scale"]), _f32(tensors[f"{bn['name']}.shift"])
            scale, shift = alpha * s, bias * s + t
        layer = BinaryLayer(
            name,
            op["in_channels"],
            op["out_channels"],
            op["stride"],
            op["n"],
            wp=kernels.pack_kernels(codeword_to_kernel(codes[idx])),
            codes=codes.astype(np.uint16),
            indices=idx.astype(np.int32),
            scale=_f32(scale),
            shift=_f32(shift),
        )
        self.binary_layers.append(layer)
        return layer

    def _op(self, op: dict[str, Any], tensors: dict[str, np.ndarray]) -> Callable[..., np.ndarray]:
        kind, name = op["op"], op["name"]

        def t(key: str) -> np.ndarray:
            return _f32(tensors[f"{name}.{key}"])

        if kind == "subbit_conv2d":
            return self._subbit(op, tensors, None)
        if kind == "conv2d":
            w, b = t("weight"), t("bias") if op["bias"] else None
            return lambda x: conv2d_nhwc(x, w, b, op["stride"], op["padding"])
        if kind == "batchnorm":
            s, sh = t("scale"), t("shift")
            return lambda x: x * s + sh
        if kind == "bias":
            b = t("bias")
            return lambda x: x + b
        if kind in ("prelu", "rprelu"):
            w = t("weight")
            zeros = np.zeros(op["channels"], np.float32)
            s_in, s_out = (t("shift_in"), t("shift_out")) if kind == "rprelu" else (zeros, zeros)
            return lambda x, other=None: rprelu_nhwc(x, s_in, w, s_out, other)
        if kind == "relu":
            return lambda x: np.maximum(x, np.float32(0))
        if kind == "sign":
            return lambda x: np.where(x >= 0, np.float32(1), np.float32(-1))
        if kind == "add":
            return lambda a, b: a + b
        if kind in ("avgpool2d", "maxpool2d"):
            pool = "avg" if kind == "avgpool2d" else "max"
            return lambda x: pool2d_nhwc(
                x, pool, op["kernel"], op["stride"], op["padding"], op["ceil_mode"], op.get("count_include_pad", True)
            )
        if kind == "global_avgpool":
            return global_avgpool
        if kind == "flatten":
            return lambda x: x if x.ndim == 2 else np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), -1)
        if kind == "linear":
            w, b = t("weight"), t("bias") if op["bias"] else None
            return lambda x: matmul(x, w.T) + b if b is not None else matmul(x, w.T)
        raise ValueError(f"unknown op {kind!r}")  # unreachable after validate()

    def __call__(self, images: Any) -> np.ndarray:
        """Logits (N, num_classes) float32 for float NCHW images (ndarray or tensor; a 3-D image is batch 1)."""
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != self.input_shape[0] or min(x.shape) == 0:
            raise ValueError(f"expected images of shape (N, {self.input_shape[0]}, H, W), got {x.shape}")
        values = {"input": np.ascontiguousarray(x.transpose(0, 2, 3, 1))}
        for (fn, inputs, output), dead in zip(self._plan, self._free, strict=True):
            values[output] = fn(*(values[v] for v in inputs))
            for v in dead:
                del values[v]
        return values[self.output]

    def predict(self, images: Any) -> np.ndarray:
        """Class index per image."""
        return self(images).argmax(axis=1)
