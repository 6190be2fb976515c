"""The run directory (``--out``): one owner at a time, no stale temporary files, and a state that is consistent at
every instant.

``last.pt`` is the single source of truth: it holds the weights, optimiser and RNG state *and* every metrics row.
``metrics.jsonl``, ``best.pt`` and ``config.yaml`` are derived from it and rebuilt by :func:`repair` when a kill
left them behind; every file is written atomically (:func:`sparks.atomic.atomic_path`). See docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sparks.atomic import TMP_SUFFIX, atomic_path
from sparks.errors import UsageError
from sparks.faults import fault_point
from sparks.train import checkpoint as ckpt
from sparks.train.config import FIELDS, TrainConfig, load_yaml
from sparks.train.monitor import metrics_text, plot_curves, read_metrics, write_metrics

LOCK = ".lock"
RESUME_LOG = "resume.jsonl"
# The files of a run, the source of truth first.
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", RESUME_LOG, "curves.png", "config.yaml")
# Options of one invocation only: never restored from the run.
INVOCATION = ("out", "resume", "overwrite", "stop_after")
# Options that may change when resuming (where and how to run, not what to train); others are refused.
# (--init-from only starts a run: a resume does not read it.)
OPERATIONAL = ("data", "workers", "device", "threads", "progress", "eval_test", "diverge_patience", "diverge_factor",
               "init_from", "data_on_device", "channels_last", "compile")


def note(text: str) -> None:
    """One ``note:`` line on stderr."""
    print(f"sparks train: note: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------ lock


@dataclass
class RunLock:
    """An exclusive lock on a run directory: ``OUT/.lock`` held with ``flock`` (the kernel drops it when the owner
    dies, even by SIGKILL) and naming the owner's pid and host for the error message of a second run."""

    path: Path
    fd: int
    created: bool  # this run created the directory: removed again if nothing else was written into it

    def release(self) -> None:
        self.path.unlink(missing_ok=True)  # while still holding it, so that no one locks the old file meanwhile
        os.close(self.fd)
        if self.created:
            with contextlib.suppress(OSError):  # not empty: the run wrote its files
                self.path.parent.rmdir()


def _owner(fd: int) -> dict[str, Any]:
    raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
    try:
        owner = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "an unknown process"
    return f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}"


def _alive_here(owner: dict[str, Any]) -> bool:
    """Whether the owner of a lock file runs on this host (for file systems without ``flock``)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(out: Path) -> RunLock:
    """Create ``out`` and lock it for this process; ``UsageError`` if another live run holds it. A lock left by a
    dead process is taken over with a note."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            owner = _owner(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or _alive_here(owner):
                os.close(fd)
                raise UsageError(f"{out} is in use by another `sparks train` ({_describe(owner)}); wait for it to "
                                 f"finish or choose another --out") from None
            note(f"{out} cannot be locked ({err.strerror}): only the pid in {LOCK} guards it")
            break
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder released (unlinked) it between our open and our flock: lock the new file
    previous = _owner(fd)
    if os.fstat(fd).st_size:
        note(f"taking over the lock of {_describe(previous)}, which is not running any more")
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text[: len(text) // 2], 0)  # in two writes, so that the crash test can kill between them
    fault_point("lock")
    os.pwrite(fd, text, 0)
    return RunLock(path, fd, created)


def remove_stale_temps(out: Path) -> list[str]:
    """Delete the ``.NAME.PID.tmp`` files a killed run left in ``out`` (call with the lock held; other tools'
    temporary files are left alone); their names."""
    stale = sorted(p for name in RUN_FILES for p in out.glob(f".{name}.*{TMP_SUFFIX}") if p.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return [p.name for p in stale]


def clear_run(out: Path) -> None:
    """``--overwrite``: remove the previous run's files, the source of truth (last.pt) first."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------------------- settings


def flag(name: str, value: Any) -> str:
    """The command-line spelling of one setting (``--no-eval-test``, ``--threads 4``)."""
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else "--no-" + option[2:]
    return f"{option} {value}"


def resume_settings(cfg: TrainConfig, stored: Any, given: set[str] | None, source: Path
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, tuple[Any, Any]]]:
    """The settings of a resumed run: ``(effective settings, the run's own settings, changes)``.

    The run's settings are restored; those of ``given`` (the options set on this command line; None: those that
    differ from the defaults) that differ from the run's are taken when operational (``OPERATIONAL``) and listed in
    ``changes`` as ``{name: (run's value, new value)}``; a training setting that differs is a ``UsageError``."""
    if not isinstance(stored, dict):
        raise UsageError(f"{source} holds no training configuration; it cannot be resumed")
    current, defaults = cfg.to_dict(), TrainConfig().to_dict()
    if given is None:
        given = {name for name, value in current.items() if value != defaults[name]}
    record = {name: stored.get(name, defaults[name]) for name in FIELDS}
    effective = dict(record, **{name: current[name] for name in INVOCATION})
    changes = {}
    for name in sorted(set(given) & set(FIELDS) - set(INVOCATION)):
        old, new = record[name], current[name]
        if old == new:
            continue
        if name not in OPERATIONAL:
            raise UsageError(f"{flag(name, new)} differs from the run's {flag(name, old)}: a resumed run keeps its "
                             f"training settings (drop the option, or start a new run in another --out)")
        effective[name] = new
        changes[name] = (old, new)
    return effective, record, changes


def log_resume(out: Path, epoch: int, changes: dict[str, tuple[Any, Any]]) -> None:
    """Append one entry to ``OUT/resume.jsonl``: when, at which epoch, and the operational settings this invocation
    changed (config.yaml keeps the run's own settings)."""
    path = out / RESUME_LOG
    old = path.read_text() if path.exists() else ""
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "epoch": epoch, "pid": os.getpid(),
             "host": socket.gethostname(), "changed": {k: {"run": a, "now": b} for k, (a, b) in changes.items()}}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(old + json.dumps(entry) + "\n")
    if changes:
        note(f"resuming at epoch {epoch} with " + ", ".join(
            f"{flag(k, new)} (the run had {flag(k, old)})" for k, (old, new) in changes.items()))


# ------------------------------------------------------------------------------------------------------ resuming


def file_id(path: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of ``path`` or None: tells whether a file was replaced meanwhile."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def resume_source(cfg: TrainConfig, out: Path) -> tuple[dict[str, Any] | None, Any, Path]:
    """(checkpoint or None, the run's stored settings, where they come from) for ``--resume``: ``OUT/last.pt``, or
    ``OUT/config.yaml`` of a run killed before its first checkpoint, or the checkpoint ``--resume PATH`` names."""
    if cfg.resume != "auto":
        state = ckpt.load_checkpoint(cfg.resume)
        return state, state.get("config"), Path(cfg.resume)
    last = out / "last.pt"
    if last.exists():
        state = ckpt.load_checkpoint(last)
        return state, state.get("config"), last
    if (out / "config.yaml").is_file():  # open_run_dir says so once the directory is ours
        return None, load_yaml(out / "config.yaml"), out / "config.yaml"
    raise UsageError(f"--resume: {last} does not exist (nothing to resume; start the run without --resume)")


def take_over(cfg: TrainConfig, out: Path, seen: tuple[int, int, int] | None) -> None:
    """With the lock held: check that last.pt did not change since it was read, clear the old run for
    ``--overwrite``, remove stale temporary files."""
    if cfg.resume == "auto" and file_id(out / "last.pt") != seen:
        raise UsageError(f"{out / 'last.pt'} changed while this run started (another run just wrote it); try again")
    if not cfg.resume and (out / "last.pt").exists():
        if not cfg.overwrite:
            raise UsageError(f"{out} already holds a run (last.pt); pass --resume to continue it or --overwrite")
        clear_run(out)
    stale = remove_stale_temps(out)
    if stale:
        note(f"removed {len(stale)} temporary file(s) a killed run left in {out}: {', '.join(stale)}")


def history(state: dict[str, Any], out: Path) -> tuple[list[dict[str, Any]], str | None, int | None]:
    """(metrics rows, best-metric key, best epoch) of a checkpoint. Checkpoints hold their rows; older ones
    without ``metrics`` take them from ``OUT/metrics.jsonl``."""
    epoch = int(state["epoch"])
    rows = state.get("metrics")
    if not isinstance(rows, list):
        rows = [r for r in read_metrics(out / "metrics.jsonl") if r.get("epoch", 0) <= epoch]
    key = state.get("best_key")
    if key is None and rows:
        key = next(k for k in ("val_acc", "test_acc", "train_acc") if k in rows[0] or k == "train_acc")
    best_epoch = state.get("best_epoch")
    if best_epoch is None and key is not None:
        scored = [(r[key], -r["epoch"]) for r in rows if key in r]
        best_epoch = -max(scored)[1] if scored else None
    return rows, key, best_epoch


# ----------------------------------------------------------------------------------------------------- derived files


def write_config(record: dict[str, Any], path: Path) -> None:
    """``config.yaml``: the run's own settings (usable again with ``--config``)."""
    text = yaml.safe_dump(record, sort_keys=False)
    if path.exists() and path.read_text() == text:
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def save_epoch(out: Path, state: dict[str, Any], is_best: bool) -> None:
    """The end of an epoch, in this order: last.pt (the truth, holding every row), best.pt when it is the best so
    far; the caller then rewrites metrics.jsonl. A kill between any two leaves what :func:`repair` completes."""
    ckpt.save_checkpoint(state, out / "last.pt")
    if is_best:
        ckpt.save_checkpoint(state, out / "best.pt")


def repair(out: Path, state: dict[str, Any], rows: list[dict[str, Any]], best_epoch: int | None) -> None:
    """Bring the files derived from the checkpoint ``state`` up to date: ``metrics.jsonl`` (its rows) and
    ``best.pt`` (rebuilt from ``state`` when the best epoch is the checkpoint's own, e.g. after a kill between the
    last.pt and best.pt writes)."""
    metrics = out / "metrics.jsonl"
    if not metrics.exists() or metrics.read_text() != metrics_text(rows):
        write_metrics(metrics, rows)
    if best_epoch is None:
        return
    best = out / "best.pt"
    try:
        have = ckpt.load_checkpoint(best).get("epoch") if best.exists() else None
    except UsageError:
        have = "unreadable"
    if have == best_epoch:
        return
    epoch = int(state["epoch"])
    if best_epoch == epoch:
        ckpt.save_checkpoint(state, best)
        note(f"best.pt {'was missing' if have is None else f'held epoch {have}'}; rebuilt it from epoch {epoch}, "
             f"the best so far")
    else:
        note(f"best.pt {'is missing' if have is None else f'holds epoch {have}'} but the best epoch is {best_epoch}; "
             f"it cannot be rebuilt from epoch {epoch} and is left as it is")


def finish(out: Path, state: dict[str, Any], record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``--resume`` of a run that has done all its epochs: repair the derived files (curves.png included), say so
    in one line; its metrics rows."""
    rows, _, best_epoch = history(state, out)
    repair(out, state, rows, best_epoch)
    if record is not None:
        write_config(record, out / "config.yaml")
    if rows:
        plot_curves(rows, out / "curves.png")
    print(f"sparks train: the run in {out} is already finished ({state['epoch']} epochs); nothing to do", flush=True)
    return rows
