"""``sparks analyze``: codeword statistics and figures of a checkpoint's binary kernels (docs/analysis.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparks.atomic import atomic_path
from sparks.cli.common import add_json, positive_int, print_json
from sparks.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze", help="codeword histograms, coverage, entropy and power-law fits of binary kernels",
        description="Per binary layer and pooled: histogram over the 512 codewords, rank-frequency, coverage of the "
                    "top 2^τ codewords, entropy, Zipf fit, kernel-wise vs channel-wise. Writes DIR/analysis.json "
                    "and PNG figures. Float (step-1) checkpoints are binarized by sign.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file to analyze")
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--tau-max", type=int, default=8, help="report coverage for τ = 1..TAU_MAX [default: 8]")
    parser.add_argument("--top", type=positive_int, default=32,
                        help="number of most used codewords to list and draw [default: 32]")
    parser.add_argument("--layer", help="draw the top codewords of this layer [default: all layers pooled]")
    add_json(parser, "the pooled statistics and the files written")
    parser.set_defaults(func=run)


def write_json(data: object, path: Path) -> None:
    """Write ``data`` as JSON atomically (temp file in the same directory, then os.replace)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f)


def run(args: argparse.Namespace) -> int:
    from sparks.analysis import analyze, plot_analysis
    from sparks.train.checkpoint import load_model
    from sparks.train.config import check_output_dir

    if not 1 <= args.tau_max <= 9:
        raise UsageError(f"--tau-max must be in 1..9, got {args.tau_max}")
    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    out = Path(args.out)
    check_output_dir(out)
    model = load_model(args.checkpoint)
    result = analyze(model, tau_max=args.tau_max, top=args.top)
    if args.layer and args.layer not in {e["name"] for e in result["layers"]}:
        raise UsageError(f"no binary layer named {args.layer!r}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(result, out / "analysis.json")
    pngs = plot_analysis(result, out, layer=args.layer, top=args.top)
    agg = result["aggregate"]
    if args.json:
        print_json({"model": result["model"], "aggregate": agg, "files": [str(out / "analysis.json")]
                    + [str(p) for p in pngs]})
        return 0
    print(f"{result['model']}: {agg['layers']} binary layers, {agg['kernel']['total']:,} kernels")
    for key in ("kernel", "channel"):
        stats = agg[key]
        if stats:
            cov = stats["coverage"].get("5")
            cov_text = f"top-32 coverage {cov:.1%}, " if cov is not None else ""
            print(f"  {key}-wise: {cov_text}entropy {stats['entropy_bits']:.3f} bit "
                  f"({stats['entropy_bits_per_weight']:.3f} bit/weight), Zipf s={stats['zipf']['exponent']:.3f} "
                  f"(KS {stats['zipf']['ks']:.3f})")
    print(f"wrote {out / 'analysis.json'} and {', '.join(p.name for p in pngs)}")
    return 0
