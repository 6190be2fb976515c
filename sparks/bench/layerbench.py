"""Time one binary 3×3 layer: packed xor-popcount kernel and codeword-reuse (LUT) kernel against torch fp32 conv2d.

Torch is imported lazily inside :func:`bench_binary_layer` as the comparison baseline only; the kernels stay torch-free.
All variants run interleaved in one loop (round-robin per repeat), so load from other processes hits them alike; each
timed call follows one untimed call of the same variant, since torch's and numba's OpenMP workers keep spinning for a
while after a parallel region and would otherwise steal the 2 cores from whichever variant runs next.
"""

from __future__ import annotations

import time

import numpy as np

from sparks.runtime import kernels, lut


def bench_binary_layer(
    c_in: int,
    c_out: int,
    h: int,
    w: int,
    stride: int = 1,
    n: int = 32,
    batch: int = 1,
    repeats: int = 50,
    warmup: int = 5,
    threads: int = 2,
    lut_every: int = 1,
    seed: int = 0,
    clock: str = "wall",
    stat: str = "median",
) -> dict[str, float]:
    """Median (or min) time in ms of one layer call per implementation, measured interleaved.

    Args:
        c_in, c_out, h, w, stride, batch: layer shape; input (batch, c_in, h, w).
        n: sub-codebook size for the LUT kernel (codewords drawn at random, kernels assigned at random).
        repeats: timed repeats per implementation (after ``warmup`` untimed rounds).
        threads: torch and numba thread count.
        lut_every: time the LUT kernel only every k-th repeat (it can be much slower); 0 skips it.
        clock: "wall" (perf_counter) or "thread" (CPU time of the calling thread: insensitive to other processes
            on a shared machine, but only meaningful with threads=1, where torch and numba run on the calling thread).
        stat: "median" of the repeats, or "min" (the uncontended cost when other processes steal time slices).

    Returns:
        dict(torch_ms, packed_ms, prepared_ms, fused_ms, pack_ms, lut_ms, speedup) where packed_ms is
        :func:`binary_conv3x3` on packed input and weights (re-laid out every call), prepared_ms the same with
        :func:`prepare_kernels` weights, fused_ms adds the scale/shift epilogue, pack_ms is :func:`pack_signs` of the
        float input, lut_ms is :func:`binary_conv3x3_lut` and speedup = torch_ms / packed_ms.
    """
    import numba
    import torch
    import torch.nn.functional as F

    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
    if clock not in ("wall", "thread"):
        raise ValueError(f"clock must be 'wall' or 'thread', got {clock!r}")
    if clock == "thread" and threads != 1:
        raise ValueError("clock='thread' measures only the calling thread: use threads=1")
    now = time.perf_counter if clock == "wall" else time.thread_time

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, h, w, c_in)).astype(np.float32)
    codewords = rng.choice(512, size=min(n, 512), replace=False).astype(np.uint16)
    idx = rng.integers(0, len(codewords), size=(c_out, c_in))
    w_pm1 = (2 * ((codewords[idx][..., None].astype(np.int64) >> np.arange(9)) & 1) - 1).reshape(c_out, c_in, 3, 3)
    scale = rng.random(c_out, dtype=np.float32)
    shift = rng.random(c_out, dtype=np.float32)

    x_nchw = torch.from_numpy(np.where(x >= 0, 1.0, -1.0).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    w_t = torch.from_numpy(w_pm1.astype(np.float32))
    xp = kernels.pack_signs(x)
    wp = kernels.pack_kernels(w_pm1)
    prepared = kernels.prepare_kernels(wp, c_in)

    def run_torch():
        with torch.no_grad():
            F.conv2d(x_nchw, w_t, stride=stride, padding=1)

    variants = {
        "torch": run_torch,
        "packed": lambda: kernels.binary_conv3x3(xp, wp, c_in, stride),
        "prepared": lambda: kernels.binary_conv3x3(xp, prepared, c_in, stride),
        "fused": lambda: kernels.binary_conv3x3_fused(xp, wp, c_in, stride, scale, shift),
        "pack": lambda: kernels.pack_signs(x),
        "lut": lambda: lut.binary_conv3x3_lut(xp, codewords, idx, c_in, stride),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for i in range(warmup + repeats):
        for name, fn in variants.items():
            if name == "lut" and (lut_every == 0 or i % lut_every):
                continue
            fn()  # untimed call: lets the previous variant's spinning worker threads go idle first
            t0 = now()
            fn()
            dt = now() - t0
            if i >= warmup:
                samples[name].append(dt)
    reduce = np.median if stat == "median" else np.min
    result = {f"{name}_ms": float(reduce(s)) * 1e3 if s else float("nan") for name, s in samples.items()}
    result["speedup"] = result["torch_ms"] / result["packed_ms"]
    return result
