"""bench peers harness: the packed runtime alone always; ONNX Runtime fp32/int8 only where onnxruntime is installed;
the self-timed (out-of-process) peer path and the LCE skip with fakes, no TensorFlow or network needed."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from sparks.bench.lce import LceRunner, start_lce
from sparks.bench.peers import (
    PeerUnavailable,
    SelfTimed,
    bench_peers,
    format_peers,
    interleaved_times,
    onnx_available,
)
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


def test_interleaved_times_records_self_timed_seconds():
    calls = {"self": 0}

    def worker_call() -> float:
        calls["self"] += 1
        return 0.25  # what a worker process would report for its own call

    s = interleaved_times({"plain": lambda: None, "self": SelfTimed(worker_call)}, repeats=2, warmup=1)
    assert s["self"] == [0.25, 0.25]  # the runner's own seconds, not the wall clock around the call
    assert len(s["plain"]) == 2 and all(0 <= v < 0.25 for v in s["plain"])
    assert calls["self"] == 6


class FakePeer:
    """A self-timed peer that refuses batch 2 (as a worker failing to convert would)."""

    name = "fake-peer"
    size_bytes = 1234
    info = {"version": "0"}

    def runner(self, threads: int, x: np.ndarray) -> SelfTimed:
        if x.shape[0] == 2:
            raise PeerUnavailable("no batch 2 here")
        return SelfTimed(lambda: 0.004 * x.shape[0])

    def close(self) -> None:
        pass


def test_bench_peers_self_timed_peer_and_skip(tiny_file):
    _, path = tiny_file
    notes: list[str] = []
    result = bench_peers(path, {}, threads=(1,), batches=(1, 2), repeats=1, peers=[FakePeer()], print_fn=notes.append)
    rows = {(r["batch"], r["runtime"]): r for r in result["rows"]}
    assert set(rows) == {(1, "sparks-packed"), (1, "fake-peer"), (2, "sparks-packed")}
    assert rows[(1, "fake-peer")]["median_ms_per_image"] == pytest.approx(4.0)
    assert notes == ["# fake-peer skipped at 1 threads, batch 2: no batch 2 here"]
    assert result["files"]["fake-peer"] == 1234 and result["system"]["peers"] == {"fake-peer": {"version": "0"}}
    assert "| 1 | 1 | fake-peer |" in format_peers(result)


def test_lce_skipped_in_one_line_without_its_python(tmp_path):
    notes: list[str] = []
    assert start_lce(tmp_path / "no-venv" / "bin" / "python", print_fn=notes.append) is None
    assert len(notes) == 1 and "\n" not in notes[0] and "does not exist" in notes[0]
    assert start_lce(None, print_fn=notes.append) is None
    assert len(notes) == 2 and "no --lce-python" in notes[1]


FAKE_WORKER = """
    import json, sys
    print("banner a library printed")  # not JSON: skipped by the runner
    print(json.dumps({"ready": True, "flatbuffer_bytes": 777, "bconv_ops": 16, "lce": "fake", "tensorflow": "none"}))
    sys.stdout.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["batch"] == 3:
            reply = {"error": "cannot convert batch 3"}
        else:
            reply = {"prepared": True} if cmd["calls"] == 0 else {"seconds": 0.001 * cmd["batch"] * cmd["threads"]}
        print(json.dumps(reply))
        sys.stdout.flush()
"""


def test_lce_runner_protocol_with_a_fake_worker(tmp_path):
    worker = tmp_path / "fake_worker.py"
    worker.write_text(textwrap.dedent(FAKE_WORKER))
    runner = LceRunner(sys.executable, worker=worker, timeout_s=60)
    try:
        assert runner.size_bytes == 777 and runner.info["bconv_ops"] == 16
        call = runner.runner(2, np.zeros((4, 3, 32, 32), np.float32))
        assert isinstance(call, SelfTimed) and call() == pytest.approx(0.008)
        with pytest.raises(PeerUnavailable, match="cannot convert batch 3"):
            runner.runner(1, np.zeros((3, 3, 32, 32), np.float32))
    finally:
        runner.close()
    assert runner.proc.poll() is not None


def test_lce_worker_failing_to_start_is_one_line(tmp_path):
    worker = tmp_path / "broken_worker.py"
    worker.write_text("import sys\nsys.stderr.write('Traceback ...\\nModuleNotFoundError: no tensorflow\\n')\n"
                      "sys.exit(1)\n")
    notes: list[str] = []
    assert start_lce(sys.executable, print_fn=notes.append, worker=worker, timeout_s=60) is None
    assert len(notes) == 1 and "exited (code 1)" in notes[0] and "no tensorflow" in notes[0]


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
