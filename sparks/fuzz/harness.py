"""The fuzz campaign: mutated files loaded in worker subprocesses under an address-space limit and a timeout.

The parent writes a few small valid seed files, then runs worker processes (``python -m sparks.fuzz --worker``),
each under ``RLIMIT_AS`` and taking a contiguous range of cases. A worker regenerates case ``i`` from the seed
(:mod:`sparks.fuzz.mutate`), writes it to a file, loads it the way users do (``.sparks``: ``read_sparks``, the
packed engine and the torch rebuild, each run on one input; checkpoints: ``load_model`` + a forward pass +
``set_rng_state``) and prints one result line. Outcomes:

* ``error``: the one expected error type (SparksFormatError / CheckpointError) with a one-line message;
* ``ok``: loads and every runtime gives finite outputs;
* ``nonfinite``, ``other`` (another exception or a multi-line message), ``memory`` (MemoryError),
  ``crash`` (the worker died), ``timeout`` (no result within the case timeout), ``harness`` (the mutator itself
  failed): failures.
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

GOOD = ("error", "ok")
DEFAULT_MEMORY = 3 << 30  # address space per worker: ~1.1 GiB after importing torch + numba, ~2 GiB headroom
READY_TIMEOUT = 600.0  # first start: imports and numba compilation


def make_seeds(folder: Path) -> None:
    """Write the seed files: three ``.sparks`` models and two checkpoints, all tiny (a few KB)."""
    import torch

    from sparks.deploy.export import export_tables
    from sparks.deploy.format import sparks_bytes
    from sparks.models import create
    from sparks.train import checkpoint as ckpt

    torch.manual_seed(0)
    models = [(create("vgg_small", in_channels=1, width=0.0625, tau=5), (1, 28, 28), False),
              (create("vgg_small", in_channels=1, width=0.0625, method="sign"), (1, 16, 16), True)]
    generic = create("resnet18_cifar", width=0.125, in_channels=1, num_classes=10, tau=4, method="topn")
    generic.features = generic.features[:5]  # not the registered graph: the torch runtime runs the op list
    generic.fc = torch.nn.Linear(16, 10)
    models.append((generic, (1, 12, 12), False))
    for i, (model, size, half) in enumerate(models):
        meta, tensors = export_tables(model, input_size=size, half=half)
        (folder / f"seed{i}.sparks").write_bytes(sparks_bytes(meta, tensors))
    for i, method in enumerate(("sparks", "float")):
        model = create("vgg_small", in_channels=1, width=0.0625, tau=5, method=method)
        state = {"format_version": ckpt.FORMAT_VERSION, "model_name": model.model_name,
                 "model_args": dict(model.model_args), "model": model.state_dict(), "epoch": 1, "step": 1,
                 "best_metric": 10.0, "rng": [ckpt.rng_state()], "config": {"arch": "vgg_small"},
                 "data": {"input_size": [28, 28]}}
        if method == "sparks":
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            model(torch.randn(2, 1, 28, 28)).sum().backward()
            opt.step()
            state.update(model=model.state_dict(), optimizer=opt.state_dict())
        ckpt.save_checkpoint(state, folder / f"seed{i}.pt")


# --------------------------------------------------------------------------------------------- worker side
def _finite(x: Any) -> bool:
    import numpy as np

    return bool(np.isfinite(np.asarray(x)).all())


def _check_sparks(path: Path) -> str:
    import numpy as np
    import torch

    from sparks.deploy.format import read_sparks
    from sparks.deploy.rebuild import torch_model
    from sparks.runtime import PackedModel

    meta, tensors = read_sparks(path)
    inp = meta["input"]
    x = np.random.default_rng(0).standard_normal((1, inp["channels"], inp["height"], inp["width"]))
    x = x.astype(np.float32)
    if not _finite(PackedModel(meta, tensors)(x)):
        return "nonfinite"
    with torch.no_grad():
        out = torch_model(meta, tensors)(torch.from_numpy(x))
    return "ok" if _finite(out.numpy()) else "nonfinite"


def _check_checkpoint(path: Path) -> str:
    import torch

    from sparks.train import checkpoint as ckpt

    state = ckpt.load_checkpoint(path)
    model = ckpt.model_from_checkpoint(state, path).eval()
    channels = model.model_args.get("in_channels", 3)
    with torch.no_grad():
        out = model(torch.randn(1, channels, 28, 28))
    for entry in state.get("rng") or []:
        ckpt.set_rng_state(entry)
    return "ok" if _finite(out.numpy()) else "nonfinite"


def worker(kind: str, seed: int, start: int, stop: int, folder: Path) -> None:
    """Process cases [start, stop): print 'S i' before each and 'R i outcome mutation detail' after."""
    import torch

    from sparks.errors import CheckpointError, SparksFormatError
    from sparks.fuzz import mutate

    torch.set_num_threads(1)
    if kind == "sparks":
        seeds: list[Any] = [mutate.SparksSeed(p.read_bytes()) for p in sorted(folder.glob("seed*.sparks"))]
        make, check, expected = mutate.sparks_case, _check_sparks, SparksFormatError
    else:
        seeds = [(p.read_bytes(), torch.load(p, weights_only=True)) for p in sorted(folder.glob("seed*.pt"))]
        make, check, expected = mutate.checkpoint_case, _check_checkpoint, CheckpointError
    for p in sorted(folder.glob("seed*.sparks" if kind == "sparks" else "seed*.pt")):
        check(p)  # warm up (imports, numba compilation); the seeds must load
    print("READY", flush=True)
    target = Path(tempfile.mkdtemp(prefix="case", dir=folder)) / ("case.sparks" if kind == "sparks" else "case.pt")
    for i in range(start, stop):
        try:
            name, prefix, size = make(seeds, seed, i)
        except Exception as err:  # noqa: BLE001 - a mutator bug: report it as a failure and go on
            print("R " + json.dumps([i, "harness", "mutator", f"{type(err).__name__}: {err}"[:300]]), flush=True)
            continue
        mutate.write_case(target, prefix, size)
        print(f"S {i} {name}", flush=True)
        try:
            outcome, detail = check(target), ""
        except expected as err:
            text = str(err)
            outcome, detail = ("error", text) if text and "\n" not in text else ("other", "multi-line: " + text)
        except MemoryError:
            outcome, detail = "memory", ""
        except Exception as err:  # noqa: BLE001 - classifying every other failure is the point
            outcome, detail = "other", f"{type(err).__name__}: {err}"
        target.unlink(missing_ok=True)
        print("R " + json.dumps([i, outcome, name, detail.splitlines()[0][:300] if detail else ""]), flush=True)
    print(f"M {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}", flush=True)


# --------------------------------------------------------------------------------------------- parent side
def limit_self(memory: int) -> None:
    """Cap this process's address space at ``memory`` bytes and lower its priority (a worker calls it first, before
    importing torch; ``preexec_fn`` is not safe in the threaded parent)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    os.nice(5)


def _run_range(kind: str, seed: int, start: int, stop: int, folder: Path, memory: int, timeout: float,
               results: dict[int, tuple[str, str, str]], peaks: list[int]) -> None:
    """Run cases [start, stop) in worker processes, restarting after a crash or a timeout."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    while start < stop:
        cmd = [sys.executable, "-m", "sparks.fuzz", "--worker", "--kind", kind, "--seed", str(seed), "--start",
               str(start), "--stop", str(stop), "--dir", str(folder), "--memory-bytes", str(memory)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, bufsize=1)
        current, name, wait = None, "", READY_TIMEOUT
        while True:
            ready, _, _ = select.select([proc.stdout], [], [], wait)
            line = proc.stdout.readline() if ready else None
            if line is None or line == "":  # timeout or the worker died
                if line is None:
                    proc.kill()
                proc.wait()
                err = proc.stderr.read()[-300:].replace("\n", " | ")
                if current is None:
                    raise RuntimeError(f"fuzz worker failed outside a case (memory limit too low for the imports, "
                                       f"or a harness bug): {err}")
                outcome = "timeout" if line is None else ("memory" if "MemoryError" in err else "crash")
                results[current] = (outcome, name, f"exit {proc.returncode}: {err}")
                start = current + 1
                break
            if line.startswith("READY"):
                wait = timeout
            elif line.startswith("S "):
                _, index, name = line.split(maxsplit=2)
                current, name = int(index), name.strip()
            elif line.startswith("R "):
                i, outcome, name, detail = json.loads(line[2:])
                results[i] = (outcome, name, detail)
                current = None
                start = i + 1
            elif line.startswith("M "):
                peaks.append(int(line.split()[1]))
                proc.wait()
                start = stop
                break


def run_campaign(kind: str, count: int, seed: int = 0, workers: int = 2, memory: int = DEFAULT_MEMORY,
                 timeout: float = 60.0, folder: str | Path | None = None) -> dict[str, Any]:
    """Run ``count`` mutated files of ``kind`` (``"sparks"`` or ``"checkpoint"``); returns the outcome counts, the
    counts per mutation, the failures (case, outcome, mutation, detail), the peak RSS of a worker and the time."""
    if kind not in ("sparks", "checkpoint"):
        raise ValueError(f"kind must be 'sparks' or 'checkpoint', got {kind!r}")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="sparks-fuzz-", dir=folder) as tmp:
        path = Path(tmp)
        make_seeds(path)
        results: dict[int, tuple[str, str, str]] = {}
        peaks: list[int] = []
        bounds = [count * w // workers for w in range(workers + 1)]
        threads = [threading.Thread(target=_run_range, args=(kind, seed, bounds[w], bounds[w + 1], path, memory,
                                                             timeout, results, peaks)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    outcomes = Counter(o for o, _, _ in results.values())
    by_mutation = Counter(f"{n.split('+')[0]}:{o}" for o, n, _ in results.values())
    failures = sorted((i, o, n, d) for i, (o, n, d) in results.items() if o not in GOOD)
    return {"kind": kind, "count": len(results), "seed": seed, "outcomes": dict(outcomes),
            "by_mutation": dict(sorted(by_mutation.items())), "failures": failures[:50],
            "peak_rss_bytes": max(peaks, default=0), "memory_limit_bytes": memory, "seconds": time.time() - t0}
