"""Seconds per step-2 training step and per evaluation batch of a grid's model, per method, on one thread; and the
training-set subset that makes a whole grid fit a wall-clock budget.

    python bench/grid_budget.py [--arch resnet18_cifar --width 0.25 --batch-size 128] [--steps 12]
        [--runs 33 --jobs 2 --minutes 15 --val 5000 --overhead 8]

Times are CPU seconds of this process (``time.thread_time``, one torch thread), so that other load on a shared
machine inflates them less than wall time; the printed wall medians show the load. The budget assumes every method
costs the slowest method's step, each run evaluates ``--val`` images once, and ``--overhead`` seconds per run for
process start, data loading and the complexity summary (measured with ``sparks sweep`` on the real grid).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from sparks.models import create
from sparks.train.loop import param_groups


def time_method(arch: str, width: float, method: str, tau: int, batch: int, steps: int) -> tuple[float, float, float]:
    """(median CPU s per train step, median wall s per train step, CPU s per eval batch)."""
    torch.manual_seed(0)
    model = create(arch, num_classes=10, in_channels=3, width=width, tau=tau, method=method)
    optimizer = torch.optim.Adam(param_groups(model, 0.0, 1e-2), lr=2e-3)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    cpu, wall = [], []
    model.train()
    for i in range(steps + 2):
        c0, w0 = time.thread_time(), time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:  # warm-up
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
    model.eval()
    with torch.no_grad():
        c0 = time.thread_time()
        for _ in range(3):
            model(x)
        evaluation = (time.thread_time() - c0) / 3
    return statistics.median(cpu), statistics.median(wall), evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18_cifar")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--methods", default="sign,topn,random,snn,sparks")
    parser.add_argument("--tau", type=int, default=5)
    parser.add_argument("--runs", type=int, default=33)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--val", type=int, default=5000, help="validation images evaluated once per run")
    parser.add_argument("--overhead", type=float, default=8.0, help="seconds per run outside train/eval")
    args = parser.parse_args()
    torch.set_num_threads(1)
    worst_step = worst_eval = 0.0
    for method in args.methods.split(","):
        tau = 9 if method == "sign" else args.tau
        cpu, wall, evaluation = time_method(args.arch, args.width, method, tau, args.batch_size, args.steps)
        worst_step, worst_eval = max(worst_step, cpu), max(worst_eval, evaluation)
        print(f"{method:>8} τ={tau}: train step {cpu:.3f} s CPU (wall {wall:.3f} s), eval batch {evaluation:.3f} s CPU")
    per_run = args.minutes * 60 * args.jobs / args.runs
    evaluation = worst_eval * -(-args.val // args.batch_size)
    steps = max(0, int((per_run - evaluation - args.overhead) / worst_step))
    print(f"budget: {args.runs} runs, {args.jobs} at a time, {args.minutes:g} min -> {per_run:.1f} s per run; "
          f"eval {evaluation:.1f} s + overhead {args.overhead:g} s leave {steps} steps of {args.batch_size} "
          f"= {steps * args.batch_size} training images per run")


if __name__ == "__main__":
    main()
