"""The exceptions of sparks, one family (no torch import here): the CLI prints any :class:`SparksError` as one
line and exits with code 2."""


class SparksError(Exception):
    """Base of every error sparks raises on bad input: a file, a setting or a command line."""


class UsageError(SparksError):
    """Bad user input (a missing file, an unknown name, contradictory settings)."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
