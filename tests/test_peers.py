"""bench peers harness: the packed runtime alone always; ONNX Runtime fp32/int8 only where onnxruntime is installed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparks.bench.peers import bench_peers, format_peers, interleaved_times, onnx_available
from sparks.deploy.export import export
from sparks.models import create


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, in_channels=3, num_classes=10, tau=5, method="sparks").eval()
    path = tmp_path_factory.mktemp("p") / "tiny.sparks"
    export(model, path)
    return model, path


def test_interleaved_times_counts_calls():
    calls = {"a": 0, "b": 0}

    def bump(k: str) -> None:
        calls[k] += 1

    s = interleaved_times({"a": lambda: bump("a"), "b": lambda: bump("b")}, repeats=3, warmup=1)
    assert {k: len(v) for k, v in s.items()} == {"a": 3, "b": 3}
    assert calls == {"a": 8, "b": 8}  # (1 warm-up + 3 timed rounds) × (untimed + timed call)


def test_bench_peers_packed_only(tiny_file):
    _, path = tiny_file
    result = bench_peers(path, {}, threads=(1,), batches=(1, 2), repeats=1)
    rows = result["rows"]
    assert [(r["batch"], r["runtime"]) for r in rows] == [(1, "sparks-packed"), (2, "sparks-packed")]
    assert all(r["ratio"] == 1.0 and r["median_ms_per_image"] > 0 for r in rows)
    assert result["files"]["sparks-packed"] == path.stat().st_size
    table = format_peers(result)
    assert table.count("\n") == 3 and "sparks-packed" in table


@pytest.mark.slow
@pytest.mark.skipif(not onnx_available(), reason="onnxruntime/onnx not installed (optional extra 'peers')")
def test_onnx_peers_run_the_same_network(tiny_file, tmp_path):
    from sparks.bench.peers import export_onnx, ort_session

    model, path = tiny_file
    calib = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    files = export_onnx(path, tmp_path / "tiny.onnx", calib)
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    fp32 = ort_session(files["onnx-fp32"], 1)(x)
    np.testing.assert_allclose(fp32, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    assert ort_session(files["onnx-int8"], 1)(x).shape == ref.shape
    result = bench_peers(path, files, threads=(1,), batches=(2,), repeats=1)
    assert {r["runtime"] for r in result["rows"]} == {"sparks-packed", "onnx-fp32", "onnx-int8"}
