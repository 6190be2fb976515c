"""The train-step speed-ups give bit-identical results: the vectorised first-argmax of the nearest-codeword search
and the transposed ``index_add_`` of the codeword gather's backward, against the code they replaced, on the layer
shapes of the CIFAR ResNet-18 (64-128-256-512) with fixed seeds."""

from __future__ import annotations

import pytest
import torch

import sparks.core.methods as methods
from sparks.core.codebook import CODE_LENGTH, first_argmax_rows, full_codebook, nearest_codeword
from sparks.core.layers import subbit_layers
from sparks.core.methods import SparksSelection, gather_codewords
from sparks.models import create

_CHUNK = 32768


def reference_nearest(weight: torch.Tensor, codewords: torch.Tensor) -> torch.Tensor:
    """The replaced nearest-codeword search: chunked product, then ``argmax``."""
    flat = weight.detach().reshape(-1, CODE_LENGTH)
    book_t = codewords.detach().reshape(-1, CODE_LENGTH).to(flat.dtype).t().contiguous()
    out = torch.empty(flat.shape[0], dtype=torch.int64)
    for start in range(0, flat.shape[0], _CHUNK):
        out[start:start + _CHUNK] = (flat[start:start + _CHUNK] @ book_t).argmax(dim=1)
    return out.reshape(weight.shape[:-2])


def reference_gather_backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
    """The replaced backward of the codeword gather: ``index_add_`` along the kernels of the (kernels × 9) layout."""
    (idx,) = ctx.saved_tensors
    return grad.new_zeros(ctx.rows, grad.shape[1]).index_add_(0, idx, grad), None


@pytest.fixture(scope="module")
def resnet_weights() -> list[torch.Tensor]:
    """The 16 sub-bit layers' latent weights of a CIFAR ResNet-18 at full width (seed 0)."""
    torch.manual_seed(0)
    model = create("resnet18_cifar", method="sign")
    return [layer.weight.detach().clone() for _, layer in subbit_layers(model)]


def _subcodebook(n: int, seed: int) -> torch.Tensor:
    return full_codebook()[torch.randperm(512, generator=torch.Generator().manual_seed(seed))[:n]]


def _check_first_argmax(scores: torch.Tensor) -> None:
    expected = scores.argmax(dim=1)
    assert torch.equal(first_argmax_rows(scores.clone()), expected)  # it overwrites its input
    assert torch.equal(first_argmax_rows(scores.clone(), torch.empty(len(scores) + 3, scores.shape[1] + 2)), expected)


def test_first_argmax_rows_matches_argmax_with_ties_nan_inf_and_signed_zeros():
    gen = torch.Generator().manual_seed(1)
    for n in (1, 2, 5, 32, 512):
        scores = torch.randint(-3, 4, (4000, n), generator=gen).float()  # many ties
        _check_first_argmax(scores)
        _check_first_argmax(scores.double())
    inf, nan = torch.inf, torch.nan
    _check_first_argmax(torch.tensor([[0.0, -0.0, 0.0], [-0.0, 0.0, -0.0], [-inf, -inf, -inf], [1.0, inf, inf],
                                      [-inf, -1.0, -1.0], [inf, nan, inf], [nan, inf, nan], [1.0, 2.0, nan]]))
    with_nan = torch.randn(100, 8, generator=gen)
    with_nan[3, 5] = with_nan[3, 6] = torch.nan
    _check_first_argmax(with_nan)


def test_nearest_codeword_bit_identical_on_resnet18_layers(resnet_weights):
    for i, weight in enumerate(resnet_weights):
        for tau in (1, 3, 5, 8):
            codewords = _subcodebook(2**tau, seed=10 * i + tau)
            assert torch.equal(nearest_codeword(weight, codewords), reference_nearest(weight, codewords))
    tied = torch.randint(-2, 3, (512, 512, 3, 3), generator=torch.Generator().manual_seed(2)).float()
    assert torch.equal(nearest_codeword(tied, _subcodebook(32, 3)), reference_nearest(tied, _subcodebook(32, 3)))


def test_gather_backward_bit_identical_on_resnet18_layers(resnet_weights):
    gen = torch.Generator().manual_seed(4)
    for i, weight in enumerate(resnet_weights):
        idx = reference_nearest(weight, _subcodebook(32, i)).flatten()
        grad = torch.randn(idx.numel(), CODE_LENGTH, generator=gen) * 1e-3
        codewords = _subcodebook(32, i).requires_grad_()
        gather_codewords(codewords, idx).backward(grad)
        expected = torch.zeros(32, CODE_LENGTH).index_add_(0, idx, grad)
        assert torch.equal(codewords.grad, expected)
        assert codewords.grad.is_contiguous()


@pytest.mark.parametrize("layer", [0, 8, 15])
def test_sparks_layer_forward_and_gradients_bit_identical(resnet_weights, layer, monkeypatch):
    """A Sparks training forward + backward on a real layer shape: output, weight and score gradients unchanged."""
    weight0 = resnet_weights[layer]
    upstream = torch.randn(weight0.shape, generator=torch.Generator().manual_seed(5)) * 1e-2
    results = []
    for replaced in (False, True):
        if replaced:
            monkeypatch.setattr(methods, "nearest_codeword", reference_nearest)
            monkeypatch.setattr(methods._GatherCodewords, "backward", staticmethod(reference_gather_backward))
        torch.manual_seed(6)
        quantizer = SparksSelection(tau=5, init="frequency", exact=False).train()
        quantizer.initialize(weight0)
        weight = weight0.clone().requires_grad_()
        out = quantizer(weight)
        out.backward(upstream)
        results.append((out.detach(), weight.grad, quantizer.selector.scores.grad))
    for new, old in zip(*results, strict=True):
        assert torch.equal(new, old)
