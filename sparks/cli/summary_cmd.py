"""``sparks summary``: storage bits, BOPs, FLOPs and OPs of a registered model or a checkpoint."""

from __future__ import annotations

import argparse

from sparks.cli.common import add_input_size, add_json, positive_float, positive_int, print_json
from sparks.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "summary", help="per-layer storage, BOPs, FLOPs and OPs of a model",
        description="Per-layer and total storage (binary Mbit, codebooks, real params), BOPs, FLOPs and "
                    "OPs = BOPs/64 + FLOPs, per image. Conventions: docs/complexity.md.")
    parser.add_argument("--arch", help="registered model name (see `sparks models`)")
    parser.add_argument("--checkpoint", help="rebuild the model from this checkpoint instead of --arch")
    parser.add_argument("--tau", type=int, help="bits per kernel index, 1..9 [default: 5, or 9 for sign and float]")
    parser.add_argument("--method", help="weight method: sparks, sign, snn, topn, random or float [default: sparks]")
    parser.add_argument("--width", type=positive_float, help="channel width multiplier [default: 1]")
    parser.add_argument("--num-classes", type=positive_int, help="classifier outputs [default: the builder's]")
    add_input_size(parser, "the checkpoint's training size, else the architecture's (224 for reactnet*, else 32)")
    add_json(parser, "the totals and per-layer rows")
    parser.set_defaults(func=run)


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
    from sparks.train.config import resolve_tau

    if args.method is not None or args.tau is not None:
        requested["tau"] = resolve_tau(args.method or "sparks", args.tau)
    return create(args.arch, **requested)


def run(args: argparse.Namespace) -> int:
    from sparks.complexity import summary

    model = build_model(args)
    result = summary(model, args.input_size, print_fn=None if args.json else print)
    if args.json:
        print_json(result)
    return 0
