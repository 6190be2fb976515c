"""sparks.runtime.engine: the real-valued NHWC ops against torch (float64 reference for the convs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparks.runtime.engine import conv2d_nhwc, global_avgpool, pool2d_nhwc, rprelu_nhwc


def nhwc(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("k, stride, padding", [(3, 1, 1), (7, 2, 3), (1, 1, 0), (1, 2, 0), (3, 2, 0), (1, 1, 1)])
def test_conv2d_matches_float64_reference(k, stride, padding):
    g = torch.Generator().manual_seed(k * 10 + stride)
    x, w, b = torch.randn(2, 5, 11, 9, generator=g), torch.randn(6, 5, k, k, generator=g), torch.randn(6, generator=g)
    ref = F.conv2d(x.double(), w.double(), b.double(), stride=stride, padding=padding).float()
    got = conv2d_nhwc(nhwc(x), w.numpy(), b.numpy(), (stride, stride), (padding, padding))
    np.testing.assert_allclose(got, nhwc(ref), rtol=1e-5, atol=1e-5)


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
