"""The run directory survives SIGKILL anywhere: kills at chosen points (``SPARKS_FAULT``, see sparks/faults.py) in
every checkpoint, metrics, config and lock write and inside epochs, then ``--resume``, end with weights, optimiser
state, RNG state and metrics identical (``torch.equal``) to an uninterrupted run. Plus the lock, the settings a
resume restores or refuses, and the divergence guard.

Each ``sparks train`` runs in a child forked from a forkserver that imported torch once (a fresh interpreter costs
seconds per run on the shared machine); the uninterrupted reference is computed once per module."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from sparks.cli import SUBCOMMANDS
from sparks.faults import run_cli
from sparks.train.checkpoint import load_checkpoint
from sparks.train.data import load_fashion_mnist

EPOCHS = 3


def _write_idx(path: Path, array: np.ndarray) -> None:
    magic = 0x00000803 if array.ndim == 3 else 0x00000801
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny_fmnist(tmp_path_factory, fashion_mnist_root) -> Path:
    """256 training and 64 test images of Fashion-MNIST as raw IDX files (loads in milliseconds)."""
    (images, labels), (test_images, test_labels) = load_fashion_mnist(fashion_mnist_root)
    root = tmp_path_factory.mktemp("fmnist_tiny")
    for prefix, x, y, n in (("train", images, labels, 256), ("t10k", test_images, test_labels, 64)):
        _write_idx(root / f"{prefix}-images-idx3-ubyte", x[:n, 0].numpy())
        _write_idx(root / f"{prefix}-labels-idx1-ubyte", y[:n].numpy())
    return root


@pytest.fixture(scope="module")
def ctx():
    os.environ.setdefault("MPLBACKEND", "Agg")
    context = multiprocessing.get_context("forkserver")
    # Everything a run imports, so that no child pays for it (halves a child's CPU time).
    context.set_forkserver_preload(["torch", "torch._dynamo", "torch.distributed", "torch.optim", "sympy",
                                    "matplotlib.pyplot", "matplotlib.backends.backend_agg", "PIL.PngImagePlugin",
                                    "sparks.models", "sparks.train.loop", "sparks.train.data", "sparks.cli",
                                    *(f"sparks.cli.{name}_cmd" for name in SUBCOMMANDS)])
    return context


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    # 224 training images (32 held out for validation), batch 64: 3 steps an epoch.
    return ["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(data), "--val-fraction", "0.125",
            "--batch-size", "64", "--epochs", str(EPOCHS), "--workers", "0", "--no-eval-test", "--threads", "1",
            "--no-progress", "--out", str(out), *extra]


def sparks(ctx, argv: list[str], log: Path, fault: str | None = None) -> tuple[int, str]:
    """Run ``sparks ARGV`` in a child (with ``SPARKS_FAULT=fault``); (exit code, -9 when killed; its output)."""
    env = {"SPARKS_FAULT": fault or "", "OMP_NUM_THREADS": "1"}
    proc = ctx.Process(target=run_cli, args=(argv, env, str(log)))
    proc.start()
    proc.join(timeout=300)
    if proc.is_alive():
        proc.kill()
        pytest.fail(f"sparks {' '.join(argv)} hung")
    return proc.exitcode, log.read_text()


@pytest.fixture(scope="module")
def reference(ctx, tiny_fmnist, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    code, log = sparks(ctx, train_args(tiny_fmnist, out), out.parent / "log")
    assert code == 0, log
    return out


def assert_same(a, b, where: str = "") -> None:
    """Recursive equality; tensors with torch.equal; the wall time of a row and the output folder are ignored."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        keys = set(a) - {"time", "out"}
        assert keys == set(b) - {"time", "out"}, (where, sorted(keys ^ (set(b) - {"time", "out"})))
        for key in keys:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_run(out: Path, ref: Path) -> None:
    """last.pt, best.pt, metrics.jsonl and config.yaml as in the reference; no lock or temporary file left."""
    for name in ("last.pt", "best.pt"):
        assert_same(load_checkpoint(out / name), load_checkpoint(ref / name), name)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert_same(rows, [json.loads(line) for line in (ref / "metrics.jsonl").read_text().splitlines()], "jsonl")
    assert (out / "config.yaml").read_text().replace(str(out), "OUT") == \
        (ref / "config.yaml").read_text().replace(str(ref), "OUT")
    assert (out / "curves.png").stat().st_size > 0
    left = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert left == [], left


# Kill points: the faults of successive invocations (each continues with --resume once config.yaml exists, else
# starts again), and a line each of them must print. ``write:F`` leaves a half-written temporary file of F,
# ``replace:F`` a complete one not yet renamed, ``replaced:F`` kills just after the rename; counts are per process
# (metrics.jsonl is written once at the start, then after every epoch; 3 steps an epoch).
KILLS = {
    "lock (owner line half written)": (["lock@1"], "taking over the lock of an unknown process"),
    "config.yaml temp": (["write:config.yaml@1"], "removed 1 temporary file"),
    "epoch 1, step 2": (["step@2"], "has no checkpoint yet"),
    "epoch 1 last.pt temp, half written": (["write:last.pt@1"], "removed 1 temporary file"),
    "between epoch 1 last.pt and best.pt": (["replaced:last.pt@1"], "best.pt was missing; rebuilt it from epoch 1"),
    "epoch 1 best.pt temp, complete": (["replace:best.pt@1"], "best.pt was missing; rebuilt it from epoch 1"),
    "between epoch 1 best.pt and metrics.jsonl": (["replaced:best.pt@1"], ""),
    "epoch 2 metrics.jsonl temp, half written": (["write:metrics.jsonl@3"], "removed 1 temporary file"),
    "epoch 2, step 5": (["step@5"], ""),
    "between epoch 3 last.pt and best.pt/metrics.jsonl": (["replaced:last.pt@3"], "already finished"),
    "curves.png temp at the end": (["write:curves.png@1"], "already finished"),
    "resume's repair of metrics.jsonl, then its lock": (["replaced:last.pt@2", "replace:metrics.jsonl@1", "lock@1"],
                                                        "taking over the lock of an unknown process"),
    "resume.jsonl temp": (["step@4", "write:resume.jsonl@1"], "removed 1 temporary file"),
}


def kill_and_resume(ctx, data: Path, out: Path, faults: list[str]) -> list[str]:
    """Run with each fault in turn (each invocation must die by SIGKILL), then once more to the end; the logs."""
    logs = []
    for j, fault in enumerate([*faults, None]):
        argv = train_args(data, out, *(["--resume"] if (out / "config.yaml").exists() else []))
        code, log = sparks(ctx, argv, out.parent / f"{out.name}.{j}.log", fault)
        logs.append(log)
        assert code == (0 if fault is None else -signal.SIGKILL), (fault, code, logs)
    return logs


def test_sigkill_at_every_chosen_point_then_resume_is_identical(ctx, tiny_fmnist, reference, tmp_path):
    # Two chains at a time (the CI machine has 2 cores); each child is one process of one thread.
    with ThreadPoolExecutor(2) as pool:
        jobs = {point: pool.submit(kill_and_resume, ctx, tiny_fmnist, tmp_path / f"k{i}", faults)
                for i, (point, (faults, _)) in enumerate(KILLS.items())}
    survived = []
    for i, (point, (_, expected)) in enumerate(KILLS.items()):
        logs = jobs[point].result()
        assert expected in "".join(logs[1:]), (point, expected, logs)
        assert_same_run(tmp_path / f"k{i}", reference)
        survived.append(point)
    assert len(survived) == len(KILLS) >= 10


def test_a_second_run_is_refused_while_the_first_holds_the_directory(ctx, tiny_fmnist, reference, tmp_path):
    out = tmp_path / "run"
    env = {"SPARKS_FAULT": "step@4:stop", "OMP_NUM_THREADS": "1"}  # stops (SIGSTOP) in epoch 2, lock held
    first = ctx.Process(target=run_cli, args=(train_args(tiny_fmnist, out), env, str(tmp_path / "first.log")))
    first.start()
    deadline = time.time() + 120
    while not (out / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    try:
        code, log = sparks(ctx, train_args(tiny_fmnist, out, "--resume"), tmp_path / "second.log")
        assert code == 2
        assert log.strip().splitlines() == [
            f"sparks train: error: {out} is in use by another `sparks train` (pid {first.pid} on "
            f"{socket.gethostname()} since " + log.split(" since ")[1].strip()]
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.join()
    code, log = sparks(ctx, train_args(tiny_fmnist, out, "--resume"), tmp_path / "third.log")
    assert code == 0, log
    assert f"taking over the lock of pid {first.pid} on {socket.gethostname()}" in log
    assert_same_run(out, reference)


def test_resume_restores_the_runs_settings_applies_operational_changes_and_refuses_others(tiny_fmnist, tmp_path,
                                                                                         capsys):
    from sparks.cli import main
    from sparks.train.checkpoint import save_checkpoint

    out = tmp_path / "run"
    assert main(train_args(tiny_fmnist, out, "--stop-after", "1")) == 0
    # An older checkpoint without its metrics rows, best epoch or newer settings still resumes (rows from the file).
    state = load_checkpoint(out / "last.pt")
    for key in ("metrics", "best_key", "best_epoch"):
        del state[key]
    del state["config"]["diverge_patience"]
    save_checkpoint(state, out / "last.pt")
    capsys.readouterr()
    assert main(train_args(tiny_fmnist, out, "--resume", "--stop-after", "1", "--eval-test")) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sparks train: note: resuming at epoch 1 with --eval-test (the run had --no-eval-test)"]
    log = [json.loads(line) for line in (out / "resume.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == 1 and log[0]["changed"] == {"eval_test": {"run": False, "now": True}}
    assert "eval_test: false" in (out / "config.yaml").read_text()  # config.yaml keeps the run's settings
    # A training setting is refused, naming the flag, before anything is written.
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    for flags, message in ((["--lr", "0.5"], "--lr 0.5 differs from the run's --lr 0.001"),
                           (["--no-augment"], "--no-augment differs from the run's --augment")):
        assert main(train_args(tiny_fmnist, out, "--resume", *flags)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # Without flags the run's own settings come back: data folder, threads, --no-eval-test.
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert capsys.readouterr().err == ""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert ["test_acc" in r for r in rows] == [False, True, False]
    assert load_checkpoint(out / "last.pt")["metrics"] == rows
    # A finished run says so in one line and exits 0.
    assert main(["train", "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines() == [
        f"sparks train: the run in {out} is already finished (3 epochs); nothing to do"]
    assert captured.err == ""


def test_divergence_guard_stops_and_keeps_the_last_good_checkpoint(tiny_fmnist, tmp_path, monkeypatch, capsys):
    from sparks.cli import main
    from sparks.train import loop

    real_loss = loop.compute_loss
    calls = {"n": 0}

    def exploding(*args, **kwargs):  # from the second epoch on (3 steps an epoch) the loss is 1e4 times larger
        calls["n"] += 1
        return real_loss(*args, **kwargs) * (1e4 if calls["n"] > 3 else 1.0)

    monkeypatch.setattr(loop, "compute_loss", exploding)
    out = tmp_path / "run"
    assert main(train_args(tiny_fmnist, out, "--epochs", "4")) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparks train: error: training diverged: train loss "), err
    assert err[0].endswith(f"at epoch 3 (2 epochs in a row); last good checkpoint: {out / 'last.pt'} (epoch 1)")
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and len(state["metrics"]) == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["train_loss"] > 1e3 * rows[0]["train_loss"]
    assert not (out / ".lock").exists()


def test_divergence_rules_on_hand_made_rows():
    from sparks.train.guard import epoch_problem

    def rows(*pairs):
        return [{"epoch": i + 1, "train_loss": loss, "train_acc": 50.0, "val_acc": acc}
                for i, (loss, acc) in enumerate(pairs)]

    ln10 = math.log(10)
    assert epoch_problem(rows((2.0, 40), (19.9, 40)), 10, 10.0, "val_acc") is None
    assert epoch_problem(rows((2.0, 40), (20.1, 40)), 10, 10.0, "val_acc") == "train loss 20.1 > 10 x 2"
    # The bar is the first epoch's loss, at most ln(classes): an exploded first epoch sets no bar ...
    assert epoch_problem(rows((1e19, 10)), 10, 10.0, "val_acc") == f"train loss 1e+19 > 10 x {ln10:.4g}"
    assert epoch_problem(rows((float("nan"), 10)), 10, 10.0, "val_acc") == "train loss nan"
    assert epoch_problem(rows((2.0, 40), (1e6, 40)), 10, 0.0, "val_acc") is None  # factor 0: no loss check
    # ... and accuracy at chance (< 10 + 1.8 %) counts only after an epoch at >= 10 + 9 = 19 %.
    assert epoch_problem(rows((2.0, 18.9), (2.0, 10.5)), 10, 10.0, "val_acc") is None
    assert epoch_problem(rows((2.0, 19.5), (2.0, 10.5)), 10, 10.0, "val_acc") == \
        "val_acc 10.50% is at chance level (10%) after 19.50%"
    assert epoch_problem(rows((2.0, 19.5), (2.0, 11.9)), 10, 10.0, "val_acc") is None
