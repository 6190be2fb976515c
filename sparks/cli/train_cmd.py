"""``sparks train``: train (or resume) a model; every option is a field of :class:`sparks.train.config.TrainConfig`."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from sparks.cli.common import THREADS_HELP, add_json, print_json, threads_value
from sparks.train.config import FIELDS, check_output_dir, default_text, load_yaml, make_config

_TYPES = {"int": int, "float": float, "str": str, "dict": str}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a binary / sub-bit model (DDP: torchrun --nproc_per_node=N -m sparks train ...)",
        description="Train a BNN or sub-bit model. Options come from field defaults, then --config YAML, then flags; "
                    "every value is checked before anything is written.")
    parser.add_argument("--config", metavar="YAML", help="YAML file whose keys are option names (flags override it)")
    for name, f in FIELDS.items():
        flag = "--" + name.replace("_", "-")
        shown = default_text(name)
        help_text = f.metadata["help"] + (f" [default: {shown}]" if shown is not None else "")
        kind = str(f.type).split("|")[0].strip()
        if kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
            continue
        kwargs = {k: v for k, v in f.metadata.items() if k in ("choices", "nargs", "const")}
        value_type = threads_value if name == "threads" else _TYPES[kind]
        if name == "threads":
            help_text = THREADS_HELP  # the one --threads of every subcommand
        parser.add_argument(flag, type=value_type, default=argparse.SUPPRESS, help=help_text,
                            metavar="N" if name == "threads" else name.upper(), **kwargs)
    add_json(parser, "the last epoch's metrics row")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparks.filekind import expect_checkpoint
    from sparks.train.guard import EXIT_DIVERGED
    from sparks.train.loop import TrainingDiverged, train

    overrides = load_yaml(args.config) if args.config else {}
    overrides.update({k: v for k, v in vars(args).items() if k in FIELDS})
    config = make_config(overrides)  # every value checked here, before anything is written
    if config.out:
        check_output_dir(config.out)
    for flag, path in (("--init-from", config.init_from), ("--teacher", config.teacher),
                       ("--resume", None if config.resume in (None, "auto") else config.resume)):
        if path is not None:
            expect_checkpoint(path, flag)
    try:
        # with --json, stdout carries the one JSON document; the progress lines go to stderr
        with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
            result = train(config, given=overrides)
    except TrainingDiverged as err:
        if os.environ.get("RANK", "0") == "0":  # every DDP rank stops; only the main one says why
            print(f"sparks train: error: {err}", file=sys.stderr)
        return EXIT_DIVERGED
    if args.json and os.environ.get("RANK", "0") == "0":
        print_json(result.metrics)
    return 0
