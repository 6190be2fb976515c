"""The SNN baseline follows yikaiw/SNN's step-2 ``Binarize``: update schedule, per-layer start, refill, exact ±1."""

import torch

from sparks.core.codebook import full_codebook, kernel_to_index
from sparks.core.layers import SubBitConv2d, selection_parameters


def snn_layer(seed=0, tau=4, **kwargs):
    torch.manual_seed(seed)
    return SubBitConv2d(8, 6, tau=tau, method="snn", **kwargs).train()


def step(layer, seed):
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(seed))
    layer.quantizer.proxies.grad = None
    layer(x).square().sum().backward()
    return layer.quantizer.proxies.grad


def test_proxies_get_gradient_only_every_25_steps_then_zero_in_between():
    layer = snn_layer()
    grads = [step(layer, s) for s in range(1, 51)]
    assert all(g is None for g in grads[:24]), "no gradient before the first update step (SNN: grad is None)"
    assert grads[24].abs().sum() > 0 and grads[49].abs().sum() > 0
    assert all(torch.count_nonzero(g) == 0 for g in grads[25:49]), "all-zero gradient between update steps"


def test_update_gradient_is_the_summed_kernel_gradient_of_each_codeword():
    layer = snn_layer(refine_every=1)
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(1))
    before = layer.quantizer.memory.clone()
    weight = layer.weight.detach()
    idx = ((weight.reshape(-1, 9) @ before.t()).argmax(1))
    out = layer(x)
    kernels = (before[idx].reshape(weight.shape)).requires_grad_(True)
    alpha = weight.abs().mean(dim=(1, 2, 3))
    ref = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0), kernels, padding=1) * alpha.view(1, -1, 1, 1)
    assert torch.allclose(out, ref, atol=1e-5)
    out.square().sum().backward()
    ref.square().sum().backward()
    expected = torch.zeros_like(before).index_add_(0, idx, kernels.grad.reshape(-1, 9))
    assert torch.allclose(layer.quantizer.proxies.grad, expected, rtol=1e-4, atol=1e-5)


def test_forward_is_exact_pm1_and_layers_start_differently():
    a, b = snn_layer(), snn_layer()
    torch.manual_seed(0)
    first = SubBitConv2d(8, 6, tau=4, method="snn")
    second = SubBitConv2d(8, 6, tau=4, method="snn")
    assert not torch.equal(first.quantizer.memory, second.quantizer.memory), "each layer draws its own start"
    assert torch.equal(a.quantizer.memory, b.quantizer.memory), "reproducible from the global seed"
    with torch.no_grad():
        a.quantizer.proxies.mul_(0.37)  # non-±1 proxies: the forward value must still be exactly ±1
    v = a.quantizer.codewords()
    assert set(v.detach().unique().tolist()) <= {-1.0, 1.0}


def test_refill_drops_duplicates_keeps_order_appends_unused_and_clamps():
    layer = snn_layer(tau=2, refine_every=1)
    q = layer.quantizer
    book = full_codebook()
    with torch.no_grad():
        q.proxies.copy_(torch.stack([book[5] * 4, book[9], book[5], book[9] * 0.5]))
    q.refine()
    rows = kernel_to_index(q.proxies.reshape(4, 3, 3)).tolist()
    assert rows[:2] == [5, 9] and len(set(rows)) == 4
    assert q.proxies.abs().max() <= 3.0
    assert torch.equal(q.proxies[0], book[5] * 3)


def test_snn_proxies_train_at_the_model_learning_rate():
    torch.manual_seed(0)
    model = torch.nn.Sequential(SubBitConv2d(4, 4, tau=3, method="snn"), SubBitConv2d(4, 4, tau=3, method="sparks"))
    params = selection_parameters(model)
    assert len(params) == 1 and params[0] is model[1].quantizer.selector.scores


def _train(layer, steps, start=0):
    """``steps`` training steps (sign-SGD on every parameter) from step ``start``; per step, whether the proxies got
    a gradient and the sub-codebook after it. Before update steps 10 and 20 two rows are made equal, so the refill
    draws random codewords (seeded by the step count)."""
    record = []
    for s in range(start + 1, start + steps + 1):
        if s in (10, 20):
            with torch.no_grad():
                layer.quantizer.proxies[1] = layer.quantizer.proxies[0]
        grad = step(layer, s)
        with torch.no_grad():
            for p in layer.parameters():
                if p.grad is not None:
                    p.sub_(0.05 * p.grad.sign())
                    p.grad = None
        record.append((grad is not None and bool(grad.abs().sum() > 0), layer.quantizer.memory.clone()))
    return record


def test_resume_from_a_state_dict_gives_the_same_schedule_and_draws():
    straight = snn_layer(tau=3, refine_every=5)
    expected = _train(straight, 24)
    assert [updated for updated, _ in expected] == [s % 5 == 0 for s in range(1, 25)]
    first = snn_layer(tau=3, refine_every=5)
    got = _train(first, 12)
    resumed = snn_layer(seed=7, tau=3, refine_every=5)  # another start and layer seed: all must come from the load
    resumed.load_state_dict(first.state_dict())
    got += _train(resumed, 12, start=12)
    assert [u for u, _ in got] == [u for u, _ in expected]
    for s, ((_, a), (_, b)) in enumerate(zip(got, expected, strict=True), start=1):
        assert torch.equal(a, b), f"sub-codebook differs after step {s}"
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert int(resumed.quantizer.steps) == resumed.quantizer.step_count() == 24
