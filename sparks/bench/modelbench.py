"""Time a ``.sparks`` model on the packed engine against its torch fp32 eager module (``sparks bench``).

Per sub-bit layer: :func:`sparks.bench.layerbench.bench_binary_layer` at the layer's shape (torch conv2d vs the
dense xor-popcount kernel vs the codeword-reuse kernel). Whole model: ``load(runtime="torch")`` with float convs
(:func:`float_baseline`) against ``load(runtime="packed")`` at each batch size, measured interleaved in one run
(each timed call after an untimed one, so spinning worker threads of the previous variant do not steal the cores).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np


def cpu_info() -> dict[str, Any]:
    """CPU model, AVX-512 flags, core count, numba/torch/numpy versions (for benchmark records)."""
    import numba
    import torch

    flags: list[str] = []
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "avx2", "popcnt")))
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": model, "flags": flags, "cores": os.cpu_count(), "numba": numba.__version__,
            "torch": torch.__version__, "numpy": np.__version__}


def float_baseline(model: Any) -> Any:
    """The torch fp32 eager baseline of a loaded model: every sub-bit conv becomes sign → a plain ``F.conv2d`` with
    its (precomputed) α·codeword weights, i.e. the cost of the same network with float convolutions."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from sparks.core.convert import replace_module
    from sparks.core.layers import subbit_layers

    class SignConv(nn.Module):
        def __init__(self, layer: nn.Module) -> None:
            super().__init__()
            self.stride, self.padding = layer.stride, layer.padding
            self.register_buffer("weight", layer.binary_weight() if layer.quantizer.binary else layer.weight.detach())
            self.bias = None if layer.bias is None else layer.bias.detach()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(torch.where(x >= 0, 1.0, -1.0), self.weight, self.bias, self.stride, self.padding)

    for name, layer in list(subbit_layers(model)):
        replace_module(model, name, SignConv(layer))
    return model.eval()


def _interleaved_ms(fns: dict[str, Any], repeats: int, warmup: int, clock: str) -> dict[str, float]:
    now = time.perf_counter if clock == "wall" else time.thread_time
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            fn()
            t0 = now()
            fn()
            if i >= warmup:
                samples[name].append(now() - t0)
    return {name: float(np.median(s)) * 1e3 for name, s in samples.items()}


def bench_model(path: str | Path, *, threads: int = 2, repeats: int = 10, warmup: int = 2,
                layer_repeats: int = 20, batch_sizes: tuple[int, ...] = (1, 32), clock: str = "wall") -> dict[str, Any]:
    """Layer and whole-model timings of the ``.sparks`` file ``path`` → the dict ``sparks bench --json`` prints.

    ``clock="thread"`` (with ``threads=1``) times CPU time of the calling thread: robust on a machine shared with
    other processes; ``"wall"`` times wall clock (perf_counter).
    """
    if clock not in ("wall", "thread"):
        raise ValueError(f"clock must be 'wall' or 'thread', got {clock!r}")
    if clock == "thread" and threads != 1:
        raise ValueError("clock 'thread' measures only the calling thread: use threads=1")
    import numba
    import torch

    from sparks.bench.layerbench import bench_binary_layer
    from sparks.complexity import subbit_bops
    from sparks.deploy.format import index_bits
    from sparks.deploy.load import load

    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    packed = load(path, runtime="packed")
    packed.threads = threads
    reference = float_baseline(load(path, runtime="torch"))
    c, h, w = packed.input_shape
    packed(np.zeros((1, c, h, w), np.float32))  # records each layer's input size (and compiles the kernels)
    layers = []
    tau = packed.metadata["tau"]
    for layer in packed.binary_layers:
        lh, lw = layer.input_hw
        ho, wo = (lh - 1) // layer.stride + 1, (lw - 1) // layer.stride + 1
        t = bench_binary_layer(layer.c_in, layer.c_out, lh, lw, stride=layer.stride, n=layer.n, batch=1,
                               repeats=layer_repeats, warmup=2, threads=threads, clock=clock)
        layers.append({"name": layer.name, "shape": f"{layer.c_in}x{lh}x{lw}->{layer.c_out}x{ho}x{wo}",
                       "bops": subbit_bops(layer.c_in, layer.c_out, ho * wo, index_bits(layer.n)),
                       "torch_ms": t["torch_ms"], "packed_ms": t["packed_ms"], "lut_ms": t["lut_ms"],
                       "speedup": t["speedup"]})
    model: dict[str, Any] = {}
    rng = np.random.default_rng(0)
    for batch in batch_sizes:
        x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
        xt = torch.from_numpy(x)

        def run_torch(xt: torch.Tensor = xt) -> None:
            with torch.no_grad():
                reference(xt)

        ms = _interleaved_ms({"torch": run_torch, "packed": lambda x=x: packed(x)}, repeats, warmup, clock)
        model[f"batch{batch}_torch_ms"] = ms["torch"]
        model[f"batch{batch}_packed_ms"] = ms["packed"]
        model[f"batch{batch}_speedup"] = ms["torch"] / ms["packed"]
    meta = packed.metadata
    return {"model_file": str(path), "model_name": meta["model_name"], "tau": tau, "method": meta["method"],
            "input": [c, h, w], "threads": threads, "clock": clock, "layers": layers, "model": model,
            "system": cpu_info()}


def format_bench(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`bench_model`'s result."""
    lines = [f"{result['model_name']} tau={result['tau']} method={result['method']} input={result['input']} "
             f"threads={result['threads']} clock={result['clock']}",
             f"{'layer':<24} {'shape':<24} {'BOPs':>10} {'torch ms':>9} {'packed ms':>9} {'lut ms':>9} {'speedup':>8}"]
    for row in result["layers"]:
        lines.append(f"{row['name']:<24} {row['shape']:<24} {row['bops']:>10.3g} {row['torch_ms']:>9.3f} "
                     f"{row['packed_ms']:>9.3f} {row['lut_ms']:>9.3f} {row['speedup']:>7.2f}x")
    for key, value in result["model"].items():
        if key.endswith("_speedup"):
            batch = key.split("_")[0]
            lines.append(f"whole model {batch}: torch {result['model'][f'{batch}_torch_ms']:.2f} ms, packed "
                         f"{result['model'][f'{batch}_packed_ms']:.2f} ms, speedup {value:.2f}x")
    sysinfo = result["system"]
    lines.append(f"cpu: {sysinfo['cpu']} ({sysinfo['cores']} cores); flags: {' '.join(sysinfo['flags'])}; "
                 f"numba {sysinfo['numba']}, torch {sysinfo['torch']}")
    return "\n".join(lines)
