"""Packed runtime per batch size and thread count: whole resnet18_cifar and two binary layers, interleaved in one run.

Usage: .venv/bin/python bench/runtime_batch.py [--quick] [--batches 1 8 32] [--threads 1 2] [--stress N]
Prints ms/image per (batch, threads) of the whole model (resnet18_cifar width 1, τ=5, random init, seed 0), its ratio
to batch 1 (same threads) and to 1 thread (same batch), and binary MACs/s per core; then the binary 3×3 kernels
alone (256→256 @14×14 and 64→64 @32×32, 1 thread, CPU time) at batch 1 and 32. ``--stress N`` runs N CPU-bound
busy-loop processes during the whole-model timing (the "another CPU-bound process running" case).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYERS = [(256, 256, 14, 14), (64, 64, 32, 32)]  # c_in, c_out, h, w; stride 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (finishes in < 2 minutes)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per (batch, threads)")
    parser.add_argument("--stress", type=int, default=0, help="CPU-bound competitor processes during the model timing")
    args = parser.parse_args()

    import numba
    import numpy as np
    import torch

    from sparks.bench.peers import competitors, interleaved_times, system_info
    from sparks.deploy.export import export
    from sparks.deploy.format import read_sparks
    from sparks.runtime import PackedModel, kernels

    torch.manual_seed(0)
    from sparks.models import create

    reps = 6 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r18.sparks"
        export(create("resnet18_cifar", tau=5, method="sparks", width=1.0), path)
        meta, tensors = read_sparks(path)
    # one model for every configuration (its thread count set per call): two models would each evict the other's
    # weights from the caches between interleaved calls and inflate the batch-1 times (2.4 against 1.5 ms measured)
    model = PackedModel(meta, tensors, threads=1)
    rng = np.random.default_rng(0)
    xs = {b: rng.standard_normal((b, 3, 32, 32)).astype(np.float32) for b in args.batches}
    model(xs[args.batches[0]])
    macs = sum(layer.binary_macs for layer in model.binary_layers)
    load0 = os.getloadavg()[0]
    configs = [(b, t) for b in args.batches for t in args.threads]
    cpu: dict[tuple[int, int], list[float]] = {c: [] for c in configs}

    def timed(b: int, t: int) -> None:
        model.threads = t
        c0 = time.process_time()
        model(xs[b])
        cpu[(b, t)].append(time.process_time() - c0)

    with competitors(args.stress):  # all configurations round-robin, so that drifting load hits each alike
        s = interleaved_times({c: (lambda c=c: timed(*c)) for c in configs}, reps)
    res = {}
    for (b, t), v in s.items():
        c = cpu[(b, t)][1::2]  # the timed calls (each follows an untimed one)
        res[(b, t)] = (float(np.median(v)) * 1e3 / b, float(np.min(v)) * 1e3 / b, float(np.median(c)) * 1e3 / b)
    print(f"# resnet18_cifar width 1 tau 5, packed runtime; binary MACs/image {macs / 1e9:.3f} G; load {load0:.2f} "
          f"-> {os.getloadavg()[0]:.2f}; stress processes {args.stress}; numba {numba.__version__} "
          f"({system_info()['numba_threading_layer'] or 'not started'}); wall clock median and min, process CPU time "
          "median, of interleaved calls")
    print("| batch | threads | ms/image | min ms/image | CPU ms/image | ÷ batch 1 (median; min; CPU) | ÷ 1 thread "
          "(median; min) | binary GMAC/s per core (min; CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for b in args.batches:
        for t in args.threads:
            med, lo, cpu_ms = res[(b, t)]
            b1, t1 = res[(args.batches[0], t)], res[(b, args.threads[0])]
            print(f"| {b} | {t} | {med:.3f} | {lo:.3f} | {cpu_ms:.3f} | {med / b1[0]:.2f}; {lo / b1[1]:.2f}; "
                  f"{cpu_ms / b1[2]:.2f} | {med / t1[0]:.2f}; {lo / t1[1]:.2f} | {macs / (lo * 1e-3) / t / 1e9:.0f}; "
                  f"{macs / (cpu_ms * 1e-3) / 1e9:.0f} |")
    print(f"# the dense kernel's inner loop alone (kernels.inner_loop_peak, this run): "
          f"{kernels.inner_loop_peak() / 1e9:.0f} GMAC/s per core; issue 12's estimate: ≈ 1100")

    # binary kernels alone, 1 thread, CPU time of the calling thread (robust on a shared machine)
    print("| layer | batch | ms/image (CPU time, median) | ÷ batch 1 | GMAC/s |")
    print("|---|---|---|---|---|")
    numba.set_num_threads(1)
    for c_in, c_out, h, w in LAYERS:
        w_pm1 = np.where(rng.random((c_out, c_in, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
        prepared = kernels.prepare_kernels(kernels.pack_kernels(w_pm1), c_in)
        scale, shift = np.ones(c_out, np.float32), np.zeros(c_out, np.float32)
        per_b = {}
        for b in (1, 32):
            xp = kernels.pack_signs(rng.standard_normal((b, h, w, c_in)).astype(np.float32))
            fn = kernels.binary_conv3x3_fused
            fn(xp, prepared, c_in, 1, scale, shift, parallel=False)
            times = []
            for _ in range(reps * 3 if b == 1 else reps):
                t0 = time.thread_time()
                fn(xp, prepared, c_in, 1, scale, shift, parallel=False)
                times.append(time.thread_time() - t0)
            per_b[b] = float(np.median(times)) * 1e3 / b
            gmacs = 9 * c_in * c_out * h * w / (per_b[b] * 1e-3) / 1e9
            print(f"| {c_in}→{c_out} @{h}×{w} | {b} | {per_b[b]:.4f} | {per_b[b] / per_b[1]:.2f} | {gmacs:.0f} |")


if __name__ == "__main__":
    main()
