"""Training throughput of resnet18_cifar: images/s of train steps (forward + backward + Adam) per weight method.

Usage: python bench/train_throughput.py [--steps 5] [--warmup 2] [--batch-size 128] [--width 1.0] [--threads 2]

Variants, measured interleaved (one step of each in turn, every round) on random CIFAR-10-shaped data:
  real    no binarization at all (method "float" with every SubBitConv2d.binary_activation = False)
  float   binary activations, real weights (step 1 of the recipe)
  1-bit   binary activations and sign weights (method "sign")
  sparks  binary activations and Sparks τ-bit weights (learned selection, τ = 5 by default)
Prints the median step time and images/s of each, and the ratios Sparks/float and Sparks/1-bit.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch import nn

from sparks.core.layers import subbit_layers
from sparks.models import create

VARIANTS = ("real", "float", "1-bit", "sparks")


def build(variant: str, width: float, tau: int, seed: int = 0) -> nn.Module:
    """resnet18_cifar for one of :data:`VARIANTS`."""
    torch.manual_seed(seed)
    method = {"real": "float", "float": "float", "1-bit": "sign", "sparks": "sparks"}[variant]
    model = create("resnet18_cifar", width=width, method=method, tau=9 if method == "sign" else tau)
    if variant == "real":
        for _, layer in subbit_layers(model):
            layer.binary_activation = False
    return model.train()


class TrainStep:
    """One optimisation step of a model on a fixed random batch (cross-entropy, Adam lr 1e-3)."""

    def __init__(self, model: nn.Module, batch_size: int, num_classes: int = 10, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.model = model
        self.x = torch.randn(batch_size, 3, 32, 32, generator=gen)
        self.y = torch.randint(0, num_classes, (batch_size,), generator=gen)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        self.loss = nn.CrossEntropyLoss()

    def __call__(self) -> float:
        """Run one step; return its wall time in seconds."""
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.optimizer.step()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--tau", type=int, default=5, help="bits per kernel index of the Sparks variant")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    steps = {v: TrainStep(build(v, args.width, args.tau), args.batch_size) for v in VARIANTS}
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"threads {args.threads}, load {os.getloadavg()[0]:.2f}; resnet18_cifar width {args.width}, "
          f"batch {args.batch_size}, {args.warmup} warm-up + {args.steps} timed steps each, interleaved")
    for round_ in range(args.warmup + args.steps):
        for variant in VARIANTS:
            elapsed = steps[variant]()
            if round_ >= args.warmup:
                times[variant].append(elapsed)
    median = {v: statistics.median(t) for v, t in times.items()}
    print("| variant | median step s | min step s | images/s |")
    print("|---|---|---|---|")
    for v in VARIANTS:
        print(f"| {v} | {median[v]:.3f} | {min(times[v]):.3f} | {args.batch_size / median[v]:.1f} |")
    rate = {v: args.batch_size / median[v] for v in VARIANTS}
    print(f"Sparks/float {rate['sparks'] / rate['float']:.2f}×, Sparks/1-bit {rate['sparks'] / rate['1-bit']:.2f}×, "
          f"Sparks/real {rate['sparks'] / rate['real']:.2f}×, float/real {rate['float'] / rate['real']:.2f}× "
          f"(images/s ratios; load now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
