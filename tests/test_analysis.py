"""sparks.analysis / `sparks analyze`: histograms, coverage, entropy, Zipf fit and figures against brute force."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from torch import nn

from sparks.analysis import analyze, channel_histogram, kernel_histogram, plot_analysis, zipf_fit
from sparks.cli import main
from sparks.core.codebook import full_codebook, index_to_kernel
from sparks.core.layers import SubBitConv2d
from sparks.models import create

# Hand-made layer: 4 output × 18 input channels = 72 kernels with known codewords.
KNOWN = {5: 30, 100: 15, 511: 10, 0: 8, 7: 5, 300: 4}


def _known_weight(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.tensor([i for i, c in KNOWN.items() for _ in range(c)])
    idx = idx[torch.randperm(len(idx), generator=g)].reshape(4, 18)
    return index_to_kernel(idx) * (0.1 + torch.rand(4, 18, 3, 3, generator=g))


def _model(method: str = "sign", tau: int = 9, c_in: int = 9, weight: torch.Tensor | None = None) -> nn.Module:
    layer = SubBitConv2d(c_in, 4, tau=tau, method=method)
    with torch.no_grad():
        layer.weight.copy_(weight if weight is not None else torch.randn(4, c_in, 3, 3, generator=torch.Generator()
                                                                          .manual_seed(1)))
    layer.reset_selection()
    return nn.Sequential(layer)


def _brute_entropy(counts) -> float:
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c)


def _brute_channel_counts(weight: torch.Tensor) -> list[int]:
    counts = [0] * 512
    c_out, c_in = weight.shape[:2]
    for o in range(c_out):
        for g in range(c_in // 9):
            for kh in range(3):
                for kw in range(3):
                    counts[sum(2**i for i in range(9) if weight[o, 9 * g + i, kh, kw] >= 0)] += 1
    return counts


def test_kernel_histogram_coverage_entropy_exact():
    weight = _known_weight()
    result = analyze(_model(c_in=18, weight=weight), tau_max=8)
    stats = result["layers"][0]["kernel"]
    expected = [KNOWN.get(i, 0) for i in range(512)]
    assert stats["histogram"] == expected and stats["total"] == 72 and stats["distinct"] == 6
    assert stats["rank_frequency"] == [30, 15, 10, 8, 5, 4]
    assert stats["top_codewords"][:6] == [5, 100, 511, 0, 7, 300]
    assert stats["coverage"]["1"] == 45 / 72 and stats["coverage"]["2"] == 63 / 72
    assert all(stats["coverage"][str(t)] == 1.0 for t in range(3, 9))
    assert result["layers"][0]["channel"]["histogram"] == _brute_channel_counts(weight)
    assert stats["entropy_bits"] == pytest.approx(_brute_entropy(expected), abs=1e-12)
    assert stats["entropy_bits_per_weight"] == pytest.approx(_brute_entropy(expected) / 9, abs=1e-12)


@pytest.mark.parametrize("c_in", [9, 10, 20])
def test_channel_groups_against_brute_force(c_in):
    weight = torch.randn(3, c_in, 3, 3, generator=torch.Generator().manual_seed(c_in))
    counts, dropped = channel_histogram(weight)
    assert counts.tolist() == _brute_channel_counts(weight)
    assert dropped == 3 * (c_in % 9) * 9
    assert kernel_histogram(weight).sum() == 3 * c_in


def test_zipf_mle_recovers_exponent_and_matches_grid_search():
    ranks = np.arange(1, 513)
    p = ranks**-1.3 / (ranks**-1.3).sum()
    fit = zipf_fit(np.round(p * 1e8).astype(np.int64))
    assert fit["exponent"] == pytest.approx(1.3, abs=1e-3) and fit["ks"] < 1e-4 and not fit["capped"]
    counts = np.random.default_rng(0).multinomial(5000, p)
    ranked = np.sort(counts)[::-1]
    grid = np.arange(0, 4, 1e-3)
    loglik = [-s * (ranked * np.log(ranks)).sum() - ranked.sum() * np.log((ranks**-s).sum()) for s in grid]
    assert zipf_fit(counts)["exponent"] == pytest.approx(grid[int(np.argmax(loglik))], abs=2e-3)
    flat = zipf_fit(np.full(512, 7))
    assert flat["exponent"] == 0.0 and flat["ks"] == pytest.approx(0.0, abs=1e-12)
    assert zipf_fit(np.eye(512, dtype=np.int64)[0] * 10)["capped"]


def test_selection_usage_against_brute_force():
    weight = torch.randn(4, 9, 3, 3, generator=torch.Generator().manual_seed(3))
    model = _model(method="topn", tau=2, weight=weight)
    selection = analyze(model)["layers"][0]["selection"]
    book = full_codebook()[torch.tensor(selection["codewords"])]
    assert len(selection["codewords"]) == 4
    nearest = (weight.reshape(-1, 9) @ book.t()).argmax(1)
    assert selection["counts"] == torch.bincount(nearest, minlength=4).tolist()
    signs = [sum(2**i for i in range(9) if k[i] >= 0) for k in weight.reshape(-1, 9)]
    agree = sum(selection["codewords"][j] == s for j, s in zip(nearest.tolist(), signs, strict=True))
    assert selection["sign_agreement"] == pytest.approx(agree / 36)
    assert selection["sign_in_subcodebook"] == pytest.approx(sum(s in selection["codewords"] for s in signs) / 36)


def test_float_layers_binarized_by_sign_and_model_aggregate():
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, method="float")
    result = analyze(model, tau_max=6)
    assert len(result["layers"]) == 16 and all(e["selection"] is None for e in result["layers"])
    pooled = np.zeros(512, dtype=np.int64)
    for m in model.modules():
        if isinstance(m, SubBitConv2d):
            pooled += np.bincount(((m.weight.detach().reshape(-1, 9) >= 0).long() * 2 ** torch.arange(9)).sum(1),
                                  minlength=512)
    agg = result["aggregate"]
    assert agg["kernel"]["histogram"] == pooled.tolist()
    assert set(agg["kernel"]["coverage"]) == {str(t) for t in range(1, 7)}
    # c_in = 8 in the first stage: no channel-wise group fits, all of those weights are dropped
    assert result["layers"][0]["channel"] is None and result["layers"][0]["channel_dropped_weights"] == 8 * 8 * 9
    assert json.loads(json.dumps(result)) == result


def test_analyze_rejects_models_without_binary_layers():
    with pytest.raises(ValueError, match="no sub-bit layers"):
        analyze(nn.Sequential(nn.Conv2d(3, 3, 3)))
    with pytest.raises(ValueError, match="tau_max"):
        analyze(_model(), tau_max=10)


def test_plots_are_valid_pngs(tmp_path):
    result = analyze(_model(method="topn", tau=3, c_in=18))
    paths = plot_analysis(result, tmp_path, top=16)
    assert sorted(p.name for p in paths) == ["coverage.png", "rank_frequency.png", "top_codewords.png"]
    for path in paths:
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 150 and image.shape[1] > 150 and path.stat().st_size > 5000
        assert image.std() > 0.01  # not blank
    assert not list(tmp_path.glob(".*tmp"))
    with pytest.raises(ValueError, match="no analyzed layer"):
        plot_analysis(result, tmp_path, layer="missing")


def test_cli_analyze(tmp_path, capsys):
    model = create("resnet18_cifar", width=0.125, tau=4, method="topn")
    ckpt = tmp_path / "m.pt"
    torch.save({"format_version": 1, "model_name": model.model_name, "model_args": model.model_args,
                "model": model.state_dict()}, ckpt)
    out = tmp_path / "analysis"
    assert main(["analyze", "--checkpoint", str(ckpt), "--out", str(out), "--tau-max", "6",
                 "--layer", "features.0.conv", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)  # --json: stdout is one JSON document
    data = json.loads((out / "analysis.json").read_text())
    assert printed["aggregate"] == data["aggregate"] and sorted(printed["files"]) == sorted(
        str(p) for p in [out / "analysis.json", *out.glob("*.png")])
    assert set(data) == {"model", "tau_max", "layers", "aggregate"} and data["tau_max"] == 6
    assert data["layers"][0]["selection"]["used"] <= 16
    assert {p.name for p in out.glob("*.png")} == {"coverage.png", "rank_frequency.png", "top_codewords.png"}
    assert main(["analyze", "--checkpoint", str(ckpt), "--out", str(out), "--layer", "nope"]) == 2
    assert main(["analyze", "--checkpoint", str(ckpt), "--out", str(out), "--tau-max", "12"]) == 2
    assert main(["analyze", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no binary layer named 'nope'" in err and "--tau-max" in err
