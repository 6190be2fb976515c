"""Run a grid: make the step-1 checkpoint if the grid says how and it is missing, then every step-2 run not yet in
the results CSV, ``jobs`` at a time, each as a worker subprocess in its own run folder; append each finished run's
row to the CSV as soon as it ends. Stopping and restarting is safe: recorded runs are skipped, an interrupted run
continues from its last epoch checkpoint, and a run that finished but was not recorded is recorded without training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sparks.errors import UsageError
from sparks.experiments.ledger import append_rows, finished_hashes
from sparks.experiments.spec import ONE_TAU_METHODS, GridSpec, RunSpec, expand, file_digest, step1_path
from sparks.experiments.worker import RESULT_FILE, RUN_FILE, run_one
from sparks.train.guard import EXIT_DIVERGED, TrainingDiverged

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class GridOutcome:
    """What :func:`run_grid` did: run labels skipped (already recorded), recorded now, diverged (stopped by the
    divergence guard, exit code 3) and failed otherwise (the last two with log paths)."""

    skipped: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)


def git_commit(repo: Path = PACKAGE_ROOT) -> str:
    """The commit of the code that runs (``+dirty`` when tracked files differ from it), or ``unknown``."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _worker_env(threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    if threads:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def _launch(run_dir: Path, info: dict[str, Any], threads: int | None, in_process: bool = False) -> str:
    """Write ``run.json`` and run the worker on it, as a subprocess with its output in ``run_dir/log.txt`` or, with
    ``in_process``, in this process (tests, debugging); ``"ok"``, ``"diverged"`` or ``"failed"``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(info, indent=1, default=str) + "\n")
    with open(run_dir / "log.txt", "a") as log:
        log.write(f"--- {datetime.now(timezone.utc).isoformat(timespec='seconds')} start\n")
        log.flush()
        if in_process:
            try:
                run_one(run_dir)
            except Exception as err:  # noqa: BLE001 - a failed run is reported and the grid goes on
                log.write(f"error: {type(err).__name__}: {err}\n")
                return "diverged" if isinstance(err, TrainingDiverged) else "failed"
            return "ok"
        proc = subprocess.run([sys.executable, "-m", "sparks.experiments.worker", str(run_dir)], stdout=log,
                              stderr=subprocess.STDOUT, env=_worker_env(threads), cwd=str(PACKAGE_ROOT))
    return {0: "ok", EXIT_DIVERGED: "diverged"}.get(proc.returncode, "failed")


def ensure_step1(spec: GridSpec, log: Callable[[str], None] = print, in_process: bool = False) -> dict[int, str]:
    """seed → digest of the step-1 checkpoint each seed starts from; trains a missing one when ``step1.train``
    says how (into the checkpoint's folder, which must then be named ``.../last.pt``)."""
    digests: dict[int, str] = {}
    for seed in spec.seeds:
        path = step1_path(spec, seed)
        if not path.is_file():
            if spec.step1_train is None:
                raise UsageError(f"step-1 checkpoint {path} does not exist and the grid has no step1.train")
            if path.name != "last.pt":
                raise UsageError(f"step1.checkpoint {path} must end in last.pt to be trained by the grid")
            step1_seed = seed if "{seed}" in spec.step1_checkpoint else spec.step1_train.get("seed", 0)
            config = {**spec.train, "method": "float", **spec.step1_train, "seed": step1_seed}
            log(f"step 1: training {path} ({config.get('epochs')} epochs, method {config['method']})")
            status = _launch(path.parent, {"run_hash": "step1", "config": config}, config.get("threads"), in_process)
            if status != "ok":
                raise UsageError(f"step-1 training {status}; see {path.parent / 'log.txt'}")
        digests[seed] = file_digest(path)
    return digests


def select(runs: list[RunSpec], labels: list[str] | None = None, taus: list[int] | None = None,
           seeds: list[int] | None = None) -> list[RunSpec]:
    """The runs matching every given filter (``None`` = all); ``taus`` does not filter sign/float (τ = 9 only)."""
    return [r for r in runs if (labels is None or r.label in labels) and (seeds is None or r.seed in seeds)
            and (taus is None or r.tau in taus or r.method in ONE_TAU_METHODS)]


def _row(run: RunSpec, result: dict[str, Any], commit: str) -> dict[str, Any]:
    return {"grid": run.grid, "label": run.label, "method": run.method, "tau": run.tau, "seed": run.seed,
            **{k: v for k, v in result.items() if k != "run_hash"}, "git_commit": commit,
            "shared_hash": run.shared_hash, "run_hash": run.run_hash,
            "finished_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _recorded_result(run_dir: Path, run: RunSpec) -> dict[str, Any] | None:
    path = run_dir / RESULT_FILE
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("run_hash") == run.run_hash else None


def run_grid(spec: GridSpec, jobs: int = 1, labels: list[str] | None = None, taus: list[int] | None = None,
             seeds: list[int] | None = None, dry_run: bool = False,
             log: Callable[[str], None] = print) -> GridOutcome:
    """Run the grid's unrecorded runs (filtered by label/τ/seed), ``jobs`` worker processes at a time; ``jobs=0``
    runs them one after the other in this process (tests, debugging)."""
    if jobs < 0:
        raise UsageError(f"--jobs must be >= 0, got {jobs}")
    if dry_run:
        digests = {s: file_digest(step1_path(spec, s)) if step1_path(spec, s).is_file() else "missing"
                   for s in spec.seeds}
        for path in sorted({str(step1_path(spec, s)) for s, d in digests.items() if d == "missing"}):
            log(f"step 1: {path} is missing; it would be trained first" if spec.step1_train is not None
                else f"step 1: {path} is missing and the grid has no step1.train: the grid cannot run")
    else:
        digests = ensure_step1(spec, log, in_process=jobs == 0)
    runs = select(expand(spec, digests), labels, taus, seeds)
    if not runs:
        raise UsageError(f"grid {spec.name}: no run matches the --methods/--taus/--seeds filters")
    done = finished_hashes(spec.csv)
    outcome = GridOutcome()
    pending = []
    for run in runs:
        name = f"{run.label} τ={run.tau} seed={run.seed}"
        if run.run_hash in done:
            outcome.skipped.append(name)
        else:
            pending.append((name, run))
    log(f"grid {spec.name}: {len(runs)} runs, {len(outcome.skipped)} already in {spec.csv}, {len(pending)} to run")
    if dry_run:
        for name, run in pending:
            log(f"  would run {name} in {spec.runs_dir / run.dirname}")
        return outcome
    from sparks.core.methods import METHODS

    missing = sorted({run.method for _, run in pending} - set(METHODS))
    if missing:
        raise UsageError(f"weight method {missing[0]!r} is not registered in this sparks (known: "
                         f"{', '.join(sorted(METHODS))}); leave it out with --methods")
    commit = git_commit()
    lock = threading.Lock()

    def one(item: tuple[str, RunSpec]) -> None:
        name, run = item
        run_dir = spec.runs_dir / run.dirname
        result = _recorded_result(run_dir, run)
        if result is None:
            start = time.time()
            with lock:
                log(f"start  {name} -> {run_dir}")
            status = _launch(run_dir, asdict(run), run.config.get("threads"), in_process=jobs == 0)
            result = _recorded_result(run_dir, run) if status == "ok" else None
            if result is None:
                with lock:
                    (outcome.diverged if status == "diverged" else outcome.failed).append(
                        f"{name} (log: {run_dir / 'log.txt'})")
                    log(f"{'DIVERGED' if status == 'diverged' else 'FAILED'} {name}: see {run_dir / 'log.txt'}")
                return
            elapsed = time.time() - start
        else:
            elapsed = 0.0
        with lock:
            append_rows(spec.csv, [_row(run, result, commit)])
            outcome.recorded.append(name)
            log(f"done   {name}: val top-1 {result['val_top1']:.2f} ({elapsed:.0f} s)")

    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        list(pool.map(one, pending))
    return outcome
