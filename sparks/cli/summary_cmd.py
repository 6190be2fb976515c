"""``sparks summary``: storage bits, BOPs, FLOPs and OPs of a registered model or a checkpoint."""

from __future__ import annotations

import argparse
import json

from sparks.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary", help="per-layer storage, BOPs, FLOPs and OPs of a model",
        description="Per-layer and total storage (binary Mbit, codebooks, real params), BOPs, FLOPs and "
                    "OPs = BOPs/64 + FLOPs, per image. Conventions: docs/complexity.md.")
    parser.add_argument("--arch", help="registered model name (see `sparks models`)")
    parser.add_argument("--checkpoint", help="rebuild the model from this checkpoint instead of --arch")
    parser.add_argument("--tau", type=int, help="bits per kernel index, 1..9")
    parser.add_argument("--method", help="weight method (sparks, sign, snn, topn, random, float)")
    parser.add_argument("--width", type=float, help="channel width multiplier")
    parser.add_argument("--num-classes", type=int, help="classifier outputs")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="DIM",
                        help="C H W or N C H W (default: the checkpoint's training size, else C×224×224 for "
                             "reactnet*, C×32×32 otherwise, C×28×28 for 1-channel models)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    parser.set_defaults(func=run)


def default_input_size(model) -> tuple[int, int, int]:
    """The (H, W) the checkpoint was trained at if it says; else C×224×224 for the ImageNet models (reactnet*),
    C×32×32 for CIFAR ones, C×28×28 when C = 1 (Fashion-MNIST)."""
    model_name = getattr(model, "model_name", "") or ""
    channels = int((getattr(model, "model_args", None) or {}).get("in_channels", 3))
    trained = (getattr(model, "checkpoint_data", None) or {}).get("input_size")
    if trained and len(trained) == 2:
        return channels, int(trained[0]), int(trained[1])
    if model_name.startswith("reactnet"):
        return channels, 224, 224
    return (channels, 28, 28) if channels == 1 else (channels, 32, 32)


def build_model(args: argparse.Namespace):
    """The model the arguments name: from ``--checkpoint`` (other model flags must agree with it) or ``--arch``."""
    requested = {"tau": args.tau, "method": args.method, "width": args.width, "num_classes": args.num_classes}
    if args.checkpoint:
        from sparks.train.checkpoint import load_model

        model = load_model(args.checkpoint)
        name = getattr(model, "model_name", None)
        stored = getattr(model, "model_args", {}) or {}
        if args.arch and name and args.arch != name:
            raise UsageError(f"--arch {args.arch} contradicts the checkpoint's model {name!r}")
        for key, value in requested.items():
            if value is not None and key in stored and stored[key] != value:
                raise UsageError(f"--{key.replace('_', '-')} {value} contradicts the checkpoint's {key}={stored[key]}")
        return model
    if not args.arch:
        raise UsageError("give --arch NAME or --checkpoint FILE")
    from sparks.models import create

    return create(args.arch, **requested)


def run(args: argparse.Namespace) -> int:
    from sparks.complexity import summary

    if args.input_size is not None and len(args.input_size) not in (3, 4):
        raise UsageError(f"--input-size takes C H W or N C H W, got {len(args.input_size)} numbers")
    model = build_model(args)
    size = args.input_size or default_input_size(model)
    result = summary(model, size, print_fn=None if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0
