"""Fault injection for crash tests (no torch import): ``SPARKS_FAULT=NAME@N`` kills this process with SIGKILL at
the N-th time it reaches the point called NAME (``NAME@N:stop`` stops it with SIGSTOP instead).

The points are the moments a crash can leave a run directory in a new state: ``write:FILE`` (a half-written
temporary file of FILE), ``replace:FILE`` (its temporary file complete, not yet renamed), ``replaced:FILE`` (just
after the rename), ``lock`` (the lock held, its owner line half-written) and ``step`` (inside a training epoch).
Unset, every point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

_counts: dict[str, int] = {}


def _spec() -> tuple[str, int, str] | None:
    raw = os.environ.get("SPARKS_FAULT")
    if not raw:
        return None
    name, _, rest = raw.rpartition("@")
    count, _, action = rest.partition(":")
    return name, int(count), action or "kill"


def fault_point(name: str, partial: str | Path | None = None) -> None:
    """Reached the point ``name``; when it is the one ``SPARKS_FAULT`` names, for the N-th time, truncate
    ``partial`` (a file being written) to half its size and kill (or stop) this process."""
    spec = _spec()
    if spec is None or spec[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] != spec[1]:
        return
    if partial is not None and Path(partial).exists():
        os.truncate(partial, Path(partial).stat().st_size // 2)
    os.kill(os.getpid(), signal.SIGSTOP if spec[2] == "stop" else signal.SIGKILL)


def run_cli(argv: list[str], env: dict[str, str], log: str) -> None:
    """Run ``sparks`` with ``argv`` in this (child) process with extra environment ``env`` and stdout/stderr to
    ``log``; exits with its code. The crash tests start it in a fork of a process that imported torch once."""
    import sys

    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    from sparks.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
