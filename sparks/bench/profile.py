"""Where the packed engine's time goes: per plan step at several batch sizes (one thread), interleaved in one run,
with each sub-bit conv's binary MAC rate next to the kernel's inner-loop peak measured in the same run.

It answers "what can batching still win?": a step whose batch-1 rate is already near the peak cannot get much faster
per image at a larger batch; only per-call costs (dispatch, small ops, the stem's set-up) can.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sparks.bench.peers import system_info
from sparks.deploy.format import read_sparks
from sparks.runtime import PackedModel
from sparks.runtime.kernels import inner_loop_peak

GROUPS = ("binary", "real conv", "other")


def _group(op: str) -> str:
    if op.startswith("subbit_conv2d"):
        return "binary"
    return "real conv" if op.startswith(("conv2d", "linear")) else "other"


def profile_model(path: str | Path, batch_sizes: tuple[int, ...] = (1, 8), repeats: int = 10,
                  seed: int = 0) -> dict[str, Any]:
    """Per-step median ms per image of the ``.sparks`` model at each batch size (random normal images, one thread;
    the batch sizes take turns every repeat, so drifting load hits them alike), and the inner-loop peak."""
    meta, tensors = read_sparks(path)
    model = PackedModel(meta, tensors, threads=1)
    rng = np.random.default_rng(seed)
    xs = {b: rng.standard_normal((b, *model.input_shape)).astype(np.float32) for b in batch_sizes}
    runs: dict[int, list[list[dict[str, Any]]]] = {b: [] for b in batch_sizes}
    for b in batch_sizes:
        model.profile(xs[b], 1)  # warm-up: compile and touch every buffer once
    for _ in range(repeats):
        for b in batch_sizes:
            runs[b].append(model.profile(xs[b], 1))
    steps = []
    for i, row in enumerate(runs[batch_sizes[0]][0]):
        ms = {b: float(np.median([run[i]["ms_per_image"] for run in runs[b]])) for b in batch_sizes}
        steps.append({"step": row["step"], "op": row["op"], "group": _group(row["op"]),
                      "binary_macs": row["binary_macs"], "ms_per_image": ms})
    return {"model": str(path), "batch_sizes": list(batch_sizes), "repeats": repeats,
            "inner_loop_peak_macs_per_s": inner_loop_peak(), "steps": steps, "system": system_info()}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """Totals per group and batch size (ms per image), and the binary steps' MAC rate against the peak."""
    batches = result["batch_sizes"]
    macs = sum(s["binary_macs"] for s in result["steps"])
    out: dict[str, Any] = {}
    for b in batches:
        per_group = {g: sum(s["ms_per_image"][b] for s in result["steps"] if s["group"] == g) for g in GROUPS}
        rate = macs / (per_group["binary"] * 1e-3) if per_group["binary"] else 0.0
        out[b] = {"total_ms": sum(per_group.values()), **{f"{g}_ms": v for g, v in per_group.items()},
                  "binary_macs_per_s": rate, "binary_of_peak": rate / result["inner_loop_peak_macs_per_s"],
                  # the binary convs at the inner-loop peak (tap gather, epilogue and packing free), the rest as is
                  "floor_ms": macs / result["inner_loop_peak_macs_per_s"] * 1e3 + per_group["real conv"]
                  + per_group["other"]}
    return out


def format_profile(result: dict[str, Any]) -> str:
    """Markdown: one row per plan step (ms per image per batch size, ratio of the last to the first, T MAC/s of
    sub-bit convs), then the totals per group."""
    batches = result["batch_sizes"]
    b0, b1 = batches[0], batches[-1]
    head = ["step", "op"] + [f"ms/img b{b}" for b in batches] + [f"b{b1}/b{b0}"] + [f"T MAC/s b{b}" for b in batches]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in result["steps"]:
        ms = s["ms_per_image"]
        rates = [f"{s['binary_macs'] / (ms[b] * 1e-3) / 1e12:.2f}" if s["binary_macs"] and ms[b] else ""
                 for b in batches]
        lines.append("| " + " | ".join([s["step"], s["op"]] + [f"{ms[b]:.4f}" for b in batches]
                                        + [f"{ms[b1] / ms[b0]:.2f}" if ms[b0] else ""] + rates) + " |")
    summary = summarize(result)
    peak = result["inner_loop_peak_macs_per_s"]
    lines += ["", f"inner-loop peak (kernels.inner_loop_peak, this run): {peak / 1e12:.2f} T binary MAC/s per core", "",
              "| batch | total ms/img | binary | real conv | other | binary T MAC/s | of peak |",
              "|---|---|---|---|---|---|---|"]
    for b in batches:
        t = summary[b]
        lines.append(f"| {b} | {t['total_ms']:.3f} | {t['binary_ms']:.3f} | {t['real conv_ms']:.3f} | "
                     f"{t['other_ms']:.3f} | {t['binary_macs_per_s'] / 1e12:.2f} | {100 * t['binary_of_peak']:.0f} % |")
    first, last = summary[b0]["total_ms"], summary[b1]
    lines.append(f"\nper-image time b{b1}/b{b0}: {last['total_ms'] / first:.2f}; b{b1} with every binary conv at the "
                 "peak (its gather, epilogue and packing free) and the other steps as measured: "
                 f"{last['floor_ms']:.3f} ms/img = {last['floor_ms'] / first:.2f} of b{b0}")
    return "\n".join(lines)
