"""One grid run in its own process: train (or resume, or reuse a finished) run from ``RUN_DIR/run.json``, then
write ``RUN_DIR/result.json`` with its final metrics and complexity (storage bits and BOPs from
:func:`sparks.complexity.summary`).

    python -m sparks.experiments.worker RUN_DIR

Exit codes: 0 done, 2 bad input, 3 (:data:`sparks.train.guard.EXIT_DIVERGED`) diverged, 1 any other failure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from sparks.atomic import atomic_path
from sparks.errors import SparksError

RUN_FILE = "run.json"
RESULT_FILE = "result.json"


def _metrics_rows(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _device_name(config_device: str) -> str:
    import torch

    if config_device == "cpu" or not torch.cuda.is_available():
        return "cpu"
    return torch.cuda.get_device_name()


def run_one(run_dir: str | Path) -> dict[str, Any]:
    """Train the run described by ``run_dir/run.json`` unless its last checkpoint is complete; returns (and writes
    atomically to ``run_dir/result.json``) the row fields the worker knows: metrics, complexity, device, time."""
    from sparks.complexity import summary
    from sparks.train.checkpoint import load_checkpoint, model_from_checkpoint
    from sparks.train.config import make_config
    from sparks.train.loop import train

    run_dir = Path(run_dir)
    info = json.loads((run_dir / RUN_FILE).read_text())
    config = dict(info["config"], out=str(run_dir), progress=False)
    last = run_dir / "last.pt"
    if last.exists():
        if int(load_checkpoint(last)["epoch"]) < int(config.get("epochs", 10)):
            train(make_config({**config, "resume": "auto"}))
    else:
        train(make_config({**config, "overwrite": True}))
    state = load_checkpoint(last)
    model = model_from_checkpoint(state, last).eval()
    data = state.get("data") or {}
    size = (1, int(data.get("in_channels", 3)), *[int(s) for s in data.get("input_size", (32, 32))])
    cost = summary(model, size, print_fn=None)
    rows = _metrics_rows(run_dir)
    final = rows[-1]
    split = "val" if "val_acc" in final else "test"
    result = {
        "run_hash": info["run_hash"],
        "bits_per_weight": cost["bits_per_binary_weight"],
        "binary_storage_bits": int(cost["binary_storage_bits"]),
        "total_bits": int(cost["total_bits"]),
        "bops": float(cost["bops"]),
        "flops": float(cost["flops"]),
        "val_top1": final.get(f"{split}_acc"),
        "val_top5": final.get(f"{split}_top5"),
        "val_loss": final.get(f"{split}_loss"),
        "train_loss": final["train_loss"],
        "train_acc": final["train_acc"],
        "epochs": int(final["epoch"]),
        "steps": int(final["step"]),
        "wall_s": float(sum(r.get("time", 0.0) for r in rows)),
        "device": _device_name(config.get("device", "auto")),
    }
    with atomic_path(run_dir / RESULT_FILE) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m sparks.experiments.worker RUN_DIR", file=sys.stderr)
        return 2
    from sparks.train.guard import EXIT_DIVERGED, TrainingDiverged

    start = time.time()
    try:
        result = run_one(argv[0])
    except (SparksError, ValueError, FileNotFoundError) as err:
        print(f"sparks sweep worker: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"sparks sweep worker: error: {err}", file=sys.stderr)
        return EXIT_DIVERGED  # as `sparks train`: the runner records the run as diverged, not failed
    print(f"finished in {time.time() - start:.0f} s: val top-1 {result['val_top1']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
