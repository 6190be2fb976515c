"""Exceptions shared across sparks (no torch import here)."""


class UsageError(Exception):
    """Bad user input (a missing file, an unknown name, a checkpoint that does not fit): the CLI prints it as one
    line and exits with code 2."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
