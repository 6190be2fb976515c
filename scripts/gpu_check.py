"""The measuring half of scripts/gpu_check.sh: train throughput per weight method, then a time-budgeted CIFAR-10
two-step run (float step 1, Sparks τ = 5 step 2), all figures written to one JSON file.

Variants measured: float (step 1), sign (1-bit), sparks (the selector as it is: per-layer Sinkhorn and Hungarian)
and sparks_batched (one Sinkhorn for all layers per step, sparks.core.batched_selection, and one batched Hungarian
after the optimiser step, sparks.core.assignment: the proposed integration, patched in here).

Usage: python scripts/gpu_check.py --data CIFAR_DIR --json OUT.json [--tests-summary "N passed ..."]

Environment overrides (for a CPU dry run, or another budget): GPU_CHECK_DEVICE (cuda), GPU_CHECK_WIDTH (1),
GPU_CHECK_BATCH (256), GPU_CHECK_STEPS (timed steps per round, 20), GPU_CHECK_ROUNDS (3), GPU_CHECK_BUDGET_S
(seconds for the two training runs, 270), GPU_CHECK_EPOCHS ("E1,E2": fixed epochs instead of the budget),
GPU_CHECK_SUBSET (training images, all), GPU_CHECK_AMP (bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from sparks.core.assignment import refresh_selections
from sparks.core.batched_selection import stacked_soft_codewords
from sparks.core.layers import subbit_layers
from sparks.core.selection import pste
from sparks.models import create
from sparks.train.device_options import autocast

VARIANTS = ("float", "sign", "sparks", "sparks_plain", "sparks_batched")
TRAIN_IMAGES = 45_000  # CIFAR-10 training images after the 10 % validation split


def env(name: str, default: str) -> str:
    return os.environ.get(f"GPU_CHECK_{name}", default)


def forward_from_batched_selection(self: torch.nn.Module, accept: object = None) -> torch.Tensor:
    """A selector forward that takes its soft codewords from the model-level batched Sinkhorn (``_soft``, set by a
    forward pre-hook) and its hard selection from ``selected``, refreshed after each optimiser step by one batched
    call (sparks.core.assignment.refresh_selections): the design proposed to the integrator."""
    if not (self.training and torch.is_grad_enabled() and self.scores.requires_grad):
        return self._codebook[self.selected]
    return pste(self._soft, self._codebook[self.selected])


def batch_selectors(model: torch.nn.Module) -> list:
    """Patch every Sparks selector of ``model`` to the batched design; returns the selectors."""
    selectors = [layer.quantizer.selector for _, layer in subbit_layers(model)]
    for sel in selectors:
        sel.forward = types.MethodType(forward_from_batched_selection, sel)

    def stash(module: torch.nn.Module, args: tuple) -> None:
        if module.training and torch.is_grad_enabled():
            for sel, soft in zip(selectors, stacked_soft_codewords(selectors), strict=True):
                sel._soft = soft

    model.register_forward_pre_hook(stash)
    return selectors


class TrainStep:
    """One Adam step of resnet18_cifar (width, method) on a fixed device-resident random batch."""

    def __init__(self, variant: str, width: float, batch: int, device: torch.device, amp: str) -> None:
        torch.manual_seed(0)
        method = "sparks" if variant.startswith("sparks") else variant
        # the batched read-off implements the paper's plain read-off (no exact acceptance, no re-selection, no Gumbel);
        # "sparks_plain" is the same computation per layer, "sparks" the default selector
        extra = {"exact": False, "noise": 0.0} if variant in ("sparks_batched", "sparks_plain") else {}
        self.model = create("resnet18_cifar", width=width, method=method, tau=9 if method == "sign" else 5, **extra)
        self.model.to(device).to(memory_format=torch.channels_last).train()
        self.selectors = batch_selectors(self.model) if variant == "sparks_batched" else []
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, 32, 32, generator=gen).to(device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, 10, (batch,), generator=gen).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.device, self.amp = device, amp

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.amp, self.device):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.optimizer.step()
        if self.selectors:
            refresh_selections([(s.scores, s.selected, s.switch_margin) for s in self.selectors])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(device: torch.device) -> dict:
    """Images/s of each variant: warm-up, then rounds of timed steps, interleaved; the median round counts."""
    width, batch = float(env("WIDTH", "1")), int(env("BATCH", "256"))
    steps, rounds, amp = int(env("STEPS", "20")), int(env("ROUNDS", "3")), env("AMP", "bf16")
    runners = {v: TrainStep(v, width, batch, device, amp) for v in VARIANTS}
    for run in runners.values():
        for _ in range(3):
            run()
    sync(device)
    per_round: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(rounds):
        for variant, run in runners.items():
            sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                run()
            sync(device)
            per_round[variant].append(batch * steps / (time.perf_counter() - start))
    rate = {v: statistics.median(r) for v, r in per_round.items()}
    out = {"width": width, "batch": batch, "amp": amp, "channels_last": True, "steps_per_round": steps,
           "rounds": rounds, "images_per_s": rate,
           "ratios": {"sparks/sign": rate["sparks"] / rate["sign"], "sparks/float": rate["sparks"] / rate["float"],
                      "sparks_batched/sign": rate["sparks_batched"] / rate["sign"],
                      "sparks_batched/float": rate["sparks_batched"] / rate["float"]}}
    print(json.dumps(out, indent=1), flush=True)
    return out


def train_step(name: str, data: Path, out: Path, epochs: int, device: str, extra: list[str]) -> dict:
    """One ``sparks train`` process; returns its epochs, wall time, per-epoch time and validation accuracy."""
    args = [sys.executable, "-m", "sparks", "train", "--arch", "resnet18_cifar", "--width", env("WIDTH", "1"),
            "--dataset", "cifar10", "--data", str(data), "--val-fraction", "0.1", "--epochs", str(epochs),
            "--batch-size", env("BATCH", "256"), "--amp", env("AMP", "bf16"), "--channels-last", "--device", device,
            "--no-progress", "--overwrite", "--out", str(out), *extra]
    if env("SUBSET", ""):
        args += ["--subset", env("SUBSET", "")]
    print("$ " + " ".join(args), flush=True)
    start = time.perf_counter()
    proc = subprocess.run(args, text=True, capture_output=True)
    wall = time.perf_counter() - start
    print(proc.stdout[-4000:] + proc.stderr[-4000:], flush=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] if proc.returncode == 0 \
        else []
    return {"name": name, "rc": proc.returncode, "epochs": epochs, "wall_s": wall,
            "epoch_s": [r.get("time") for r in rows], "val_acc": [r.get("val_acc") for r in rows],
            "final_val_acc": rows[-1].get("val_acc") if rows else None,
            "best_val_acc": max((r.get("val_acc", 0) for r in rows), default=None)}


def budget_epochs(rates: dict) -> tuple[int, int]:
    """Epochs of step 1 and step 2 that fit GPU_CHECK_BUDGET_S, from the measured step throughput (plus 35 % for
    augmentation, evaluation and the per-epoch checkpoint, and 20 s per process start)."""
    if env("EPOCHS", ""):
        e1, e2 = (int(v) for v in env("EPOCHS", "").split(","))
        return e1, e2
    images = int(env("SUBSET", str(TRAIN_IMAGES)))
    avail = float(env("BUDGET_S", "270")) - 40.0
    t1 = 1.35 * images / rates["float"]
    t2 = 1.35 * images / rates["sparks"]  # the loop still reads the selection off layer by layer
    return max(1, int(0.4 * avail / t1)), max(1, int(0.6 * avail / t2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--tests-summary", default="", help="the CUDA tests' pytest summary line")
    parser.add_argument("--work", default=os.environ.get("TMPDIR", "/tmp") + "/sparks_gpu_check")
    args = parser.parse_args()
    begin = time.perf_counter()
    device = torch.device(env("DEVICE", "cuda"))
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                    "torch": torch.__version__, "python": platform.python_version(), "tests": args.tests_summary}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    report["throughput"] = throughput(device)
    e1, e2 = budget_epochs(report["throughput"]["images_per_s"])
    work = Path(args.work)
    step1 = train_step("step1_float", Path(args.data), work / "step1", e1, device.type, ["--method", "float"])
    step2 = train_step("step2_sparks_tau5", Path(args.data), work / "step2", e2, device.type,
                       ["--method", "sparks", "--tau", "5", "--init-from", str(work / "step1" / "last.pt")])
    report["train"] = {"arch": "resnet18_cifar", "bits_per_weight": 5 / 9, "steps": [step1, step2],
                       "val_acc": step2["final_val_acc"], "wall_s": step1["wall_s"] + step2["wall_s"]}
    report["total_wall_s"] = time.perf_counter() - begin
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"validation accuracy {step2['final_val_acc']} % after {e1}+{e2} epochs, training wall time "
          f"{report['train']['wall_s']:.0f} s; figures in {args.json}", flush=True)
    sys.exit(0 if step1["rc"] == 0 and step2["rc"] == 0 else 1)


if __name__ == "__main__":
    main()
