"""kmedoids: exact swap gains and a local optimum of the reconstruction error, checked against brute force (float64)."""

import itertools

import pytest
import torch

from sparks.core.codebook import full_codebook, kernel_to_index
from sparks.core.kmedoids import _gains_and_value, coverage_value, kmedoids_selection, scaled_kernels, swap_gains
from sparks.core.layers import SubBitConv2d


def kernels(seed, c_out=6, c_in=5):
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp(torch.randn(c_out, 1, 1, 1, generator=g))
    return (scale * torch.randn(c_out, c_in, 3, 3, generator=g)).double()


def error(weight, codes):
    """Σ_k min_v ‖w_k − α_o v‖² by brute force."""
    book = full_codebook(torch.float64)[codes]
    alpha = weight.abs().mean(dim=(1, 2, 3)).view(-1, 1, 1)
    diff = weight.reshape(weight.shape[0], -1, 1, 9) - alpha.unsqueeze(-1) * book.view(1, 1, -1, 9)
    return diff.square().sum(-1).min(-1).values.sum().item()


def test_swap_gains_equal_brute_force_recomputation():
    w = kernels(0)
    scores = scaled_kernels(w) @ full_codebook(torch.float64)[:40].t()
    selected = torch.tensor([3, 17, 8, 30])
    gains = swap_gains(scores, selected)
    base = coverage_value(scores, selected)
    for row in range(4):
        for cand in range(40):
            if cand in selected.tolist():
                assert gains[row, cand] == -torch.inf
                continue
            trial = selected.clone()
            trial[row] = cand
            assert torch.isclose(gains[row, cand], coverage_value(scores, trial) - base, atol=1e-9)


def test_swap_gains_in_a_reused_workspace_are_bit_identical():
    """The search computes in two reused buffers (no per-swap temporaries); stale contents must not leak in, and the
    F(S) it reads off the same pass equals coverage_value bit for bit."""
    scores = scaled_kernels(kernels(3, c_out=16, c_in=12).float()) @ full_codebook(torch.float32).t()
    workspace = (torch.full_like(scores, float("nan")), torch.full_like(scores, 7.0))
    for selected in (torch.tensor([5, 90, 300, 411]), torch.tensor([0, 1]), torch.arange(0, 512, 16)):
        expected = swap_gains(scores, selected)
        assert torch.equal(swap_gains(scores, selected, workspace), expected)
        assert torch.equal(swap_gains(scores, selected, workspace), expected)  # again, over the last call's values
        assert torch.equal(_gains_and_value(scores, selected, workspace)[1], coverage_value(scores, selected))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmedoids_is_a_local_optimum_and_near_the_brute_force_optimum(seed):
    w = kernels(seed)
    pool = torch.randperm(512, generator=torch.Generator().manual_seed(seed))[:12]
    n = 3
    chosen = kmedoids_selection(w, n, candidates=pool)
    assert len(set(chosen.tolist())) == n and set(chosen.tolist()) <= set(pool.tolist())
    found = error(w, chosen)
    for row in range(n):  # no single swap with an unselected candidate lowers the error
        for cand in pool.tolist():
            if cand not in chosen.tolist():
                trial = chosen.clone()
                trial[row] = cand
                assert error(w, trial) >= found - 1e-9
    best = min(error(w, torch.tensor(c)) for c in itertools.combinations(pool.tolist(), n))
    assert found <= best * 1.02, "local search lands within 2 % of the global optimum on this small case"


def test_kmedoids_never_worse_than_its_top_n_start_and_method_registered():
    torch.manual_seed(0)
    layer = SubBitConv2d(16, 16, tau=3, method="kmedoids")
    topn = SubBitConv2d(16, 16, tau=3, method="topn")
    topn.weight.data.copy_(layer.weight.data)
    topn.reset_selection()
    w = layer.weight.detach().double()
    mine = kernel_to_index(layer.subcodebook()).flatten()
    base = kernel_to_index(topn.subcodebook()).flatten()
    assert error(w, mine) < error(w, base)


def test_weighted_objective_and_single_codeword():
    w = kernels(3)
    h = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)).double()
    chosen = kmedoids_selection(w, 1, kernel_weights=h)
    scores = scaled_kernels(w, h) @ full_codebook(torch.float64).t()
    assert int(chosen) == int(scores.sum(0).argmax())
