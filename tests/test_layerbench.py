"""bench_binary_layer: returns the documented keys with positive times on a tiny layer (no timing assertions)."""

import math

import pytest

from sparks.bench.layerbench import bench_binary_layer


def test_bench_binary_layer_keys():
    r = bench_binary_layer(8, 4, 5, 5, stride=2, n=4, repeats=2, warmup=1, threads=1, stat="min")
    for key in ("torch_ms", "packed_ms", "prepared_ms", "fused_ms", "pack_ms", "lut_ms", "speedup"):
        assert r[key] > 0 and math.isfinite(r[key]), key
    assert r["speedup"] == pytest.approx(r["torch_ms"] / r["packed_ms"])


def test_bench_binary_layer_rejects_thread_clock_with_two_threads():
    with pytest.raises(ValueError, match="threads=1"):
        bench_binary_layer(8, 4, 5, 5, repeats=1, threads=2, clock="thread")
