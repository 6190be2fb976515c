"""The ``sparks`` command line: one module per subcommand, each a thin layer over library functions.

Every subcommand module defines ``register(subparsers)`` that adds its parser and sets ``func`` (called with the
parsed args, returning an exit code). Bad input raises a :class:`SparksError` (or ``ValueError``/``FileNotFoundError``
from the library): ``main`` prints it as one line on stderr and exits with code 2; argparse's own errors are one
line too (:class:`sparks.cli.common.Parser`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sparks.cli import (
    analyze_cmd,
    bench_cmd,
    eval_cmd,
    export_cmd,
    models_cmd,
    run_cmd,
    summary_cmd,
    sweep_cmd,
    train_cmd,
)
from sparks.cli.common import Parser
from sparks.errors import SparksError

# Subcommands in the order ``sparks --help`` lists them (imported explicitly: a missing module is an ImportError).
SUBCOMMANDS = {"train": train_cmd, "eval": eval_cmd, "models": models_cmd, "summary": summary_cmd,
               "analyze": analyze_cmd, "export": export_cmd, "run": run_cmd, "bench": bench_cmd, "sweep": sweep_cmd}


def build_parser() -> argparse.ArgumentParser:
    from sparks import __version__

    parser = Parser(prog="sparks", description="Sub-bit binary neural networks (Sparks).")
    parser.add_argument("--version", action="version", version=f"sparks {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in SUBCOMMANDS.values():
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # name the subcommand whose options they are not
            sub = SUBCOMMANDS.get(getattr(args, "command", None) or "")
            where = parser._subparsers._group_actions[0].choices[args.command] if sub else parser
            where.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:
        if exit_.code in (0, None):  # --help, --version
            raise
        return int(exit_.code) if isinstance(exit_.code, int) else 2  # the one-line error is already printed
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (SparksError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
            PermissionError) as err:
        from sparks.errors import first_line

        print(f"sparks {args.command}: error: {first_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparks {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
