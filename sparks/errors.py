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


class SparksFormatError(SparksError, ValueError):
    """A ``.sparks`` file that cannot be used: truncated, corrupted, crafted, over a limit, or of an unknown format
    version (raised by :mod:`sparks.deploy.format`)."""


class CheckpointError(UsageError):
    """A training checkpoint that cannot be used: not a checkpoint, corrupted, hostile fields, or over a limit
    (raised by :mod:`sparks.train.checkpoint`)."""
