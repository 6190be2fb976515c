"""The report of a grid, from its results CSV alone: a mean ± sd table per (method, τ), paired differences with 95 %
confidence intervals (every method against top-n at the same τ, plus the grid's ``compare`` pairs and their targets),
and two PNGs (validation accuracy against bits per weight, the Pareto curve, and against BOPs). The markdown goes
between ``<!-- generated:begin NAME -->`` and ``<!-- generated:end NAME -->`` in the doc, so hand-written text
around it stays; without those markers the block is appended."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparks.atomic import atomic_path
from sparks.experiments.ledger import read_rows
from sparks.experiments.spec import ONE_TAU_METHODS
from sparks.experiments.stats import mean_sd, paired_difference

BASELINE = "topn"


def current_rows(rows: list[dict[str, Any]], grid: str) -> tuple[list[dict[str, Any]], int]:
    """The grid's rows with the settings hash of its most recently finished row (older settings are left out, as
    they are not comparable); also returns how many rows were left out."""
    mine = [r for r in rows if r["grid"] == grid]
    if not mine:
        return [], 0
    latest = max(mine, key=lambda r: r.get("finished_utc") or "")["shared_hash"]
    kept = [r for r in mine if r["shared_hash"] == latest]
    return kept, len(mine) - len(kept)


def _labels(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["label"] for r in rows))


def _by_seed(rows: list[dict[str, Any]], label: str, tau: int, key: str = "val_top1") -> dict[int, float]:
    return {r["seed"]: r[key] for r in rows if r["label"] == label and r["tau"] == tau}


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (label, τ) in order of first appearance: bits, BOPs, seeds, and mean/sd of the metrics."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["label"], r["tau"]), []).append(r)
    out = []
    for (label, tau), group in groups.items():
        entry = {"label": label, "method": group[0]["method"], "tau": tau, "n": len(group),
                 "bits_per_weight": group[0]["bits_per_weight"], "bops": group[0]["bops"],
                 "seeds": sorted(r["seed"] for r in group)}
        for key in ("val_top1", "val_top5", "train_loss", "wall_s"):
            entry[key], entry[key + "_sd"], _ = mean_sd(r[key] for r in group)
        out.append(entry)
    return out


def comparisons(rows: list[dict[str, Any]], compare: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Paired differences A − B of validation top-1 at each τ both have: every label against top-n, then the
    grid's ``compare`` pairs (a target margin in points, if given, is carried along)."""
    labels = _labels(rows)
    methods = {r["label"]: r["method"] for r in rows}
    pairs: dict[tuple[str, str], float | None] = {}
    if BASELINE in labels:
        for label in labels:
            if label != BASELINE and methods[label] not in ONE_TAU_METHODS:
                pairs[(label, BASELINE)] = None
    for c in compare:
        if c["a"] in labels and c["b"] in labels:
            pairs[(str(c["a"]), str(c["b"]))] = c.get("target")
    out = []
    for (a, b), target in pairs.items():
        for tau in sorted({r["tau"] for r in rows if r["label"] == a} & {r["tau"] for r in rows if r["label"] == b}):
            diff = paired_difference(_by_seed(rows, a, tau), _by_seed(rows, b, tau))
            if diff.n:
                out.append({"a": a, "b": b, "tau": tau, "diff": diff, "target": target})
    return out


def _pm(mean: float, sd: float, digits: int = 2) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}")


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.2f}"


def _bits(x: float) -> str:
    return "32 (real)" if x is None or math.isnan(x) else f"{x:.3f}"


def render(name: str, rows: list[dict[str, Any]], left_out: int, compare: Sequence[dict[str, Any]],
           images: Sequence[str], source: str) -> str:
    """The markdown block (without the begin/end markers)."""
    lines = [f"<!-- written by `sparks sweep --report-only` from {source}; edits between the markers are lost -->", ""]
    if not rows:
        return "\n".join(lines + [f"No finished runs of grid `{name}` in {source} yet.", ""])
    commits = sorted({r["git_commit"] for r in rows})
    devices = sorted({r["device"] for r in rows})
    lines += [f"Grid `{name}`: {len(rows)} runs, settings hash `{rows[0]['shared_hash']}`, code "
              + ", ".join(f"`{c}`" for c in commits) + f", device {', '.join(devices)}."
              + (f" {left_out} rows of older settings are left out." if left_out else ""), "",
              "| method | τ | bits/weight | BOPs (M) | seeds | val top-1 (%) | val top-5 (%) | train loss | s/run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for e in aggregate(rows):
        lines.append(f"| {e['label']} | {e['tau']} | {_bits(e['bits_per_weight'])} | {e['bops'] / 1e6:.1f} | "
                     f"{e['n']} | {_pm(e['val_top1'], e['val_top1_sd'])} | {_pm(e['val_top5'], e['val_top5_sd'])} | "
                     f"{_pm(e['train_loss'], e['train_loss_sd'], 3)} | {e['wall_s']:.0f} |")
    lines += ["", "Mean ± sample sd over seeds. Paired differences of validation top-1 (points; same seed, same τ; "
              "95 % confidence interval from the t-distribution with n − 1 degrees of freedom; `–` where n < 2):", "",
              "| A − B | τ | pairs | mean | 95 % CI | p | target | mean ≥ target |",
              "|---|---|---|---|---|---|---|---|"]
    pairs = comparisons(rows, compare)
    if not pairs:
        lines.append("| no pairs yet (both methods at one τ with one seed in common) | | | | | | | |")
    for c in pairs:
        d = c["diff"]
        ci = "–" if math.isnan(d.low) else f"[{d.low:+.2f}, {d.high:+.2f}]"
        p = "–" if math.isnan(d.p_value) else f"{d.p_value:.3f}"
        target = c["target"]
        met = "–" if target is None else ("yes" if d.mean >= float(target) else "**no**")
        lines.append(f"| {c['a']} − {c['b']} | {c['tau']} | {d.n} | {_signed(d.mean)} | {ci} | {p} | "
                     f"{'–' if target is None else f'{float(target):+.1f}'} | {met} |")
    lines += [""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], bits_png: Path, bops_png: Path) -> None:
    """Mean validation top-1 (± sd) against bits per weight, with the Pareto front, and against BOPs. On the bits
    axis, methods at one τ are drawn up to ±0.03 bit apart so that their error bars do not hide each other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = aggregate(rows)
    for path, key, xlabel, scale in ((bits_png, "bits_per_weight", "bits per binary weight", 1.0),
                                     (bops_png, "bops", "BOPs per image (millions)", 1e-6)):
        fig, ax = plt.subplots(figsize=(6, 4))
        points = []
        labels = _labels(rows)
        for i, label in enumerate(labels):
            dodge = 0.012 * (i - (len(labels) - 1) / 2)  # methods at one τ share an x: shift them apart a little
            mine = sorted((e for e in entries if e["label"] == label and e[key] is not None and not math.isnan(e[key])),
                          key=lambda e: e[key])
            if not mine:
                real = next(e for e in entries if e["label"] == label)
                ax.axhline(real["val_top1"], ls=":", color="gray", label=f"{label} (real weights)")
                continue
            xs, ys = [e[key] * scale for e in mine], [e["val_top1"] for e in mine]
            sds = [0.0 if math.isnan(e["val_top1_sd"]) else e["val_top1_sd"] for e in mine]
            shown = [x + dodge for x in xs] if key == "bits_per_weight" else xs
            ax.errorbar(shown, ys, yerr=sds, marker="o", capsize=3, label=label)
            points += list(zip(xs, ys, strict=True))
        front, best = [], -math.inf
        for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
            if y > best:
                front.append((x, y))
                best = y
        if len(front) > 1:
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", alpha=0.3, lw=3,
                    label="Pareto front")
        ax.set(xlabel=xlabel, ylabel="validation top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)


def splice(text: str, name: str, block: str) -> str:
    """``text`` with the generated section ``name`` replaced by ``block`` (appended if the markers are absent)."""
    begin, end = f"<!-- generated:begin {name} -->", f"<!-- generated:end {name} -->"
    section = f"{begin}\n{block.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip("\n") + ("\n\n" if text.strip() else "") + section + "\n"


def write_report(name: str, csv: Path, doc: Path, plots: Path, compare: Sequence[dict[str, Any]]) -> str:
    """Regenerate the grid's section of ``doc`` and its two PNGs (``PLOTS_bits.png``, ``PLOTS_bops.png``) from the
    CSV; returns the markdown block."""
    rows, left_out = current_rows(read_rows(csv), name)
    bits_png, bops_png = Path(f"{plots}_bits.png"), Path(f"{plots}_bops.png")
    images = []
    if rows:
        plot(rows, bits_png, bops_png)
        images = [os.path.relpath(p, doc.parent) for p in (bits_png, bops_png)]
    block = render(name, rows, left_out, compare, images, os.path.relpath(csv, doc.parent))
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = splice(doc.read_text() if doc.exists() else "", name, block)
    with atomic_path(doc) as tmp:
        tmp.write_text(text)
    return block
