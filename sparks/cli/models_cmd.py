"""``sparks models``: the registered architectures with their parameter counts and sub-bit layers."""

from __future__ import annotations

import argparse
from typing import Any

from sparks.cli.common import add_json, positive_float, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list the registered models with parameter counts",
        description="List the registered models, each built with its default arguments (1000 classes for reactnet*, "
                    "10 for the CIFAR ones; Sparks τ=5 unless --method/--tau say otherwise), with its parameter count "
                    "and number of sub-bit layers.")
    parser.add_argument("--method", help="weight method to build with [default: sparks]")
    parser.add_argument("--tau", type=int, help="bits per kernel index, 1..9 [default: 5, or 9 for sign and float]")
    parser.add_argument("--width", type=positive_float, help="channel width multiplier [default: 1]")
    add_json(parser, "a list of rows")
    parser.set_defaults(func=run)


def describe(name: str, **kwargs: Any) -> dict[str, Any]:
    """Counts for model ``name`` built with ``kwargs`` (``None`` values keep the builder defaults)."""
    from sparks.core.layers import subbit_layers
    from sparks.models import create

    model = create(name, **kwargs)
    layers = [layer for _, layer in subbit_layers(model)]
    selection = sum(p.numel() for layer in layers for p in layer.quantizer.parameters())
    num_classes = next(m for m in reversed(list(model.modules())) if hasattr(m, "out_features")).out_features
    return {
        "name": name,
        "params": sum(p.numel() for p in model.parameters()),
        "subbit_layers": len(layers),
        "binary_weights": sum(layer.weight.numel() for layer in layers),
        "selection_params": selection,
        "num_classes": num_classes,
        "method": layers[0].method if layers else None,
        "tau": layers[0].tau if layers else None,
    }


def run(args: argparse.Namespace) -> int:
    from sparks.models import list_models
    from sparks.train.config import resolve_tau

    tau = resolve_tau(args.method or "sparks", args.tau) if args.method is not None or args.tau is not None else None
    rows = [describe(name, method=args.method, tau=tau, width=args.width) for name in list_models()]
    if args.json:
        print_json(rows)
        return 0
    head = ("model", "params", "sub-bit layers", "binary weights", "selection params", "classes", "method")
    table = [head] + [(r["name"], f"{r['params']:,}", str(r["subbit_layers"]), f"{r['binary_weights']:,}",
                       f"{r['selection_params']:,}", str(r["num_classes"]), f"{r['method']} τ={r['tau']}")
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for k, row in enumerate(table):
        cells = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        print("  ".join(cells))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    print("binary weights: latent weights of the sub-bit 3×3 convs (stored at τ/9 bit each); selection params: the "
          "weight method's own learnable tensors")
    return 0
