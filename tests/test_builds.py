"""Parallel and serial numba builds keep separate on-disk cache entries (sparks.runtime.builds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from numba.core.dispatcher import Dispatcher

from sparks.runtime import builds, kernels, lut, packing, popcount, realops

ROOT = Path(__file__).resolve().parents[1]


def test_every_cached_runtime_build_has_a_cache_name_of_its_own():
    """numba names cache entries by module, qualified name and first line (not by jit options): no two cached
    dispatchers of the runtime may share that name, or a later process loads one's machine code for the other."""
    names: dict[tuple[str, str, int], str] = {}
    for module in (kernels, lut, packing, popcount, realops):
        for attr, obj in vars(module).items():
            if not isinstance(obj, Dispatcher) or obj._cache.__class__.__name__ != "FunctionCache":
                continue
            py = obj.py_func
            key = (py.__module__, py.__qualname__, py.__code__.co_firstlineno)
            assert key not in names or names[key] == attr, f"{attr} and {names[key]} share the cache entry {key}"
            names[key] = attr
    assert {"_pack_signs", "_pack_signs_serial", "_conv_dense", "_conv_dense_serial", "_rprelu",
            "_rprelu_serial"} <= set(names.values())


def test_parallel_and_serial_are_one_function_under_two_builds():
    parallel, serial = packing._pack_signs, packing._pack_signs_serial
    assert parallel.targetoptions.get("parallel") is True and serial.targetoptions.get("nogil") is True
    assert serial.py_func.__code__ is parallel.py_func.__code__
    assert serial.py_func.__qualname__ == parallel.py_func.__qualname__ + "_serial"
    assert serial.py_func.__doc__ == parallel.py_func.__doc__ and serial.py_func.__module__ == packing.__name__
    assert builds.parallel_and_serial.__module__ == "sparks.runtime.builds"


SCRIPT = """
import numpy as np
from sparks.runtime import packing
x = np.random.default_rng(0).standard_normal((2, 4, 4, 70)).astype(np.float32)
ref = packing._pack_signs_serial(x, np.zeros(0, np.float32), 2)  # compiled first and saved to the cache
got = packing._pack_signs(x, np.zeros(0, np.float32), 2)
assert np.array_equal(ref, got)
stats = packing._pack_signs.stats
print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def test_the_parallel_build_does_not_load_the_serial_builds_cache(tmp_path):
    """In a fresh cache, compile the serial build, then call the parallel one: it must compile (a cache miss), not
    load the serial machine code (a hit), which is what one shared cache entry did."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True).stdout
    hits, misses = map(int, out.split())
    assert (hits, misses) == (0, 1), out
