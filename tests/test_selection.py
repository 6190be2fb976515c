import itertools
import math

import pytest
import torch

import sparks.core.selection as selection
from sparks.core.codebook import NUM_CODEWORDS, full_codebook
from sparks.core.selection import GumbelSinkhornSelector, TemperatureSchedule, hungarian, log_sinkhorn, pste


def test_sinkhorn_is_doubly_stochastic():
    g = torch.Generator().manual_seed(0)
    for size in (4, 32, 512):
        p = log_sinkhorn(torch.randn(size, size, generator=g), n_iters=20)
        assert torch.allclose(p.sum(0), torch.ones(size), atol=1e-3)
        assert torch.allclose(p.sum(1), torch.ones(size), atol=1e-3)
        assert (p >= 0).all()


def test_sinkhorn_with_row_masses():
    g = torch.Generator().manual_seed(1)
    n, cols = 8, 64
    mass = torch.ones(n + 1)
    mass[-1] = cols - n
    p = log_sinkhorn(torch.randn(n + 1, cols, generator=g), n_iters=50, row_log_mass=mass.log())
    assert torch.allclose(p.sum(1), mass, atol=1e-3)
    assert torch.allclose(p.sum(0), torch.ones(cols), atol=1e-3)


def test_sinkhorn_tends_to_hungarian_permutation_as_temperature_falls():
    g = torch.Generator().manual_seed(2)
    scores = torch.randn(12, 12, generator=g, dtype=torch.float64)
    best = hungarian(scores)
    hard = torch.zeros_like(scores)
    hard[torch.arange(12), best] = 1
    errors = [(log_sinkhorn(scores / t, n_iters=4000) - hard).abs().max().item() for t in (1.0, 0.1, 0.003)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 1e-3


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 3), (5, 5), (6, 6), (2, 6), (4, 6)])
def test_hungarian_matches_brute_force(rows, cols):
    g = torch.Generator().manual_seed(rows * 10 + cols)
    for _ in range(5):
        scores = torch.randn(rows, cols, generator=g, dtype=torch.float64)
        best = max(sum(scores[r, c].item() for r, c in enumerate(perm))
                   for perm in itertools.permutations(range(cols), rows))
        got = hungarian(scores)
        assert len(set(got.tolist())) == rows
        assert math.isclose(scores[torch.arange(rows), got].sum().item(), best, rel_tol=1e-12)


def test_pste_forward_hard_backward_soft():
    soft = torch.rand(4, 4, requires_grad=True)
    hard = torch.eye(4)
    out = pste(soft, hard)
    assert torch.equal(out, hard)
    weight = torch.randn(4, 4)
    (out * weight).sum().backward()
    assert torch.equal(soft.grad, weight)


def test_temperature_schedule():
    sched = TemperatureSchedule(1.0, 0.01, steps=100)
    assert sched(0) == 1.0 and math.isclose(sched(100), 0.01) and math.isclose(sched(1000), 0.01)
    assert math.isclose(sched(50), 0.1)
    assert TemperatureSchedule(1.0, 0.5, 10, kind="linear")(5) == 0.75
    with pytest.raises(ValueError, match="kind"):
        TemperatureSchedule(kind="cosine")
    with pytest.raises(ValueError, match="> 0"):
        TemperatureSchedule(start=0.0)


def test_selector_training_forward_is_exact_and_distinct_and_learns():
    torch.manual_seed(0)
    sel = GumbelSinkhornSelector(16, noise=0.5)
    sel.initialize(torch.randperm(NUM_CODEWORDS))
    v = sel()
    assert torch.equal(v, full_codebook()[sel.selected])
    assert len(set(sel.selected.tolist())) == 16
    (v * torch.randn_like(v)).sum().backward()
    assert sel.scores.grad is not None and sel.scores.grad.abs().sum() > 0


def test_selector_eval_is_cached_and_noise_free(monkeypatch):
    sel = GumbelSinkhornSelector(8, noise=1.0)
    sel.initialize(torch.arange(100, 108))
    sel.train()
    sel()
    chosen = sel.selected.clone()
    sel.eval()

    def fail(*_):
        raise AssertionError("eval must not solve an assignment")

    monkeypatch.setattr(selection, "hungarian", fail)
    monkeypatch.setattr(selection, "log_sinkhorn", fail)
    assert torch.equal(sel(), full_codebook()[chosen])
    assert torch.equal(sel(), sel())


def test_hysteresis_keeps_current_codeword_until_beaten_by_margin():
    sel = GumbelSinkhornSelector(1, switch_margin=0.5, init_margin=1.0)
    sel.initialize(torch.tensor([7]))
    with torch.no_grad():
        sel.scores[0, 9] = 1.4  # better, but by less than the margin
    sel()
    assert sel.selected.tolist() == [7]
    with torch.no_grad():
        sel.scores[0, 9] = 1.6
    sel()
    assert sel.selected.tolist() == [9]
