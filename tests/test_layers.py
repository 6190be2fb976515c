import pytest
import torch
import torch.nn.functional as F

from sparks.core.layers import SubBitConv2d
from sparks.core.methods import METHODS, check_tau

BINARY_METHODS = ["sparks", "snn", "topn", "kmedoids", "random"]


def make_layer(method, tau, seed=0, c_in=12, c_out=10, **kwargs):
    torch.manual_seed(seed)
    return SubBitConv2d(c_in, c_out, tau=tau, method=method, **kwargs)


def test_tau9_sparks_identity_selection_equals_sign():
    sign = make_layer("sign", 9)
    sparks = make_layer("sparks", 9, init="frequency")
    sparks.weight.data.copy_(sign.weight.data)
    sparks.reset_selection()
    x = torch.randn(3, 12, 7, 7, generator=torch.Generator().manual_seed(1))
    for mode in ("train", "eval"):
        getattr(sign, mode)()
        getattr(sparks, mode)()
        assert torch.equal(sparks(x), sign(x))
    assert torch.equal(sparks.binary_weight(), sign.binary_weight())


@pytest.mark.parametrize("method", BINARY_METHODS)
@pytest.mark.parametrize("tau", range(1, 9))
def test_forward_weight_uses_at_most_2_tau_distinct_codewords(method, tau):
    layer = make_layer(method, tau, seed=tau, c_in=16, c_out=24)
    x = torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(tau))
    layer.train()
    layer(x).sum().backward()  # a training step path (PSTE / SNN refinement bookkeeping)
    book = layer.subcodebook()
    assert book.shape == (2**tau, 3, 3)
    assert set(book.unique().tolist()) <= {-1.0, 1.0}
    assert len({tuple(r.flatten().tolist()) for r in book}) == 2**tau, "sub-codebook rows must be distinct"
    idx = layer.kernel_indices()
    assert idx.shape == (24, 16) and idx.dtype == torch.int64
    weight = layer.binary_weight()
    alpha = layer.weight.detach().abs().mean(dim=(1, 2, 3))
    assert torch.equal(weight, alpha.view(-1, 1, 1, 1) * book[idx])
    patterns = {tuple(torch.sign(k).flatten().tolist()) for k in weight.reshape(-1, 3, 3)}
    assert len(patterns) <= 2**tau
    # the forward pass is exactly conv(sign(x), binary weight), in training and in eval
    expected = F.conv2d(torch.where(x >= 0, 1.0, -1.0), weight, padding=1)
    for mode in ("train", "eval"):
        getattr(layer, mode)()
        with torch.no_grad():
            assert torch.allclose(layer(x), expected, atol=1e-5)


def test_kernel_is_nearest_codeword_of_the_subcodebook():
    layer = make_layer("topn", 3)
    book = layer.subcodebook().reshape(-1, 9)
    flat = layer.weight.detach().reshape(-1, 9)
    brute = ((flat[:, None, :] - book[None]) ** 2).sum(-1).argmin(1)
    assert torch.equal(layer.kernel_indices().flatten(), brute)


@pytest.mark.parametrize("method, kwargs", [("sparks", {}), ("snn", {"refine_every": 1})])
def test_learned_methods_send_gradients_to_selection_and_latent_weights(method, kwargs):
    layer = make_layer(method, 4, **kwargs)
    x = torch.randn(2, 12, 6, 6, generator=torch.Generator().manual_seed(3))
    layer(x).square().sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    learned = [p for n, p in layer.quantizer.named_parameters()]
    assert learned and all(p.grad is not None and p.grad.abs().sum() > 0 for p in learned)


def test_fixed_methods_are_deterministic():
    a, b = make_layer("random", 5, seed=0), make_layer("random", 5, seed=1)
    assert torch.equal(a.subcodebook(), b.subcodebook())  # same method seed, different weights
    top = make_layer("topn", 2)
    counts = torch.bincount((top.weight.detach().reshape(-1, 9) >= 0).long() @ (2 ** torch.arange(9)), minlength=512)
    assert set(top.quantizer.selected.tolist()) == set(torch.sort(-counts, stable=True).indices[:4].tolist())


def test_float_method_is_step_one():
    layer = make_layer("float", 5)
    x = torch.randn(1, 12, 4, 4)
    assert torch.allclose(layer(x), F.conv2d(torch.where(x >= 0, 1.0, -1.0), layer.weight, padding=1))
    assert layer.bits_per_weight == 32.0
    with pytest.raises(ValueError, match="not binary"):
        layer.binary_weight()


def test_bits_per_weight():
    assert make_layer("sparks", 5).bits_per_weight == pytest.approx(5 / 9)
    assert make_layer("sign", 5).tau == 9


@pytest.mark.parametrize("tau", [0, 10, 5.0, "5", True, None])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match=r"tau must be an int in 1\.\.9"):
        check_tau(tau)
    with pytest.raises(ValueError, match="tau"):
        SubBitConv2d(4, 4, tau=tau, method="sparks")


def test_unknown_method_lists_known_ones():
    with pytest.raises(ValueError, match="unknown method 'xnor'.*sparks"):
        SubBitConv2d(4, 4, tau=5, method="xnor")
    assert {"float", "sign", "sparks", "snn", "topn", "kmedoids", "random"} <= set(METHODS)


def test_eval_forward_caches_weights_and_notices_changes():
    layer = make_layer("topn", 4).eval()
    x = torch.randn(1, 12, 5, 5, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        first = layer(x)
        assert torch.equal(layer(x), first)
        layer.weight.mul_(-1)  # an in-place change must invalidate the cache
        flipped = layer(x)
    expected = F.conv2d(torch.where(x >= 0, 1.0, -1.0), layer.binary_weight(), padding=1)
    assert torch.allclose(flipped, expected, atol=1e-5)
    assert not torch.allclose(flipped, first)
    layer.load_state_dict(make_layer("topn", 4, seed=9).state_dict())
    with torch.no_grad():
        expected = F.conv2d(torch.where(x >= 0, 1.0, -1.0), layer.binary_weight(), padding=1)
        assert torch.allclose(layer(x), expected, atol=1e-5)


def test_gather_codewords_backward_sums_per_codeword():
    from sparks.core.methods import gather_codewords

    g = torch.Generator().manual_seed(4)
    codewords = torch.randn(8, 9, dtype=torch.float64, generator=g, requires_grad=True)
    idx = torch.randint(0, 8, (200,), generator=g)
    upstream = torch.randn(200, 9, dtype=torch.float64, generator=g)
    out = gather_codewords(codewords, idx)
    assert torch.equal(out, codewords.detach()[idx])
    (out * upstream).sum().backward()
    expected = torch.zeros(8, 9, dtype=torch.float64)
    for row, code in enumerate(idx.tolist()):
        expected[code] += upstream[row]
    assert torch.allclose(codewords.grad, expected)
