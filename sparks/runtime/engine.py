"""The packed CPU engine: runs a validated ``.sparks`` layer table with numpy and the numba bit kernels (no torch).

Activations are NHWC float32. A sub-bit conv packs the signs of its input 64 channels to a word — adding the
LearnableBias before it in the same pass — runs the dense (xor-popcount) or codeword-reuse (LUT) kernel chosen by
:func:`~sparks.runtime.kernels.choose_binary_kernel`, and applies α fused with the BN right after it (scale = α·γ/σ,
shift = β − γμ/σ), the residual add and the RPReLU that follow in the kernel's output transform. Real layers (stem,
1×1 shortcuts, FC) are float32 im2col + BLAS matmul, one call shape per image, with a following BN in the epilogue;
every fused step keeps torch's float32 order, so fusing changes no bit. Threads: ``threads="auto"`` (affinity and
cgroup quota) or a fixed count.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from sparks.deploy.format import codeword_to_kernel, decode_subbit, validate
from sparks.runtime import kernels, lut
from sparks.runtime.realops import conv2d_nhwc, conv_matrix, global_avgpool, linear, pool2d_nhwc, rprelu_nhwc
from sparks.runtime.threads import resolve_threads, select_threading_layer, single_threaded_blas, use_threads

__all__ = ["PackedModel", "BinaryLayer", "conv2d_nhwc", "global_avgpool", "pool2d_nhwc", "rprelu_nhwc"]

# Intra-op threads (numba's parallel builds) only for work far beyond resnet18_cifar's: on the 2-vCPU test machine 2
# threads lost to the serial build up to 9.4M bit words (binary conv) and 8.4M values (packing); each launch wakes the
# workers (~0.1-0.2 ms). Below these sizes kernels run serially; batches of >= BATCH_SPLIT_MIN images per thread are
# split by image instead (docs/benchmarks.md, third session, has the measurements of these constants). With a
# CPU-bound competitor, short splits lose to 1 thread: 2 threads 1.14-1.15x slower at 1 image per thread, 1.09-1.13x
# at 2, 1.05-1.07x at 3 (fourth session): the thread sharing its core with the competitor finishes last.
BINARY_PARALLEL_MIN_WORDS = 1 << 24
PACK_PARALLEL_MIN_VALUES = 1 << 24
BATCH_SPLIT_MIN = 3
# one thread runs larger batches in chunks of this many images, so that a layer's activations stay in L2 (batch 32:
# 1.59-1.60 ms CPU per image in chunks of 8 against 1.76-1.81 for the whole batch at once)
CHUNK_IMAGES = 8
# chunks per thread of a split batch (more if one would exceed CHUNK_IMAGES): larger run faster, more balance better;
# batch 8 on 2 threads vs 1, 1/2/4 per thread: 1.44/1.35/1.21x quiet, 0.94/0.90/0.84x with a CPU-bound competitor
CHUNKS_PER_THREAD = 1
# numba's workqueue layer must not be entered by two threads at once: the engine's intra-op parallel runs take this
INTRA_OP_LOCK = threading.Lock()
_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n`` helper threads for batch splitting (made once per size)."""
    if n not in _POOLS:
        _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="sparks-runtime")
    return _POOLS[n]


@dataclass
class BinaryLayer:
    """One sub-bit conv of the plan, with its packed weights and the fused output transform.

    ``in_shift``: a LearnableBias added before the sign (fused into the packing); ``act``: (s_in, slope, s_out) of an
    RPReLU after the (BN-folded) conv and an optional residual (``residual=True``: the call takes it as 2nd input).
    """

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
    in_shift: np.ndarray | None = None  # float32 (C_in,)
    act: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    residual: bool = False
    input_hw: tuple[int, int] | None = field(default=None)  # spatial size of the last input seen
    prepared: Any = field(default=None, repr=False)  # the dense kernel's weight layout, made once

    def __post_init__(self) -> None:
        self.prepared = kernels.prepare_kernels(self.wp, self.c_in)

    @property
    def binary_macs(self) -> int:
        """Binary multiply-accumulates per image at the last input size seen (9·c_in·c_out per output pixel)."""
        if self.input_hw is None:
            raise ValueError(f"{self.name} has not run yet: its input size is unknown")
        return 9 * self.c_in * self.c_out * self._out_pixels(*self.input_hw)

    def _out_pixels(self, h: int, w: int) -> int:
        """Output pixels per image of an h×w input (3×3, padding 1, the layer's stride)."""
        return ((h - 1) // self.stride + 1) * ((w - 1) // self.stride + 1)

    def __call__(self, x: np.ndarray, other: np.ndarray | None = None, kernel: str | None = None,
                 parallel: bool = True) -> np.ndarray:
        """The layer on NHWC ``x`` (+ the residual ``other``); ``parallel=False``: on the calling thread only."""
        n, h, w, _ = x.shape
        self.input_hw = (h, w)
        work = n * self._out_pixels(h, w) * 9 * kernels.num_words(self.c_in) * self.c_out
        parallel = parallel and work >= BINARY_PARALLEL_MIN_WORDS
        xp = kernels.pack_signs(x, self.in_shift, parallel=parallel and x.size >= PACK_PARALLEL_MIN_VALUES)
        kernel = kernel or kernels.choose_binary_kernel(self.c_in, self.c_out, h, w, self.n)
        if kernel == "lut":
            y = lut.binary_conv3x3_lut(xp, self.codes, self.indices, self.c_in, self.stride).astype(np.float32)
            y = y * self.scale + self.shift
            if self.act is None:
                return y if other is None else y + other
            return rprelu_nhwc(y, self.act[0], self.act[1], self.act[2], other)
        if self.act is None and other is None:
            return kernels.binary_conv3x3_fused(xp, self.prepared, self.c_in, self.stride, self.scale, self.shift,
                                                parallel)
        if self.act is None:  # a residual add without an activation after it: slope 1, zero shifts
            zeros = np.zeros(self.c_out, np.float32)
            s_in, slope, s_out = zeros, np.ones(self.c_out, np.float32), zeros
        else:
            s_in, slope, s_out = self.act
        return kernels.binary_conv3x3_block(xp, self.prepared, self.stride, self.scale, self.shift, other, s_in, slope,
                                            s_out, parallel=parallel)


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _single_use(op: dict[str, Any] | None, kinds: tuple[str, ...], value: str, uses: Counter) -> bool:
    """``op`` is of one of ``kinds``, takes ``value`` and ``value`` has no other consumer."""
    return op is not None and op["op"] in kinds and value in op["inputs"] and uses[value] == 1


class PackedModel:
    """A ``.sparks`` model on the packed engine: ``model(images)`` → logits ndarray (N, num_classes).

    Args:
        metadata, tensors: the output of :func:`sparks.format.read_sparks` (validated again here).
        fuse_bn: fuse what follows a sub-bit conv (BN, residual add, RPReLU) and the LearnableBias before it into
            the conv kernel; False runs every op on its own (same results, for testing).
        threads: threads for a call: ``"auto"`` (the CPUs this process may use: affinity and cgroup quota, at most
            ``numba.get_num_threads()``) or a fixed count; kernels too small to gain from threads run serially.
        limits: the :class:`sparks.limits.Limits` the file was read with (defaults otherwise).
    """

    def __init__(self, metadata: dict[str, Any], tensors: dict[str, np.ndarray], fuse_bn: bool = True,
                 threads: int | str = "auto", limits: Any = None) -> None:
        validate(metadata, tensors, limits)
        select_threading_layer()
        self.metadata = metadata
        self.num_classes = metadata["num_classes"]
        inp = metadata["input"]
        self.input_shape = (inp["channels"], inp["height"], inp["width"])
        self.binary_layers: list[BinaryLayer] = []
        self._plan: list[tuple[Callable[..., np.ndarray], list[str], str]] = []
        self._labels: list[str] = []  # what each plan step runs, for profile()
        self._tensors = tensors
        ops = metadata["ops"]
        uses = Counter(v for op in ops for v in op["inputs"])
        producer = {op["output"]: i for i, op in enumerate(ops)}
        skip: set[int] = set()
        for i, op in enumerate(ops):
            if i in skip:
                continue
            at = [ops[j] if j < len(ops) else None for j in range(i + 1, i + 4)]
            if op["op"] == "bias" and fuse_bn:
                consumers = [o for o in ops if op["output"] in o["inputs"]]
                if len(consumers) == 1 and consumers[0]["op"] == "subbit_conv2d" and uses[op["output"]] == 1:
                    continue  # folded into the conv's packing
            if op["op"] == "subbit_conv2d" and fuse_bn:
                src = op["inputs"][0]
                pre = ops[producer[src]] if src in producer else None
                in_shift = None
                inputs = list(op["inputs"])
                if pre is not None and pre["op"] == "bias" and uses[src] == 1:
                    in_shift, inputs = self._t(pre, "bias"), list(pre["inputs"])
                end, bn, act, other = op["output"], None, None, None
                if _single_use(at[0], ("batchnorm",), end, uses):
                    bn, end = at[0], at[0]["output"]
                    skip.add(i + 1)
                    if _single_use(at[1], ("add",), end, uses) and _single_use(at[2], ("rprelu", "prelu"),
                                                                                at[1]["output"], uses):
                        other = next(v for v in at[1]["inputs"] if v != end)
                        act, end = at[2], at[2]["output"]
                        skip.update((i + 2, i + 3))
                layer = self._subbit(op, bn, in_shift, act, residual=other is not None)
                label = "subbit_conv2d" + ("+batchnorm" if bn else "") + (f"+add+{act['op']}" if act else "")
                self._step(layer, inputs + ([other] if other else []), end, label)
                continue
            if op["op"] == "conv2d" and fuse_bn and _single_use(at[0], ("batchnorm",), op["output"], uses):
                skip.add(i + 1)
                self._step(self._conv(op, at[0]), op["inputs"], at[0]["output"], "conv2d+batchnorm")
                continue
            add_act = fuse_bn and op["op"] == "add" and _single_use(at[0], ("rprelu", "prelu"), op["output"], uses)
            if add_act:  # residual add fused into the activation that consumes it
                skip.add(i + 1)
                self._step(self._op(at[0]), op["inputs"], at[0]["output"], f"add+{at[0]['op']}")
            else:
                self._step(self._op(op), op["inputs"], op["output"], op["op"])
        del self._tensors
        self.output = ops[-1]["output"]
        # free each value after its last use, so a batch holds only the live activations
        last = {v: i for i, (_, inputs, _) in enumerate(self._plan) for v in inputs}
        self._free = [[v for v in dict.fromkeys(inputs) if last[v] == i and v != self.output]
                      for i, (_, inputs, _) in enumerate(self._plan)]
        self.threads = threads

    @property
    def threads(self) -> int:
        """Threads the next call uses. Settable: an int, or ``"auto"`` = the CPUs this process may use (affinity,
        cgroup quota), capped by ``numba.get_num_threads()`` so that a caller's ``numba.set_num_threads(n)`` (e.g.
        the CLI's ``--threads``) is respected."""
        if self._threads_setting == "auto":
            return max(1, min(self._auto_threads, numba.get_num_threads()))
        return self._threads_setting

    @threads.setter
    def threads(self, value: int | str) -> None:
        resolved = resolve_threads(value)
        self._threads_setting: int | str = "auto" if value in (None, "auto") else resolved
        self._auto_threads = resolve_threads("auto")

    def _step(self, fn: Callable[..., np.ndarray], inputs: list[str], output: str, label: str) -> None:
        self._plan.append((fn, inputs, output))
        self._labels.append(label)

    def _t(self, op: dict[str, Any], key: str) -> np.ndarray:
        return _f32(self._tensors[f"{op['name']}.{key}"])

    def _act(self, op: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s_in, slope per channel, s_out) of a prelu / rprelu op."""
        c = op["channels"]
        zeros = np.zeros(c, np.float32)
        w = self._t(op, "weight")
        slope = np.ascontiguousarray(np.broadcast_to(w, (c,)), dtype=np.float32)
        if op["op"] == "rprelu":
            return self._t(op, "shift_in"), slope, self._t(op, "shift_out")
        return zeros, slope, zeros

    def _subbit(self, op: dict[str, Any], bn: dict[str, Any] | None, in_shift: np.ndarray | None = None,
                act: dict[str, Any] | None = None, residual: bool = False) -> BinaryLayer:
        codes, idx = decode_subbit(op, self._tensors)
        alpha = self._t(op, "alpha")
        bias = self._t(op, "bias") if op["bias"] else np.zeros_like(alpha)
        scale, shift = alpha, bias
        if bn is not None:
            s, t = self._t(bn, "scale"), self._t(bn, "shift")
            scale, shift = alpha * s, bias * s + t
        layer = BinaryLayer(
            op["name"], op["in_channels"], op["out_channels"], op["stride"], op["n"],
            wp=kernels.pack_kernels(codeword_to_kernel(codes[idx])),
            codes=codes.astype(np.uint16),
            indices=idx.astype(np.int32),
            scale=_f32(scale),
            shift=_f32(shift),
            in_shift=in_shift,
            act=None if act is None else self._act(act),
            residual=residual,
        )
        self.binary_layers.append(layer)
        return layer

    def _conv(self, op: dict[str, Any], bn: dict[str, Any] | None) -> Callable[..., np.ndarray]:
        w, b = self._t(op, "weight"), self._t(op, "bias") if op["bias"] else None
        affine = None if bn is None else (self._t(bn, "scale"), self._t(bn, "shift"))
        wt = conv_matrix(w)
        return lambda x, parallel: conv2d_nhwc(x, w, b, op["stride"], op["padding"], affine, wt)

    def _op(self, op: dict[str, Any]) -> Callable[..., np.ndarray]:
        """A plan step: called with the op's input values and the keyword ``parallel``."""
        fn = self._op_fn(op)
        if isinstance(fn, BinaryLayer) or op["op"] in ("conv2d", "prelu", "rprelu", "linear"):
            return fn
        return lambda *inputs, parallel: fn(*inputs)

    def _op_fn(self, op: dict[str, Any]) -> Callable[..., np.ndarray]:
        kind = op["op"]
        if kind == "subbit_conv2d":
            return self._subbit(op, None)
        if kind == "conv2d":
            return self._conv(op, None)
        if kind == "batchnorm":
            s, sh = self._t(op, "scale"), self._t(op, "shift")
            return lambda x: x * s + sh
        if kind == "bias":
            b = self._t(op, "bias")
            return lambda x: x + b
        if kind in ("prelu", "rprelu"):
            s_in, w, s_out = self._act(op)
            return lambda x, other=None, parallel=True: rprelu_nhwc(x, s_in, w, s_out, other, parallel)
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
            wt, b = np.ascontiguousarray(self._t(op, "weight").T), self._t(op, "bias") if op["bias"] else None
            return lambda x, parallel: linear(x, wt, b)
        raise ValueError(f"unknown op {kind!r}")  # unreachable after validate()

    def _nhwc(self, images: Any) -> np.ndarray:
        """Float NCHW images (ndarray or tensor; a 3-D image is batch 1) → validated NHWC float32."""
        if hasattr(images, "detach"):
            images = images.detach().cpu().numpy()
        x = np.asarray(images, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != self.input_shape[0] or min(x.shape) == 0:
            raise ValueError(f"expected images of shape (N, {self.input_shape[0]}, H, W), got {x.shape}")
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))

    def __call__(self, images: Any) -> np.ndarray:
        """Logits (N, num_classes) float32 for float NCHW images (ndarray or tensor; a 3-D image is batch 1)."""
        x = self._nhwc(images)
        t = self.threads
        with single_threaded_blas():
            if t > 1 and len(x) >= BATCH_SPLIT_MIN * t:
                return self._batch_parallel(x, t)
            if t == 1:
                return self._chunked(x)
            with INTRA_OP_LOCK, use_threads(t):
                return self._forward(x, True)

    def _chunked(self, x: np.ndarray, step_seconds: np.ndarray | None = None) -> np.ndarray:
        """The one-thread path: the batch in chunks of :data:`CHUNK_IMAGES` images."""
        if len(x) <= CHUNK_IMAGES:
            return self._forward(x, False, step_seconds)
        return np.concatenate([self._forward(x[i:i + CHUNK_IMAGES], False, step_seconds)
                               for i in range(0, len(x), CHUNK_IMAGES)])

    def _forward(self, x: np.ndarray, parallel: bool, step_seconds: np.ndarray | None = None) -> np.ndarray:
        """Run the plan on NHWC ``x``; ``parallel``: large kernels may use numba's threads; ``step_seconds``: add
        each step's wall time to its entry."""
        values = {"input": x}
        for i, ((fn, inputs, output), dead) in enumerate(zip(self._plan, self._free, strict=True)):
            if step_seconds is None:
                values[output] = fn(*(values[v] for v in inputs), parallel=parallel)
            else:
                t0 = time.perf_counter()
                values[output] = fn(*(values[v] for v in inputs), parallel=parallel)
                step_seconds[i] += time.perf_counter() - t0
            for v in dead:
                del values[v]
        return values[self.output]

    def profile(self, images: Any, repeats: int = 5) -> list[dict[str, Any]]:
        """Where a call's time goes: per plan step, the median over ``repeats`` runs of the one-thread path of its
        milliseconds per image, with the binary multiply-accumulates per image of each sub-bit conv step."""
        if repeats < 1:
            raise ValueError(f"repeats must be at least 1, got {repeats}")
        x = self._nhwc(images)
        seconds = np.zeros((repeats, len(self._plan)))
        with single_threaded_blas():
            for r in range(repeats):
                self._chunked(x, seconds[r])
        return [{"step": output, "op": label, "ms_per_image": 1e3 * float(np.median(seconds[:, i])) / len(x),
                 "binary_macs": fn.binary_macs if isinstance(fn, BinaryLayer) else 0}
                for i, ((fn, _, output), label) in enumerate(zip(self._plan, self._labels, strict=True))]

    def _batch_parallel(self, x: np.ndarray, t: int) -> np.ndarray:
        """Split the batch into chunks (:data:`CHUNKS_PER_THREAD` per thread, at most :data:`CHUNK_IMAGES` images
        each) that ``t`` threads (the caller and t − 1 pool threads) take one at a time, each running the whole plan
        with single-threaded (GIL-free) kernels: coarse work, no spinning workers, and a thread that the OS
        deschedules simply takes fewer chunks."""
        n_chunks = max(min(len(x), CHUNKS_PER_THREAD * t), -(-len(x) // CHUNK_IMAGES))
        bounds = np.linspace(0, len(x), n_chunks + 1).astype(int)
        chunks = [x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        out: list[np.ndarray | None] = [None] * len(chunks)
        order = iter(range(len(chunks)))
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    i = next(order, None)
                if i is None:
                    return
                out[i] = self._forward(chunks[i], False)

        pool = _pool(t - 1)
        helpers = [pool.submit(worker) for _ in range(t - 1)]
        worker()
        for h in helpers:
            h.result()
        return np.concatenate(out)

    def predict(self, images: Any) -> np.ndarray:
        """Class index per image."""
        return self(images).argmax(axis=1)
