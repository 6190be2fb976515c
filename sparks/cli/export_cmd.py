"""``sparks export``: write a checkpoint's model to a compact ``.sparks`` file (see docs/format.md)."""

from __future__ import annotations

import argparse
import os

from sparks.cli.common import add_input_size, add_json, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a checkpoint to a .sparks file",
                                   description="Export a sparks checkpoint to a .sparks file (packed sub-bit "
                                   "kernel indices, sub-codebooks, folded BN, real layers) for `sparks run`. The "
                                   "data split the model was trained on is recorded in the file's metadata.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. OUT/best.pt)")
    parser.add_argument("--out", required=True, help="output file (e.g. model.sparks)")
    parser.add_argument("--half", action="store_true", help="store the real-valued layers in float16")
    add_input_size(parser, "what the checkpoint was trained at")
    add_json(parser, "the file's size, bit count and model")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparks.complexity import summary
    from sparks.deploy.export import export
    from sparks.errors import UsageError
    from sparks.train.checkpoint import load_checkpoint, model_from_checkpoint
    from sparks.train.config import check_output_dir, split_record

    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir):
        raise UsageError(f"output folder {out_dir} does not exist")
    if os.path.isdir(args.out):
        raise UsageError(f"--out {args.out} is a directory; give a file name such as {args.out}/model.sparks")
    check_output_dir(out_dir, shown=args.out)
    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state, args.checkpoint).eval()
    model.checkpoint_data = state.get("data") or {}
    split = split_record(state.get("config"))
    meta = export(model, args.out, half=args.half, input_size=args.input_size,
                  training={"data": split} if split else None)
    size = os.path.getsize(args.out)
    inp = meta["input"]
    total = summary(model, (1, inp["channels"], inp["height"], inp["width"]), print_fn=None)["total_bits"] / 8
    binary = sum(op["op"] == "subbit_conv2d" for op in meta["ops"])
    result = {"path": args.out, "bytes": size, "bit_count_bytes": total, "ratio": size / total,
              "model_name": meta["model_name"], "tau": meta["tau"], "method": meta["method"], "subbit_layers": binary,
              "real_dtype": meta["real_dtype"], "input": inp, "training": meta.get("training")}
    if args.json:
        print_json(result)
        return 0
    print(f"wrote {args.out}: {size:,} bytes ({size / total:.3f}x the model's {total:,.0f}-byte bit count); "
          f"{meta['model_name']} tau={meta['tau']} method={meta['method']}, {binary} sub-bit layers, "
          f"{meta['real_dtype']} real layers")
    return 0
