"""Data-loading throughput (sparks.data) against the train step it feeds: does loading starve the model?

Usage: python bench/loader_throughput.py [--data DIR] [--batches 40] [--batch-size 128] [--widths 0.25 1]

CIFAR-10 from --data (a folder with cifar-10-batches-py/), else expanded from ../shared/data/cifar10 into a temporary
folder. Measured in one run: images/s of the training loader (augmented) three ways — the batched path (one
``__getitems__`` per batch, what ``build_loader`` uses), the per-image path (``__getitem__`` + default collate) and the
batched path in one worker process — and images/s of resnet18_cifar train steps (method ``sparks`` τ=5 and ``float``)
at each width. The last column is the share of a loader+step iteration spent loading (workers 0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sparks.train.data import build_datasets, build_loader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import TrainStep, build  # noqa: E402

SHARED_CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10" / "expand.py"


class PerImage(Dataset):
    """The same dataset without ``__getitems__``: DataLoader falls back to one ``__getitem__`` per image."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index]


def loader_rate(loader, batches: int) -> float:
    """Images/s over ``batches`` batches, after one untimed batch (worker start-up, first touch of the data)."""
    iterator = iter(loader)
    next(iterator)
    start, count = time.perf_counter(), 0
    for _ in range(batches):
        count += len(next(iterator)[1])
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="folder holding cifar-10-batches-py/ (default: expand the shared copy)")
    parser.add_argument("--batches", type=int, default=40, help="timed loader batches per variant")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--widths", type=float, nargs="+", default=[0.25, 1.0])
    parser.add_argument("--steps", type=int, default=3, help="timed train steps per model (after 1 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            subprocess.run([sys.executable, str(SHARED_CIFAR), tmp], check=True, capture_output=True)
            root = tmp
        train = build_datasets("cifar10", root).train
        loaders = {
            "batched, workers 0": build_loader(train, args.batch_size, train=True, workers=0),
            "per-image, workers 0": build_loader(PerImage(train), args.batch_size, train=True, workers=0),
            "batched, workers 1": build_loader(train, args.batch_size, train=True, workers=1),
        }
        print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, threads {args.threads}, "
              f"load {os.getloadavg()[0]:.2f}; CIFAR-10 train loader, batch {args.batch_size}")
        print("| loader (augmented CIFAR-10) | images/s |")
        print("|---|---|")
        rates = {}
        for name, loader in loaders.items():
            rates[name] = loader_rate(loader, args.batches)
            print(f"| {name} | {rates[name]:,.0f} |", flush=True)
        print("\n| train step resnet18_cifar | images/s | loading share (batched, workers 0) |")
        print("|---|---|---|")
        for width in args.widths:
            for variant in ("float", "sparks"):
                step = TrainStep(build(variant, width, 5), args.batch_size)
                step()
                seconds = sorted(step() for _ in range(args.steps))[args.steps // 2]
                load = args.batch_size / rates["batched, workers 0"]
                share = load / (load + seconds)
                print(f"| width {width}, {variant} | {args.batch_size / seconds:,.1f} | {share:.1%} |", flush=True)


if __name__ == "__main__":
    main()
