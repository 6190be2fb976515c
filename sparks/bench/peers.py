"""The packed runtime against the runtimes a deployer would pick instead: ONNX Runtime fp32 and int8 (static QDQ),
and opt-in peers: Larq Compute Engine (:mod:`sparks.bench.lce`, in its own Python) and torch.compile.

Every runtime runs the same network (the ``.sparks`` file, and for ONNX its float-equivalent torch module
:func:`~sparks.bench.modelbench.float_baseline` exported with ``torch.onnx.export``) on the same input shapes; all are
timed interleaved in one loop, round-robin per repeat, each timed call after an untimed one of the same runtime (so
that the spinning worker threads of the previous one do not steal the cores). ``onnxruntime``/``onnx`` are an optional
extra (``pip install sparks[peers]``): without them only the packed runtime is timed. A runtime in another process
times itself (:class:`SelfTimed`), so the pipe's round trip is not counted.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sparks.runtime.threads import available_cpus


class SelfTimed:
    """A runner that measures its own call (e.g. inside a worker process): calling it runs one inference and returns
    the seconds it took, which :func:`interleaved_times` records instead of its own clock."""

    def __init__(self, fn: Callable[[], float]) -> None:
        self.fn = fn

    def __call__(self) -> float:
        return float(self.fn())


class PeerUnavailable(RuntimeError):
    """A peer runtime cannot run here (not installed, failed to start, compile or convert); the message is one line
    for the benchmark's skip note."""


class Peer(Protocol):
    """An opt-in peer runtime for :func:`bench_peers`: ``runner`` builds (untimed) what one timed call runs."""

    name: str
    size_bytes: int
    info: dict[str, Any]

    def runner(self, threads: int, x: np.ndarray) -> Callable[[], Any]:
        """A zero-argument call that infers on ``x``'s shape with ``threads`` threads (a :class:`SelfTimed` if the
        peer times itself); raises :class:`PeerUnavailable` if this configuration cannot run."""
        ...

    def close(self) -> None:
        """Release processes or caches."""
        ...


def interleaved_times(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per timed call of each function, measured round-robin: ``warmup`` untimed rounds, then ``repeats``
    rounds of (untimed call, timed call) per function. A :class:`SelfTimed` function's timed call returns its own
    seconds, which are recorded instead of the wall clock around the call."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            fn()
            t0 = time.perf_counter()
            out = fn()
            dt = out if isinstance(fn, SelfTimed) else time.perf_counter() - t0
            if i >= warmup:
                samples[name].append(dt)
    return samples


def onnx_available() -> bool:
    """Whether onnxruntime and onnx can be imported (the ``peers`` extra)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_onnx(sparks_path: str | Path, onnx_path: str | Path, calib: np.ndarray | None = None) -> dict[str, Path]:
    """ONNX fp32 of the ``.sparks`` model's float-equivalent torch module (sign → float conv with α·codeword weights)
    and, if ``calib`` images are given, its int8 static QDQ quantization (per-channel int8 weights, uint8
    activations calibrated by MinMax on ``calib``) → {"onnx-fp32": path, "onnx-int8": path}."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from sparks.bench.modelbench import float_baseline
    from sparks.deploy.load import load

    model = float_baseline(load(sparks_path, runtime="torch"))
    onnx_path = Path(onnx_path)
    c, h, w = model_input_shape(sparks_path)
    torch.onnx.export(model, (torch.zeros(1, c, h, w),), str(onnx_path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    paths = {"onnx-fp32": onnx_path}
    if calib is not None:
        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.items = iter([{"input": calib[i:i + 1].astype(np.float32)} for i in range(len(calib))])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.items, None)

        pre = onnx_path.with_name(onnx_path.stem + "_pre.onnx")
        int8 = onnx_path.with_name(onnx_path.stem + "_int8.onnx")
        quant_pre_process(str(onnx_path), str(pre))
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        pre.unlink()
        paths["onnx-int8"] = int8
    return paths


def model_input_shape(sparks_path: str | Path) -> tuple[int, int, int]:
    """(C, H, W) the ``.sparks`` model was exported for."""
    from sparks.deploy.format import read_sparks

    inp = read_sparks(sparks_path)[0]["input"]
    return inp["channels"], inp["height"], inp["width"]


def ort_session(path: str | Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (1 inter-op), all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"input": x})[0]


def bench_peers(sparks_path: str | Path, files: dict[str, Path], threads: Sequence[int] = (1, 2),
                batches: Sequence[int] = (1, 32), repeats: int = 10, seed: int = 0, peers: Sequence[Peer] = (),
                print_fn: Callable[[str], Any] = print) -> dict[str, Any]:
    """Time the packed runtime, every model in ``files`` ({name: .onnx path}) and every opt-in peer at each
    (threads, batch), all runtimes interleaved per configuration → {"rows": [...], "files": {name: bytes},
    "system": {...}}. A peer that cannot run a configuration is skipped there with one ``print_fn`` line.

    Each row: threads, batch, runtime, median_ms_per_image, min_ms_per_image, ratio (median / packed median)."""
    from sparks.deploy.format import read_sparks
    from sparks.runtime import PackedModel

    meta, tensors = read_sparks(sparks_path)
    c, h, w = model_input_shape(sparks_path)
    rng = np.random.default_rng(seed)
    rows = []
    for t in threads:
        runners: dict[str, Callable[[np.ndarray], Any]] = {"sparks-packed": PackedModel(meta, tensors, threads=t)}
        for name, path in files.items():
            runners[name] = ort_session(path, t)
        for b in batches:
            x = rng.standard_normal((b, c, h, w)).astype(np.float32)
            reps = repeats if b == 1 else max(3, repeats // 3)
            fns: dict[str, Callable[[], Any]] = {k: (lambda f=f, x=x: f(x)) for k, f in runners.items()}
            for peer in peers:
                try:
                    fns[peer.name] = peer.runner(t, x)
                except PeerUnavailable as e:
                    print_fn(f"# {peer.name} skipped at {t} threads, batch {b}: {e}")
            samples = interleaved_times(fns, reps)
            base = float(np.median(samples["sparks-packed"]))
            for name, s in samples.items():
                rows.append({"threads": t, "batch": b, "runtime": name,
                             "median_ms_per_image": float(np.median(s)) * 1e3 / b,
                             "min_ms_per_image": float(np.min(s)) * 1e3 / b,
                             "ratio": float(np.median(s)) / base})
    sizes = {"sparks-packed": os.path.getsize(sparks_path), **{k: os.path.getsize(p) for k, p in files.items()},
             **{p.name: p.size_bytes for p in peers}}
    system = system_info()
    if peers:
        system["peers"] = {p.name: p.info for p in peers}
    return {"rows": rows, "files": sizes, "system": system}


class TorchCompilePeer:
    """torch.compile (inductor, static shapes) of the float-equivalent module, channels_last fp32, inference mode.

    Compiled once per thread count (inductor bakes the OpenMP thread count into its kernels) and warmed up per batch
    outside the timing; ``torch.set_num_threads`` is process-wide, which the other runtimes do not read."""

    name = "torch-compile"

    def __init__(self, sparks_path: str | Path) -> None:
        import io

        import torch

        from sparks.bench.modelbench import float_baseline
        from sparks.deploy.load import load

        self.model = float_baseline(load(sparks_path, runtime="torch")).eval().to(memory_format=torch.channels_last)
        buf = io.BytesIO()
        torch.save(self.model.state_dict(), buf)
        self.size_bytes = len(buf.getvalue())
        self.info: dict[str, Any] = {"torch": torch.__version__}
        self.threads: int | None = None
        self.compiled: Any = None

    def runner(self, threads: int, x: np.ndarray) -> Callable[[], Any]:
        """Compile for ``threads`` if needed, warm up on ``x``'s shape, and return the timed call."""
        import torch

        if threads != self.threads:
            torch.set_num_threads(threads)
            torch._dynamo.reset()
            self.compiled, self.threads = torch.compile(self.model, dynamic=False), threads
        xt = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        compiled = self.compiled

        def call() -> Any:
            with torch.inference_mode():
                return compiled(xt)

        try:
            call()
        except Exception as e:  # noqa: BLE001 - e.g. no C++ compiler: one line, not a traceback
            self.threads = None
            first = (str(e).splitlines() or [""])[0][:200]
            raise PeerUnavailable(f"torch.compile failed: {type(e).__name__}: {first}") from e
        return call

    def close(self) -> None:
        """Drop the compiled graphs."""
        import torch

        self.compiled, self.threads = None, None
        torch._dynamo.reset()


def system_info() -> dict[str, Any]:
    """Load average, usable CPUs and library versions, recorded next to every timing."""
    import numba

    info: dict[str, Any] = {"load_1min": os.getloadavg()[0], "cpus_usable": available_cpus(),
                            "numba": numba.__version__, "numpy": np.__version__}
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:
        info["numba_threading_layer"] = None
    if onnx_available():
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


def format_peers(result: dict[str, Any]) -> str:
    """A markdown table: ms per image (median, min) and the ratio to the packed runtime, per configuration."""
    lines = ["| threads | batch | runtime | ms/image (median) | ms/image (min) | × packed | file MB |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        size = result["files"].get(r["runtime"], 0) / 1e6
        lines.append(f"| {r['threads']} | {r['batch']} | {r['runtime']} | {r['median_ms_per_image']:.3f} | "
                     f"{r['min_ms_per_image']:.3f} | {r['ratio']:.2f}× | {size:.2f} |")
    return "\n".join(lines)


def _spin() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


@contextmanager
def competitors(n: int) -> Iterator[None]:
    """Run ``n`` CPU-bound busy-loop processes for the duration of the block: the "another CPU-bound process is
    running" case of the loaded-machine timings."""
    procs = [mp.Process(target=_spin, daemon=True) for _ in range(n)]
    for p in procs:
        p.start()
    try:
        yield
    finally:
        for p in procs:
            p.terminate()
            p.join()
