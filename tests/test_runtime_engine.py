"""sparks.runtime.engine: the real-valued NHWC ops against torch (float64 reference for the convs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_info, threadpool_limits

from sparks.runtime.engine import conv2d_nhwc, global_avgpool, pool2d_nhwc, rprelu_nhwc
from sparks.runtime.realops import matmul
from sparks.runtime.threads import single_threaded_blas


def nhwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("k, stride, padding", [(3, 1, 1), (7, 2, 3), (1, 1, 0), (1, 2, 0), (3, 2, 0), (1, 1, 1)])
def test_conv2d_matches_float64_reference(k, stride, padding):
    g = torch.Generator().manual_seed(k * 10 + stride)
    x, w, b = torch.randn(2, 5, 11, 9, generator=g), torch.randn(6, 5, k, k, generator=g), torch.randn(6, generator=g)
    ref = F.conv2d(x.double(), w.double(), b.double(), stride=stride, padding=padding).float()
    got = conv2d_nhwc(nhwc(x), w.numpy(), b.numpy(), (stride, stride), (padding, padding))
    np.testing.assert_allclose(got, nhwc(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, k, n_out, per_call", [(16, 4608, 64, 16), (3 * 25, 27, 64, 25), (11, 512, 10, 8),
                                                      (5, 300, 7, 1)])
def test_matmul_rows_get_the_same_bits_in_any_batch(rows, k, n_out, per_call):
    """Each block of ``per_call`` rows (an image) gets the same bits alone, in a batch, at a misaligned address, with
    BLAS on 1 or 2 threads; all within float32 rounding of a float64 reference, bias and BN affine included. (In the
    first case, k over OpenBLAS's block size, calls of 1 or 2 rows give other bits than calls of 16.)"""
    rng = np.random.default_rng(rows + k)
    a = rng.standard_normal((rows, k), dtype=np.float32)
    wt = rng.standard_normal((k, n_out), dtype=np.float32)
    bias, scale, shift = (rng.standard_normal(n_out, dtype=np.float32) for _ in range(3))
    with single_threaded_blas():
        full = matmul(a, wt, bias, (scale, shift), per_call)
        first = matmul(a[:per_call], wt, bias, (scale, shift), per_call)
    ref = ((a.astype(np.float64) @ wt + bias) * scale + shift).astype(np.float32)
    np.testing.assert_allclose(full, ref, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    np.testing.assert_array_equal(first, full[:per_call])
    shifted = np.empty(a.size + 1, np.float32)[1:].reshape(a.shape)  # 4 bytes off the allocation's alignment
    shifted[:] = a
    last = rows - rows % per_call if rows % per_call else rows - per_call  # the padded or the last full block
    with threadpool_limits(limits=2, user_api="blas"):
        np.testing.assert_array_equal(matmul(shifted, wt, bias, (scale, shift), per_call), full)
        np.testing.assert_array_equal(matmul(a[last:], wt, bias, (scale, shift), per_call), full[last:])


def test_single_threaded_blas_sets_and_restores_the_thread_count():
    with threadpool_limits(limits=2, user_api="blas"):
        with single_threaded_blas():
            assert all(lib["num_threads"] == 1 for lib in threadpool_info() if lib["user_api"] == "blas")
        assert all(lib["num_threads"] == 2 for lib in threadpool_info() if lib["user_api"] == "blas")


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("k, s, p, ceil", [(2, 2, 0, True), (3, 2, 1, False), (3, 2, 1, True), (2, 1, 1, True),
                                           (3, 3, 0, True)])
@pytest.mark.parametrize("include_pad", [True, False])
def test_pooling_equals_torch(kind, k, s, p, ceil, include_pad):
    x = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    if kind == "avg":
        ref = F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=include_pad)
    else:
        ref = F.max_pool2d(x, k, s, p, ceil_mode=ceil)
    got = pool2d_nhwc(nhwc(x), kind, [k, k], [s, s], [p, p], ceil, include_pad)
    np.testing.assert_allclose(got, nhwc(ref), rtol=1e-6, atol=1e-6)


def test_global_avgpool_and_rprelu():
    x = torch.randn(2, 4, 5, 3, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(global_avgpool(nhwc(x)), nhwc(x.mean((2, 3), keepdim=True)), rtol=1e-6, atol=1e-6)
    other = torch.randn_like(x)
    s_in, w, s_out = torch.randn(4), torch.rand(4), torch.randn(4)
    ref = F.prelu(x + other + s_in.view(1, -1, 1, 1), w) + s_out.view(1, -1, 1, 1)
    got = rprelu_nhwc(nhwc(x), s_in.numpy(), w.numpy(), s_out.numpy(), nhwc(other))
    np.testing.assert_allclose(got, nhwc(ref), rtol=1e-6, atol=1e-6)
