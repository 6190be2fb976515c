"""The learned selection must end at or below the reconstruction-optimal kmedoids selection, and below top-n, on the
latent kernels of a real CIFAR-10 step-1 network (tests/data/cifar10_step1_kernels.npz: 3 layers and a 32-channel
slice of a fourth, float16), with the selector driven by the reconstruction loss alone (sparks.core.probe)."""

from pathlib import Path

import pytest
import torch

from sparks.core.layers import SubBitConv2d
from sparks.core.probe import learn_selection, load_kernels, probe_layer, relative_error

KERNELS = load_kernels(Path(__file__).parent / "data" / "cifar10_step1_kernels.npz")


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_learned_selection_at_or_below_kmedoids_and_below_top_n_on_real_kernels(name):
    for tau in (3, 4):
        result = probe_layer(KERNELS[name], tau, seed=0, steps=60, reselect_every=30)
        assert result.learned <= result.kmedoids + 1e-7, (tau, result)
        assert result.learned < result.topn, (tau, result)


@pytest.mark.parametrize("name", ["features.1.conv", "features.14.conv_out0-31"])
def test_from_a_top_n_start_the_learned_path_also_ends_at_or_below_kmedoids(name):
    for tau in (3, 4):
        result = probe_layer(KERNELS[name], tau, seed=0, steps=60, reselect_every=30, init="frequency")
        assert result.learned <= result.kmedoids + 1e-7, (tau, result)
        assert result.switches > 0


def test_plain_pste_read_off_does_worse_than_exact_acceptance():
    """The paper's plain read-off (no exact acceptance, no re-selection) ends above the exact-acceptance selector."""
    weight = KERNELS["features.6.conv"]
    plain, _ = learn_selection(weight, 4, steps=60, exact=False, noise=0.0, init="frequency")
    exact, _ = learn_selection(weight, 4, steps=60, reselect_every=30, init="frequency")
    assert relative_error(weight, exact) < relative_error(weight, plain)


def test_eval_selection_follows_the_final_scores():
    """An optimiser step after the last training forward must show in the eval selection (not one step behind)."""
    torch.manual_seed(0)
    layer = SubBitConv2d(8, 8, tau=2, method="sparks", exact=False)
    layer.train()
    layer(torch.randn(1, 8, 4, 4)).sum().backward()
    selector = layer.quantizer.selector
    before = selector.selected.clone()
    unused = next(c for c in range(512) if c not in before.tolist())
    with torch.no_grad():
        selector.scores[0, unused] += 10.0  # what an optimiser step could do
    layer.eval()
    assert int(layer.subcodebook().shape[0]) == 4
    assert int(selector.selected[0]) == unused


def test_gradient_weighting_records_a_running_mean_of_squared_kernel_gradients():
    torch.manual_seed(0)
    layer = SubBitConv2d(4, 3, tau=3, method="sparks", weighting="grad").train()
    grads = []
    for step in range(3):
        x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(step))
        kernels = layer.quantizer(layer.weight)
        kernels.register_hook(lambda g: grads.append(g.clone()))
        torch.nn.functional.conv2d(x, kernels, padding=1).square().sum().backward()
    expected = grads[0].square().sum(dim=(2, 3))
    for g in grads[1:]:
        expected = 0.99 * expected + 0.01 * g.square().sum(dim=(2, 3))
    assert torch.allclose(layer.quantizer.grad_energy, expected, rtol=1e-5)
