"""``sparks export``: write a checkpoint's model to a compact ``.sparks`` file (see docs/format.md)."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a checkpoint to a .sparks file",
                                   description="Export a sparks checkpoint to a .sparks file (packed sub-bit "
                                   "kernel indices, sub-codebooks, folded BN, real layers) for `sparks run`.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. OUT/best.pt)")
    parser.add_argument("--out", required=True, help="output file (e.g. model.sparks)")
    parser.add_argument("--half", action="store_true", help="store the real-valued layers in float16")
    parser.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"),
                        help="input size [default: what the checkpoint was trained at]")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparks.complexity import summary
    from sparks.deploy.export import export
    from sparks.errors import UsageError
    from sparks.train.checkpoint import load_model

    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output folder {out_dir} does not exist")
    model = load_model(args.checkpoint)
    meta = export(model, args.out, half=args.half, input_size=args.input_size)
    size = os.path.getsize(args.out)
    inp = meta["input"]
    total = summary(model, (1, inp["channels"], inp["height"], inp["width"]), print_fn=None)["total_bits"] / 8
    binary = sum(op["op"] == "subbit_conv2d" for op in meta["ops"])
    print(f"wrote {args.out}: {size:,} bytes ({size / total:.3f}x the model's {total:,.0f}-byte bit count); "
          f"{meta['model_name']} tau={meta['tau']} method={meta['method']}, {binary} sub-bit layers, "
          f"{meta['real_dtype']} real layers")
    return 0
