"""Exceptions shared across sparks (no torch import here)."""


class UsageError(Exception):
    """Bad user input (a missing file, an unknown name, a checkpoint that does not fit): the CLI prints it as one
    line and exits with code 2."""
