"""Packed binary 3×3 kernels vs torch fp32 conv2d on the ResNet-18-CIFAR layer shapes (and 256→256 @ 14×14).

Usage: python bench/runtime_layers.py [--repeats 50] [--batches 1 32] [--n 32] [--threads 2]
                                     [--clock wall|thread] [--stat median|min]
Prints one markdown row per (layer, batch): torch / packed / prepared / fused / pack_signs / LUT times in ms and ratios.
"""

from __future__ import annotations

import argparse
import os
import platform

import numba
import numpy as np

from sparks.bench.layerbench import bench_binary_layer

LAYERS = [  # (c_in, c_out, h, w, stride): input size h×w
    (64, 64, 32, 32, 1),
    (64, 128, 32, 32, 2),
    (128, 128, 16, 16, 1),
    (128, 256, 16, 16, 2),
    (256, 256, 8, 8, 1),
    (256, 512, 8, 8, 2),
    (512, 512, 4, 4, 1),
    (256, 256, 14, 14, 1),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--n", type=int, default=32, help="sub-codebook size for the LUT kernel")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock", choices=("wall", "thread"), default="wall", help="thread: CPU time, needs --threads 1"
    )
    parser.add_argument("--stat", choices=("median", "min"), default="median")
    args = parser.parse_args()

    import torch

    bench_binary_layer(8, 8, 4, 4, repeats=1, warmup=0, lut_every=1)  # compile / load the JIT cache
    print(
        f"# numba {numba.__version__}, numpy {np.__version__}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, threads {args.threads}, "
        f"numba layer {numba.threading_layer()}, clock {args.clock}, {args.stat} of {args.repeats} repeats at batch 1, "
        f"load {os.getloadavg()[0]:.2f}"
    )
    head = (
        "| layer | batch | torch ms | packed ms | prepared ms | fused ms | pack ms | LUT ms | torch/packed "
        "| torch/prepared | LUT/packed |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for batch in args.batches:
        for c_in, c_out, h, w, stride in LAYERS:
            repeats = args.repeats if batch == 1 else max(5, args.repeats // 5)
            r = bench_binary_layer(
                c_in,
                c_out,
                h,
                w,
                stride=stride,
                n=args.n,
                batch=batch,
                repeats=repeats,
                warmup=3,
                threads=args.threads,
                lut_every=1 if batch == 1 else 5,
                clock=args.clock,
                stat=args.stat,
            )
            name = f"{c_in}→{c_out}{'/2' if stride == 2 else ''} @{h}×{w}"
            print(
                f"| {name} | {batch} | {r['torch_ms']:.3f} | {r['packed_ms']:.3f} | {r['prepared_ms']:.3f} | "
                f"{r['fused_ms']:.3f} | {r['pack_ms']:.3f} | {r['lut_ms']:.3f} | {r['speedup']:.1f}× | "
                f"{r['torch_ms'] / r['prepared_ms']:.1f}× | {r['lut_ms'] / r['packed_ms']:.1f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
