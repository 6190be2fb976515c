"""Packed engine vs torch on the whole Fashion-MNIST test set (10,000 images): argmax agreement and logit error.

Usage: .venv/bin/python bench/runtime_parity.py [--checkpoint CKPT] [--steps 200] [--limit N]
Without --checkpoint it trains resnet18_cifar (width 1/4, τ=5, topn) for --steps seeded Adam steps first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--limit", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import numba
    import numpy as np
    import torch

    from sparks.deploy.export import export
    from sparks.deploy.load import load
    from sparks.models import create
    from sparks.train.data import FASHION_MNIST_STATS, load_fashion_mnist

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    (train_x, train_y), (test_x, test_y) = load_fashion_mnist(args.data)
    (mean,), (std,) = FASHION_MNIST_STATS
    if args.checkpoint:
        from sparks.train.checkpoint import load_model

        model = load_model(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = create("resnet18_cifar", width=args.width, in_channels=1, num_classes=10, tau=5, method="topn")
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
        g = torch.Generator().manual_seed(0)
        model.train()
        t0 = time.time()
        for _ in range(args.steps):
            idx = torch.randint(0, len(train_y), (128,), generator=g)
            loss = torch.nn.functional.cross_entropy(model((train_x[idx].float() / 255 - mean) / std),
                                                     train_y[idx].long())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        print(f"trained {args.steps} steps in {time.time() - t0:.0f} s, last loss {loss.item():.3f}")
    model.eval()
    images = (test_x[: args.limit].float() / 255 - mean) / std
    labels = test_y[: args.limit].numpy()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.sparks"
        export(model, path)
        packed, rebuilt = load(path, runtime="packed"), load(path, runtime="torch")
        chunks = range(0, len(images), 500)
        with torch.no_grad():
            ref = np.concatenate([model(images[i:i + 500]).numpy() for i in chunks])
            exact = all(torch.equal(rebuilt(images[i:i + 500]), torch.from_numpy(ref[i:i + 500])) for i in chunks)
        t0 = time.time()
        logits = np.concatenate([packed(images[i:i + 500].numpy()) for i in chunks])
        seconds = time.time() - t0
    scale = np.abs(ref).max(axis=1)
    rel = np.abs(logits - ref).max(axis=1) / scale
    print(f"images {len(images)}: torch accuracy {100 * (ref.argmax(1) == labels).mean():.2f}%, packed accuracy "
          f"{100 * (logits.argmax(1) == labels).mean():.2f}%")
    print(f"argmax identical: {100 * (logits.argmax(1) == ref.argmax(1)).mean():.2f}%; torch rebuild bit-exact: "
          f"{exact}")
    print(f"logits within 1e-4 x max|logit|: {100 * (rel <= 1e-4).mean():.2f}% of images; median rel err "
          f"{np.median(rel):.2e}, max {rel.max():.2e}; packed engine {len(images) / seconds:.0f} images/s")


if __name__ == "__main__":
    main()
