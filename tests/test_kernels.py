"""Packed bit kernels vs torch's float64 conv on ±1 tensors (exact integers), LUT vs dense, fused epilogue bit-exact."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparks.runtime import kernels as K
from sparks.runtime import lut as L


def _signs(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0)


def _reference(x_nhwc: np.ndarray, w_pm1: np.ndarray, stride: int) -> np.ndarray:
    """F.conv2d(sign(x), w, stride, padding=1) in float64, as int32 NHWC."""
    xs = torch.from_numpy(_signs(x_nhwc)).permute(0, 3, 1, 2)
    out = F.conv2d(xs, torch.from_numpy(w_pm1.astype(np.float64)), stride=stride, padding=1)
    return out.permute(0, 2, 3, 1).numpy().astype(np.int32)


def _random_case(rng, n, c_in, c_out, h, w):
    x = rng.standard_normal((n, h, w, c_in)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1
    w_pm1 = np.where(rng.random((c_out, c_in, 3, 3)) < 0.5, -1.0, 1.0).astype(np.float32)
    return x, w_pm1


def test_popcount_matches_python():
    from numba import njit

    @njit
    def count(v):
        out = np.empty(v.shape[0], dtype=np.int64)
        for i in range(v.shape[0]):
            out[i] = K.popcount64(v[i])
        return out

    rng = np.random.default_rng(0)
    v = np.concatenate(
        [
            rng.integers(0, 2**63, 200, dtype=np.uint64) * np.uint64(2) + np.uint64(1),
            np.array([0, 2**64 - 1, 1 << 63], dtype=np.uint64),
        ]
    )
    assert count(v).tolist() == [bin(int(a)).count("1") for a in v]


def test_pack_signs_layout():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 2, 130)).astype(np.float32)
    x[0, 0, 0, :5] = [0.0, -0.0, 1e-30, -1e-30, 0.0]
    packed = K.pack_signs(x)
    assert packed.shape == (2, 3, 2, 3) and packed.dtype == np.uint64
    for c in range(130):
        bit = (packed[..., c // 64] >> np.uint64(c % 64)) & np.uint64(1)
        np.testing.assert_array_equal(bit.astype(bool), x[..., c] >= 0)
    assert np.all(packed[..., 2] >> np.uint64(2) == 0)  # pad bits are 0


def test_pack_kernels_layout():
    rng = np.random.default_rng(2)
    w = np.where(rng.random((5, 70, 3, 3)) < 0.5, -1, 1).astype(np.int8)
    packed = K.pack_kernels(w)
    assert packed.shape == (5, 3, 3, 2) and packed.dtype == np.uint64
    for c in range(70):
        bit = (packed[..., c // 64] >> np.uint64(c % 64)) & np.uint64(1)
        np.testing.assert_array_equal(bit.astype(bool), w[:, c] > 0)
    assert np.all(packed[..., 1] >> np.uint64(6) == 0)


SHAPES = [  # (n, c_in, c_out, h, w)
    (2, 1, 3, 5, 4),
    (1, 3, 8, 7, 7),
    (2, 63, 5, 4, 5),
    (1, 64, 16, 6, 6),
    (3, 65, 9, 1, 1),
    (2, 65, 4, 2, 2),
    (1, 130, 17, 3, 8),
    (1, 130, 33, 9, 2),
    (1, 65, 520, 3, 13),  # wide rows are processed in column blocks
]


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", SHAPES)
def test_dense_and_lut_match_torch(shape, stride):
    n, c_in, c_out, h, w = shape
    rng = np.random.default_rng(hash((shape, stride)) % 2**32)
    x, w_pm1 = _random_case(rng, n, c_in, c_out, h, w)
    ref = _reference(x, w_pm1, stride)
    assert ref.shape == (n, (h - 1) // stride + 1, (w - 1) // stride + 1, c_out)
    xp = K.pack_signs(x)
    wp = K.pack_kernels(w_pm1)
    dense = K.binary_conv3x3(xp, wp, c_in, stride)
    assert dense.dtype == np.int32
    np.testing.assert_array_equal(dense, ref)
    np.testing.assert_array_equal(K.binary_conv3x3(xp, K.prepare_kernels(wp, c_in), c_in, stride), ref)
    # LUT: the layer's distinct kernels as its codebook (SNN index convention, bit i ⇔ row-major position i is +1)
    codes = ((w_pm1.reshape(c_out, c_in, 9) > 0) * (1 << np.arange(9))).sum(-1)
    codewords, idx = np.unique(codes, return_inverse=True)
    lut = L.binary_conv3x3_lut(xp, codewords.astype(np.uint16), idx.reshape(c_out, c_in), c_in, stride)
    assert lut.dtype == np.int32
    np.testing.assert_array_equal(lut, ref)


@pytest.mark.parametrize("n_code", [1, 16, 32])
def test_lut_small_codebook_equals_dense(n_code):
    rng = np.random.default_rng(n_code)
    c_in, c_out = 70, 12
    x = rng.standard_normal((2, 6, 5, c_in)).astype(np.float32)
    codewords = rng.choice(512, n_code, replace=False).astype(np.uint16)
    idx = rng.integers(0, n_code, (c_out, c_in))
    bits = (codewords[idx][..., None].astype(np.int64) >> np.arange(9)) & 1
    w_pm1 = (2 * bits - 1).reshape(c_out, c_in, 3, 3)
    xp = K.pack_signs(x)
    for stride in (1, 2):
        dense = K.binary_conv3x3(xp, K.pack_kernels(w_pm1), c_in, stride)
        np.testing.assert_array_equal(L.binary_conv3x3_lut(xp, codewords, idx, c_in, stride), dense)
        np.testing.assert_array_equal(dense, _reference(x, w_pm1, stride))


@pytest.mark.parametrize("stride", [1, 2])
def test_fused_epilogue_bit_exact(stride):
    rng = np.random.default_rng(7)
    x, w_pm1 = _random_case(rng, 2, 100, 24, 7, 6)
    scale = (rng.standard_normal(24) * 0.37).astype(np.float32)
    shift = (rng.standard_normal(24) * 3.1).astype(np.float32)
    xp, wp = K.pack_signs(x), K.pack_kernels(w_pm1)
    acc = K.binary_conv3x3(xp, wp, 100, stride)
    expected = acc.astype(np.float32) * scale + shift  # numpy float32: multiply, round, add, round
    fused = K.binary_conv3x3_fused(xp, wp, 100, stride, scale, shift)
    assert fused.dtype == np.float32
    np.testing.assert_array_equal(fused.view(np.uint32), expected.view(np.uint32))
    prepared = K.binary_conv3x3_fused(xp, K.prepare_kernels(wp, 100), 100, stride, scale, shift)
    np.testing.assert_array_equal(prepared.view(np.uint32), expected.view(np.uint32))


def test_bad_input_raises():
    rng = np.random.default_rng(3)
    x, w_pm1 = _random_case(rng, 1, 10, 4, 4, 4)
    xp, wp = K.pack_signs(x), K.pack_kernels(w_pm1)
    with pytest.raises(ValueError, match="stride"):
        K.binary_conv3x3(xp, wp, 10, 3)
    with pytest.raises(ValueError, match="c_in"):
        K.binary_conv3x3(xp, wp, 65, 1)
    with pytest.raises(ValueError, match="packed kernels"):
        K.binary_conv3x3(xp, wp[:, :2], 10, 1)
    with pytest.raises(ValueError, match=r"\+1 or -1"):
        K.pack_kernels(w_pm1 * 0.5)
    with pytest.raises(ValueError, match="indices"):
        L.binary_conv3x3_lut(xp, np.array([3, 5], np.uint16), np.full((4, 10), 2), 10, 1)
    with pytest.raises(ValueError, match="codewords"):
        L.binary_conv3x3_lut(xp, np.array([512], np.uint16), np.zeros((4, 10), int), 10, 1)
    with pytest.raises(ValueError, match="prepared kernels are for c_in=10"):
        K.binary_conv3x3(K.pack_signs(x[..., :9]), K.prepare_kernels(wp, 10), 9, 1)
    with pytest.raises(ValueError, match="scale"):
        K.binary_conv3x3_fused(xp, wp, 10, 1, np.ones(3, np.float32), np.ones(4, np.float32))


def test_choose_binary_kernel(monkeypatch):
    """The decision (docs/benchmarks.md, "Packed kernels"): dense for every shape on CPU, including c_in = 1 where
    LUT came closest; the LUT kernel stays for other hardware. And the engine runs what the chooser picks."""
    from sparks.deploy.format import codeword_to_kernel
    from sparks.runtime.engine import BinaryLayer

    for args in [(1, 16, 28, 28, 2), (3, 64, 32, 32, 16), (16, 16, 8, 8, 32), (256, 256, 14, 14, 32),
                 (512, 512, 4, 4, 512)]:
        assert K.choose_binary_kernel(*args) == "dense"
    rng = np.random.default_rng(4)
    c_in, c_out, n = 5, 4, 8
    codes = rng.choice(512, n, replace=False).astype(np.uint16)
    idx = rng.integers(0, n, (c_out, c_in)).astype(np.int32)
    w_pm1 = codeword_to_kernel(codes[idx]).astype(np.float32)
    layer = BinaryLayer("conv", c_in, c_out, 1, n, wp=K.pack_kernels(w_pm1), codes=codes, indices=idx,
                        scale=np.ones(c_out, np.float32), shift=np.zeros(c_out, np.float32))
    x = rng.standard_normal((2, 6, 6, c_in)).astype(np.float32)
    expected = _reference(x, w_pm1, 1)
    calls = []
    real_lut = L.binary_conv3x3_lut
    monkeypatch.setattr(L, "binary_conv3x3_lut", lambda *a: calls.append(1) or real_lut(*a))
    assert np.array_equal(layer(x), expected) and not calls  # the chooser's "dense"
    monkeypatch.setattr(K, "choose_binary_kernel", lambda *a: "lut")
    assert np.array_equal(layer(x), expected) and calls == [1]  # a chooser saying "lut" is obeyed


def test_kernels_do_not_import_torch():
    code = "import sys, sparks.runtime.kernels; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
