"""Packed runtime: fused block kernel and biased packing against brute force, thread policy, thread-count invariance."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparks.deploy.format import read_sparks
from sparks.runtime import PackedModel, kernels
from sparks.runtime.threads import available_cpus, cgroup_cpu_limit, resolve_threads


def _prelu_chain(acc: np.ndarray, scale, shift, res, s_in, slope, s_out) -> np.ndarray:
    """The unfused float32 ops in torch's order (numpy float32: each op rounds once)."""
    v = acc.astype(np.float32) * scale + shift
    if res is not None:
        v = v + res
    v = v + s_in
    v = np.where(v > 0, v, slope * v)
    return v + s_out


@pytest.mark.parametrize("stride,with_res", [(1, True), (2, True), (1, False)])
def test_block_kernel_equals_brute_force(stride, with_res):
    rng = np.random.default_rng(11 + stride)
    n, c_in, c_out, h, w = 2, 70, 24, 7, 6
    x = rng.standard_normal((n, h, w, c_in)).astype(np.float32)
    bias = (rng.standard_normal(c_in) * 0.3).astype(np.float32)
    x[0, 0, 0, :4] = -bias[:4]  # x + b == 0 exactly: sign +1
    w_pm1 = np.where(rng.random((c_out, c_in, 3, 3)) < 0.5, -1.0, 1.0)
    signs = np.where(x + bias >= 0, 1.0, -1.0)  # float32 add, then sign
    acc = F.conv2d(torch.from_numpy(signs).permute(0, 3, 1, 2), torch.from_numpy(w_pm1), stride=stride, padding=1)
    acc = acc.permute(0, 2, 3, 1).numpy().astype(np.int64)  # exact integers from float64
    ho, wo = acc.shape[1:3]
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    scale, shift, s_in, s_out = f(c_out), f(c_out), f(c_out), f(c_out)
    slope = rng.random(c_out, dtype=np.float32)
    res = f(n, ho, wo, c_out) if with_res else None
    expected = _prelu_chain(acc, scale, shift, res, s_in, slope, s_out)
    xp = kernels.pack_signs(x, bias)
    np.testing.assert_array_equal(xp, kernels.pack_signs(x + bias))
    prepared = kernels.prepare_kernels(kernels.pack_kernels(w_pm1), c_in)
    for parallel in (True, False):
        got = kernels.binary_conv3x3_block(xp, prepared, stride, scale, shift, res, s_in, slope, s_out, parallel)
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
        fused = kernels.binary_conv3x3_fused(xp, prepared, c_in, stride, scale, shift, parallel=parallel)
        np.testing.assert_array_equal(fused, acc.astype(np.float32) * scale + shift)


def test_cgroup_quota_files(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 2.0
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None


def test_resolve_threads():
    limit = numba.config.NUMBA_NUM_THREADS
    auto = resolve_threads("auto")
    assert 1 <= auto <= min(limit, available_cpus())
    assert resolve_threads(None) == auto
    assert resolve_threads(1) == 1
    for bad in (0, limit + 1, "four", 1.5, True):
        with pytest.raises(ValueError, match="threads"):
            resolve_threads(bad)


def test_thread_counts_and_batch_splits_give_identical_logits(tiny_resnet_sparks):
    model, path = tiny_resnet_sparks
    meta, tensors = read_sparks(path)
    x = np.random.default_rng(0).standard_normal((10, 1, 28, 28)).astype(np.float32)
    one = PackedModel(meta, tensors, threads=1)
    ref = one(x)
    with torch.no_grad():
        torch_ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ref, torch_ref, rtol=0, atol=1e-4 * np.abs(torch_ref).max())
    two = PackedModel(meta, tensors, threads=min(2, numba.config.NUMBA_NUM_THREADS))
    for batch in (1, 3, 6, 10):  # below, at and above the batch split (3 images per thread) and the chunk size (8)
        np.testing.assert_array_equal(two(x[:batch]), ref[:batch])
        np.testing.assert_array_equal(one(x[:batch]), ref[:batch])
    two.threads = 1
    assert two.threads == 1
    auto = PackedModel(meta, tensors)  # "auto": usable CPUs, capped by a caller's numba.set_num_threads
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert auto.threads == 1
        np.testing.assert_array_equal(auto(x), ref)
    finally:
        numba.set_num_threads(old)
    assert auto.threads == min(available_cpus(), old)
    with pytest.raises(ValueError, match="threads"):
        PackedModel(meta, tensors, threads=0)


def test_intra_op_path_gives_identical_logits(tiny_resnet_sparks, monkeypatch):
    """Batch 1 on 2 threads with every kernel forced onto numba's parallel builds (the thresholds set to 0; at real
    sizes only huge models reach them) gives the serial path's logits bit for bit."""
    from sparks.runtime import engine, realops

    _, path = tiny_resnet_sparks
    meta, tensors = read_sparks(path)
    x = np.random.default_rng(3).standard_normal((1, 1, 28, 28)).astype(np.float32)
    ref = PackedModel(meta, tensors, threads=1)(x)
    for name in ("BINARY_PARALLEL_MIN_WORDS", "PACK_PARALLEL_MIN_VALUES"):
        monkeypatch.setattr(engine, name, 0)
    monkeypatch.setattr(realops, "RPRELU_PARALLEL_MIN_VALUES", 0)
    two = PackedModel(meta, tensors, threads=min(2, numba.config.NUMBA_NUM_THREADS))
    np.testing.assert_array_equal(two(x), ref)
