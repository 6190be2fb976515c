"""Selection diagnostics: switches, coverage, reconstruction error and entropy, against hand-computed values."""

import math

import torch

from sparks.core.codebook import full_codebook, kernel_to_index
from sparks.core.diagnostics import selection_diagnostics, summarize
from sparks.core.layers import SubBitConv2d


def test_diagnostics_of_a_fixed_and_a_learned_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(SubBitConv2d(6, 5, tau=3, method="topn"), SubBitConv2d(5, 4, tau=2, method="sparks"))
    first = selection_diagnostics(model)
    topn = first["0"]
    codes = topn["codes"]
    patterns = kernel_to_index(model[0].weight.detach()).flatten().tolist()
    assert topn["switches"] == 0
    assert math.isclose(topn["coverage"], sum(p in codes for p in patterns) / 30, rel_tol=1e-6)
    w = model[0].weight.detach().double()
    book = full_codebook(torch.float64)[codes]
    alpha = w.abs().mean(dim=(1, 2, 3)).view(-1, 1, 1)
    best = ((w.reshape(5, 6, 1, 9) - alpha.unsqueeze(-1) * book.view(1, 1, -1, 9)) ** 2).sum(-1).min(-1).values
    assert math.isclose(topn["error"], math.sqrt(best.sum().item()) / w.norm().item(), rel_tol=1e-9)
    assert topn["entropy"] is None
    learned = first["1"]
    assert 0.0 <= learned["entropy"] <= math.log2(512)
    selector = model[1].quantizer.selector
    with torch.no_grad():  # one switch of row 0 to an unused codeword
        selector.selected[0] = next(c for c in range(512) if c not in selector.selected.tolist())
    second = selection_diagnostics(model, first)
    assert second["1"]["switches"] == 1 and second["0"]["switches"] == 0
    summary = summarize(second)
    assert summary["sel_switches"] == 1.0 and "sel_entropy" in summary
