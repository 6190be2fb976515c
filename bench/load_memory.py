"""Peak memory of loading one wide sub-bit layer (C×C, τ = 9) against its file size and the model it describes.

Each load runs in a fresh subprocess; the figure is its peak RSS minus the RSS after the imports.
Usage: PYTHONPATH=. python bench/load_memory.py [C ...]   (default 2048 4096; 4096 needs raised limits, given here)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sparks.deploy.bits import index_bits, pack_bits
from sparks.deploy.format import FORMAT_VERSION, sparks_bytes

CHILD = """
import json, resource, sys
import numpy as np, torch
from sparks.deploy.format import read_sparks
from sparks.deploy.rebuild import torch_model
from sparks.runtime import PackedModel
from sparks.limits import Limits
lim = Limits(max_params=1 << 30)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
meta, tensors = read_sparks(sys.argv[1], lim)
if sys.argv[2] == "packed":
    PackedModel(meta, tensors, limits=lim)
elif sys.argv[2] == "torch":
    torch_model(meta, tensors, lim)
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024))
"""


def layer_file(c: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 512
    ops = [{"op": "subbit_conv2d", "name": "conv", "inputs": ["input"], "output": "c", "in_channels": c,
            "out_channels": c, "stride": 1, "tau": 9, "n": n, "bias": False},
           {"op": "global_avgpool", "name": "pool", "inputs": ["c"], "output": "p"},
           {"op": "flatten", "name": "flat", "inputs": ["p"], "output": "f"},
           {"op": "linear", "name": "fc", "inputs": ["f"], "output": "fc", "in_features": c, "out_features": 10,
            "bias": False}]
    meta = {"format_version": FORMAT_VERSION, "model_name": None, "model_args": {}, "tau": 9, "method": "sign",
            "num_classes": 10, "input": {"channels": c, "height": 4, "width": 4}, "real_dtype": "float32", "ops": ops}
    tensors = {"conv.indices": pack_bits(rng.integers(0, n, c * c), index_bits(n)),
               "conv.alpha": np.ones(c, np.float32), "fc.weight": np.zeros((10, c), np.float32)}
    path.write_bytes(sparks_bytes(meta, tensors, check=False))


def main(sizes: list[int]) -> None:
    print("| C | file (MB) | model in float32 (MB) | read (MB) | read + packed (MB) | read + torch (MB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for c in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "wide.sparks"
            layer_file(c, path)
            peaks = [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(path), what], check=True,
                                               capture_output=True, text=True).stdout) for what in
                     ("read", "packed", "torch")]
            size = path.stat().st_size
        model = 4 * 9 * c * c
        print(f"| {c} | {size / 1e6:.1f} | {model / 1e6:.0f} | " + " | ".join(f"{p / 1e6:.0f}" for p in peaks) + " |")


if __name__ == "__main__":
    main([int(v) for v in sys.argv[1:]] or [2048, 4096])
