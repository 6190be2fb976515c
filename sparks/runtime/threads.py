"""Thread policy of the packed runtime: how many numba threads to use, and which numba threading layer.

``threads="auto"`` is the number of CPUs this process may really use: its CPU affinity (``os.sched_getaffinity``)
capped by the cgroup CPU quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us / cpu.cfs_period_us`` in v1), and by
numba's own pool size. Kernels whose work is too small to pay for waking workers run on the calling thread only,
and BLAS (the real layers' matrix products) runs on the calling thread while the engine works: the engine's own
threads split the batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numba
from threadpoolctl import ThreadpoolController

__all__ = ["available_cpus", "cgroup_cpu_limit", "resolve_threads", "use_threads", "select_threading_layer",
           "single_threaded_blas", "THREADING_LAYER"]

# numba's layer for the runtime's intra-op parallel kernels (batches below engine.BATCH_SPLIT_MIN images per thread)
# when the user has not chosen one (NUMBA_THREADING_LAYER): numba's own "workqueue" pool. Measured on the shared
# 2-core machine, GNU OpenMP ("omp", numba's first choice here; tbb is not installed) spins at its barriers and
# collapsed by 5-190x with 2 threads under load, workqueue stayed within 0.9-1.3x of 1 thread (docs/benchmarks.md,
# *Threads*). workqueue must not be entered by two threads at once: the engine serialises its intra-op runs
# (engine.INTRA_OP_LOCK).
THREADING_LAYER = "workqueue"


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup CPU quota (e.g. 1.5), or None when there is no quota or it cannot be read."""
    root = Path(root)
    try:
        text = (root / "cpu.max").read_text().split()  # v2: "max 100000" or "150000 100000"
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError, IndexError):
        pass
    for base in (root / "cpu", root / "cpu,cpuacct", root):  # v1
        try:
            quota = int((base / "cpu.cfs_quota_us").read_text())
            period = int((base / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def available_cpus() -> int:
    """CPUs this process can use: affinity mask size, capped by the cgroup quota (rounded down, at least 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_limit()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def resolve_threads(threads: int | str | None) -> int:
    """``"auto"``/None → :func:`available_cpus` (at most numba's pool); an int must lie in 1..numba's pool size."""
    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None or threads == "auto":
        return max(1, min(available_cpus(), limit))
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise ValueError(f"threads must be 'auto' or an integer, got {threads!r}")
    if not 1 <= threads <= limit:
        raise ValueError(f"threads must be in 1..{limit} (numba's pool; set NUMBA_NUM_THREADS for more), got {threads}")
    return threads


def select_threading_layer() -> str:
    """Make numba use :data:`THREADING_LAYER` unless the user chose one or a parallel kernel already ran."""
    if "NUMBA_THREADING_LAYER" not in os.environ and numba.config.THREADING_LAYER == "default":
        try:
            numba.threading_layer()  # raises until the layer is initialised by a first parallel launch
        except ValueError:
            numba.config.THREADING_LAYER = THREADING_LAYER
    return numba.config.THREADING_LAYER


@contextmanager
def use_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` numba threads (numba's setting is per calling thread), restoring it afterwards."""
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)


_BLAS_LIBS: list | None = None


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with the BLAS libraries that numpy loaded (OpenBLAS, MKL, …, found by threadpoolctl) on one
    thread each, restoring their counts afterwards. The engine splits work over its own threads; BLAS threads on top
    would oversubscribe the cores, and OpenBLAS's spin on a busy machine. The setting is process-wide while the block
    runs (other threads' BLAS calls get one thread too); results do not depend on it (tested)."""
    global _BLAS_LIBS
    if _BLAS_LIBS is None:
        _BLAS_LIBS = ThreadpoolController().select(user_api="blas").lib_controllers
    old = [lib.num_threads for lib in _BLAS_LIBS]
    for lib, n in zip(_BLAS_LIBS, old, strict=True):
        if n != 1:
            lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, n in zip(_BLAS_LIBS, old, strict=True):
            if n != 1:
                lib.set_num_threads(n)
