"""torch.compile of a tiny Sparks model on the CPU: time of the first (compiling) train step, then eager vs compiled.

Usage: python bench/compile_speed.py [--steps 5] [--threads 1]

Model: vgg_small width 0.0625, Sparks τ = 5, batch 8 of random 3×32×32 inputs, forward + backward (no optimiser).
Prints the first compiled step's seconds and the mean eager and compiled step times and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from sparks.models import create


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create("vgg_small", width=0.0625, tau=5, method="sparks").train()
    x = torch.randn(8, 3, 32, 32)
    compiled = torch.compile(model)
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, threads {args.threads}, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    start = time.perf_counter()
    compiled(x).sum().backward()
    print(f"first compiled step {time.perf_counter() - start:.1f} s", flush=True)
    mean = {}
    for name, fn in (("eager", model), ("compiled", compiled)):
        start = time.perf_counter()
        for _ in range(args.steps):
            fn(x).sum().backward()
        mean[name] = (time.perf_counter() - start) / args.steps
        print(f"{name} {mean[name]:.3f} s per step", flush=True)
    print(f"eager/compiled {mean['eager'] / mean['compiled']:.2f}× (load now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
