"""Packed runtime vs torch fp32 eager on resnet18_cifar (random init, exported), per layer and whole model.

Usage: .venv/bin/python bench/runtime.py [--tau 5] [--threads 2] [--repeats 10] [--clock wall|thread] [--json]
Prints the table of ``sparks bench`` (every number measured interleaved in this one run) and the CPU features.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tau", type=int, default=5)
    parser.add_argument("--method", default="sparks")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--layer-repeats", type=int, default=20)
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from sparks.bench.modelbench import bench_model, format_bench
    from sparks.deploy.export import export
    from sparks.models import create

    torch.manual_seed(0)
    model = create("resnet18_cifar", tau=args.tau, method=args.method, width=args.width)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18_cifar.sparks"
        export(model, path)
        result = bench_model(path, threads=args.threads, repeats=args.repeats, layer_repeats=args.layer_repeats,
                             clock=args.clock)
    print(json.dumps(result, indent=1) if args.json else format_bench(result))


if __name__ == "__main__":
    main()
