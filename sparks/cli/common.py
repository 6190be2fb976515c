"""What every ``sparks`` subcommand shares: the parser class (one-line errors), the shared flags, and value types.

One definition per flag (``--json``, ``--threads``, ``--input-size``), so that the subcommands agree on their
spelling, default and help text; help texts end in ``[default: X]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, NoReturn

THREADS_HELP = "CPU threads: a positive number or auto (all cores this process may use) [default: auto]"


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line plus a hint, exit code 2 (not the whole usage)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def add_json(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """The shared ``--json`` flag: print ``what`` as one JSON document on stdout instead of text."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON instead of text")


def add_threads(parser: argparse.ArgumentParser) -> None:
    """The shared ``--threads`` flag; ``None`` (auto) keeps the libraries' own default of all usable cores."""
    parser.add_argument("--threads", type=threads_value, default=None, metavar="N", help=THREADS_HELP)


def add_input_size(parser: argparse.ArgumentParser, default_text: str) -> None:
    """The shared ``--input-size C H W`` flag."""
    parser.add_argument("--input-size", type=positive_int, nargs=3, metavar=("C", "H", "W"),
                        help=f"input channels, height and width [default: {default_text}]")


def threads_value(text: str) -> int | None:
    """``auto`` → ``None``; else a positive int (argparse type)."""
    if text == "auto":
        return None
    return positive_int(text)


def _int_in(text: str, low: int, high: int | None, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
    return value


def positive_int(text: str) -> int:
    """An int ≥ 1 (argparse type)."""
    return _int_in(text, 1, None, "a positive integer")


def seed_int(text: str) -> int:
    """A seed: an int in 0..2**32-1 (argparse type)."""
    return _int_in(text, 0, 2**32 - 1, f"in 0..{2**32 - 1}")


def positive_float(text: str) -> float:
    """A finite float > 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` to torch (if imported) and numba; ``None`` leaves their defaults (all usable cores)."""
    if threads is None:
        return
    import numba

    from sparks.errors import UsageError

    if threads > numba.config.NUMBA_NUM_THREADS:
        raise UsageError(f"--threads must be in 1..{numba.config.NUMBA_NUM_THREADS}, got {threads}")
    numba.set_num_threads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def print_json(data: Any) -> None:
    """One JSON document on stdout."""
    print(json.dumps(data, indent=1))
