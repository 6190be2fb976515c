"""The reconstruction probe on real kernels: learned selection vs top-n vs kmedoids, per layer, τ and seed.

    python scripts/selection_probe.py CHECKPOINT [--taus 3 4 5 6] [--seeds 3] [--steps 100] [--out probe.csv]
    python scripts/selection_probe.py tests/data/cifar10_step1_kernels.npz      # the test fixture's kernels

The selector is driven by the reconstruction loss alone (sparks.core.probe). Prints one Markdown row per
(layer, τ, seed) as it goes and a summary: cases where learned ≤ kmedoids and learned < top-n. --out also writes
the rows as CSV. Extra method options as KEY=VALUE after --method-args (e.g. init=kmedoids exact=False).
"""

from __future__ import annotations

import argparse
import csv
import time

import torch

from sparks.core.probe import load_kernels, model_kernels, probe_layer


def parse_value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a sparks checkpoint (.pt) or a kernels .npz (sparks.core.probe.save_kernels)")
    parser.add_argument("--taus", type=int, nargs="+", default=[3, 4, 5, 6])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (to run seeds as separate passes)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--layers", nargs="*", help="only these layer names")
    parser.add_argument("--method-args", nargs="*", default=[], help="KEY=VALUE options of the sparks method")
    parser.add_argument("--out", help="CSV file for the rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.source.endswith(".npz"):
        kernels = load_kernels(args.source)
    else:
        from sparks.train.checkpoint import load_model

        kernels = model_kernels(load_model(args.source))
    if args.layers:
        kernels = {k: v for k, v in kernels.items() if k in set(args.layers)}
    options = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.method_args)}
    print("| layer | τ | seed | top-n | kmedoids | learned | learned vs kmedoids | switches | s |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    for name, weight in kernels.items():
        for tau in args.taus:
            for seed in range(args.seed_start, args.seed_start + args.seeds):
                start = time.perf_counter()
                r = probe_layer(weight, tau, seed=seed, steps=args.steps, **options)
                rows.append({"layer": name, "tau": tau, "seed": seed, "topn": r.topn, "kmedoids": r.kmedoids,
                             "learned": r.learned, "switches": r.switches})
                print(f"| {name} | {tau} | {seed} | {r.topn:.4f} | {r.kmedoids:.4f} | {r.learned:.4f} | "
                      f"{r.learned / r.kmedoids - 1:+.3%} | {r.switches} | {time.perf_counter() - start:.0f} |",
                      flush=True)
                if args.out:
                    with open(args.out, "w", newline="") as handle:
                        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                        writer.writeheader()
                        writer.writerows(rows)
    at_or_below = sum(r["learned"] <= r["kmedoids"] + 1e-7 for r in rows)
    strictly = sum(r["learned"] < r["kmedoids"] - 1e-7 for r in rows)
    below_topn = sum(r["learned"] < r["topn"] for r in rows)
    print(f"\n{len(rows)} cases: learned ≤ kmedoids in {at_or_below} ({strictly} strictly below), "
          f"learned < top-n in {below_topn}")


if __name__ == "__main__":
    main()
