"""The ``sparks`` command line: one module per subcommand, each a thin layer over library functions.

Every subcommand module defines ``register(subparsers)`` that adds its parser and sets ``func`` (called with the
parsed args, returning an exit code). Bad input raises a :class:`SparksError` (or ``ValueError``/``FileNotFoundError``
from the library): ``main`` prints it as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sparks.errors import SparksError

# Subcommand modules, in the order ``sparks --help`` lists them; a module missing here is simply not offered.
SUBCOMMANDS = ("train", "eval", "models", "summary", "analyze", "export", "run", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparks", description="Sub-bit binary neural networks (Sparks).")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"sparks {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}_cmd")
        except ModuleNotFoundError as err:
            if err.name == f"{__name__}.{name}_cmd":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (SparksError, ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as err:
        print(f"sparks {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sparks {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
