"""``sparks train``: train (or resume) a model; every option is a field of :class:`sparks.config.TrainConfig`."""

from __future__ import annotations

import argparse
import os
import sys

from sparks.train.config import FIELDS, load_yaml, make_config

_TYPES = {"int": int, "float": float, "str": str, "dict": str}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a binary / sub-bit model (DDP: torchrun --nproc_per_node=N -m sparks train ...)",
        description="Train a BNN or sub-bit model. Options come from field defaults, then --config YAML, then flags.")
    parser.add_argument("--config", metavar="YAML", help="YAML file whose keys are option names (flags override it)")
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        help_text = f.metadata["help"] + (f" [default: {f.default}]" if f.default not in (None, False) else "")
        kind = str(f.type).split("|")[0].strip()
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        kwargs = {k: v for k, v in f.metadata.items() if k in ("choices", "nargs", "const")}
        parser.add_argument(flag, type=_TYPES[kind], default=argparse.SUPPRESS, metavar=name.upper(), help=help_text,
                            **kwargs)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparks.train.loop import TrainingDiverged, train

    overrides = load_yaml(args.config) if args.config else {}
    overrides.update({k: v for k, v in vars(args).items() if k in FIELDS})
    config = make_config(overrides)
    try:
        train(config, given=overrides)
    except TrainingDiverged as err:
        if os.environ.get("RANK", "0") == "0":  # every DDP rank stops; only the main one says why
            print(f"sparks train: error: {err}", file=sys.stderr)
        return 3
    return 0
