"""Train-step time of a CIFAR ResNet-18 with Sparks τ=5 selection versus plain 1-bit (sign) weights.

    python bench/selector_overhead.py [--steps 20] [--warmup 3] [--batch-size 64] [--threads 2]

Both models are built from the same seed and timed interleaved (sign step, sparks step, sign step, ...) in one run,
so machine noise hits both alike. A step is forward + backward + Adam update on random 32×32 images. Prints the
median step times and their ratio (target ≤ 1.10×), plus the time the selectors themselves take per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sparks.core.layers import subbit_layers
from sparks.models import create


def make_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step() -> float:
        start = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def selector_time(model: torch.nn.Module, repeats: int = 5) -> float:
    """Seconds per step spent in the selectors alone (Hungarian + Sinkhorn forward and backward), all layers."""
    selectors = [layer.quantizer for _, layer in subbit_layers(model)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for quantizer in selectors:
            quantizer.codewords().sum().backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tau", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (args.batch_size,), generator=generator)
    models = {}
    for method in ("sign", "sparks"):
        torch.manual_seed(0)
        models[method] = create("resnet18_cifar", method=method, tau=args.tau if method == "sparks" else 9)
    steps = {name: make_step(model, images, labels) for name, model in models.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            elapsed = step()
            if i >= args.warmup:
                times[name].append(elapsed)
    sign, sparks = statistics.median(times["sign"]), statistics.median(times["sparks"])
    print(f"resnet18_cifar (64-128-256-512), 32x32, batch {args.batch_size}, {args.threads} threads, "
          f"{args.steps} interleaved steps after {args.warmup} warm-up")
    print(f"  sign (1-bit) train step   : {sign * 1e3:8.1f} ms (median)")
    print(f"  sparks tau={args.tau} train step : {sparks * 1e3:8.1f} ms (median)")
    print(f"  selectors alone           : {selector_time(models['sparks']) * 1e3:8.1f} ms per step (16 layers)")
    layers = [layer for _, layer in subbit_layers(models["sparks"])]
    every = layers[0].quantizer.reselect_every
    start = time.perf_counter()
    for layer in layers:
        layer.quantizer.reselect(layer.weight)
    reselect = (time.perf_counter() - start) / max(every, 1)
    print(f"  re-selection, amortised   : {reselect * 1e3:8.1f} ms per step (all layers, once every {every} steps)")
    print(f"  ratio sparks / sign       : {sparks / sign:8.3f}x  (target <= 1.10x)")
    print(f"  ratio incl. re-selection  : {(sparks + reselect) / sign:8.3f}x")


if __name__ == "__main__":
    main()
