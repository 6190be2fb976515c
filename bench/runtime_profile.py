"""Where the packed runtime's time goes on resnet18_cifar width 1 (τ=5, random init, seed 0): per plan step at batch
1 and 32 (one thread, interleaved in one run), each sub-bit conv's binary MAC rate, and the kernel's inner-loop peak
measured in the same run (sparks.bench.profile; the same table as ``sparks bench --model F --profile``).

Usage: .venv/bin/python bench/runtime_profile.py [--batches 1 32] [--repeats 10] [--json OUT]
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
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()

    import torch

    from sparks.bench.profile import format_profile, profile_model
    from sparks.deploy.export import export
    from sparks.models import create

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r18.sparks"
        export(create("resnet18_cifar", tau=5, method="sparks", width=1.0), path)
        result = profile_model(path, batch_sizes=tuple(args.batches), repeats=args.repeats)
    result["model"] = "resnet18_cifar width 1 tau 5 (random init, seed 0)"
    print(format_profile(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
