"""File size of `.sparks` format version 2 against the bit count (sparks.summary total_bits / 8), per model.

Usage: PYTHONPATH=. python bench/format_size.py   (prints a markdown table; docs/benchmarks.md records it)
"""

from __future__ import annotations

import torch

from sparks.complexity import summary
from sparks.deploy.export import export_tables
from sparks.deploy.format import sparks_bytes
from sparks.models import create

CASES = [  # (model, input (C, H, W), kwargs)
    ("vgg_small", (1, 28, 28), {"width": 0.125, "tau": 5, "num_classes": 10}),  # the README's demo model
    ("vgg_small", (3, 32, 32), {"width": 1.0, "tau": 5}),
    ("vgg_small", (3, 32, 32), {"width": 1.0, "method": "sign"}),
    ("resnet18_cifar", (3, 32, 32), {"width": 1.0, "tau": 4}),
    ("resnet18_cifar", (3, 32, 32), {"width": 0.25, "tau": 9, "method": "topn"}),
    ("reactnet18", (3, 224, 224), {"width": 1.0, "tau": 5}),
    ("reactnet34", (3, 224, 224), {"width": 1.0, "tau": 6}),
    ("reactnet34", (3, 224, 224), {"width": 0.25, "tau": 1, "method": "random"}),
]


def main() -> None:
    print("| model | input | args | bits / 8 (bytes) | file (bytes) | file / bits | bound 1.02x + 4 KiB |")
    print("|---|---|---|---:|---:|---:|---|")
    for name, size, kwargs in CASES:
        torch.manual_seed(0)
        model = create(name, in_channels=size[0], **kwargs)
        meta, tensors = export_tables(model, input_size=size)
        data = sparks_bytes(meta, tensors)
        bits = summary(model, (1, *size), print_fn=None)["total_bits"] / 8
        ok = len(data) <= 1.02 * bits + 4096
        args = ", ".join(f"{k}={v}" for k, v in kwargs.items())
        print(f"| {name} | {'x'.join(map(str, size))} | {args} | {bits:,.0f} | {len(data):,} | "
              f"{len(data) / bits:.4f} | {'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
