"""Packed runtime vs ONNX Runtime fp32/int8, Larq Compute Engine and torch.compile on resnet18_cifar, interleaved.

Usage: .venv/bin/python bench/peers.py [--quick] [--threads 1 2] [--batches 1 32] [--repeats 10] [--json OUT.json]
                                       [--lce-python /work/lce-venv/bin/python] [--torch-compile]
Builds resnet18_cifar (width 1, τ=5, method sparks, seed 0), exports it to .sparks and its float-equivalent torch
module to ONNX (fp32, and int8 by onnxruntime.quantization.quantize_static, QDQ, per-channel, MinMax calibration on
--calib random images), then prints ms/image per (threads, batch, runtime) and the ratio to the packed runtime.
Without onnxruntime/onnx (pip install -e '.[peers]') only the packed runtime is timed. --lce-python adds Larq Compute
Engine 0.16 with use_indirect_bgemm (bench/lce_worker.py under that Python, in its own venv: docs/benchmarks.md);
--torch-compile adds torch.compile (inductor) of the float-equivalent module, channels_last fp32 (compiling takes
minutes). A peer that cannot run is skipped with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (finishes in < 2 minutes)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per runtime at batch 1 (a third at >1)")
    parser.add_argument("--calib", type=int, default=32, help="calibration images for the int8 model")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--tau", type=int, default=5)
    parser.add_argument("--packed-only", action="store_true", help="skip the ONNX Runtime peers")
    parser.add_argument("--lce-python", help="Python of a venv with tensorflow, larq, larq-compute-engine")
    parser.add_argument("--torch-compile", action="store_true", help="add torch.compile channels_last fp32")
    parser.add_argument("--stress", type=int, default=0, help="CPU-bound competitor processes during the timing")
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args()

    import numpy as np
    import torch

    from sparks.bench.lce import start_lce
    from sparks.bench.peers import (
        Peer,
        TorchCompilePeer,
        bench_peers,
        competitors,
        export_onnx,
        format_peers,
        onnx_available,
    )
    from sparks.deploy.export import export
    from sparks.models import create

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create("resnet18_cifar", tau=args.tau, method="sparks", width=args.width)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18_cifar.sparks"
        export(model, path)
        files = {}
        if not args.packed_only:
            if onnx_available():
                calib = np.random.default_rng(1).standard_normal((args.calib, 3, 32, 32)).astype(np.float32)
                files = export_onnx(path, Path(tmp) / "resnet18_cifar.onnx", calib)
            else:
                print("# onnxruntime/onnx not installed: timing the packed runtime only")
        peers: list[Peer] = []
        lce = start_lce(args.lce_python, width=args.width)
        if lce is not None:
            peers.append(lce)
        if args.torch_compile:
            peers.append(TorchCompilePeer(path))
        try:
            with competitors(args.stress):
                result = bench_peers(path, files, threads=args.threads, batches=args.batches,
                                     repeats=5 if args.quick else args.repeats, peers=peers)
        finally:
            for peer in peers:
                peer.close()
    result["system"]["load_1min_start"] = load_start
    result["system"]["stress_processes"] = args.stress
    result["model"] = {"name": "resnet18_cifar", "width": args.width, "tau": args.tau, "method": "sparks"}
    s = result["system"]
    print(f"# resnet18_cifar width {args.width} tau {args.tau}; load {load_start:.2f} -> {s['load_1min']:.2f}; "
          f"{args.stress} CPU-bound competitor processes; "
          f"{s['cpus_usable']} usable CPUs; numba {s['numba']} ({s['numba_threading_layer']}); "
          f"onnxruntime {s.get('onnxruntime', '-')}")
    for name, info in s.get("peers", {}).items():
        print(f"# {name}: " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "ops"))
    print(format_peers(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
