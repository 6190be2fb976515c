"""Per-step profile of the packed engine (PackedModel.profile, sparks.bench.profile, `sparks bench --profile`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sparks.bench.profile import format_profile, summarize
from sparks.core.layers import SubBitConv2d
from sparks.deploy.format import read_sparks
from sparks.runtime import PackedModel
from sparks.runtime.kernels import inner_loop_peak


def _torch_binary_macs(model, x: np.ndarray) -> list[int]:
    """Binary MACs per image of each sub-bit conv, from the shapes torch's own forward sees (hooks)."""
    macs: list[int] = []

    def hook(module, inputs, output):
        macs.append(9 * module.in_channels * module.out_channels * output.shape[2] * output.shape[3])

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, SubBitConv2d)]
    with torch.no_grad():
        model(torch.from_numpy(x))
    for h in handles:
        h.remove()
    return macs


def test_profile_has_one_row_per_step_and_the_binary_macs_of_torch_shapes(tiny_resnet_sparks):
    model, path = tiny_resnet_sparks
    packed = PackedModel(*read_sparks(path), threads=1)
    x = np.random.default_rng(0).standard_normal((10, 1, 28, 28)).astype(np.float32)  # 2 chunks: 8 + 2 images
    rows = packed.profile(x, repeats=2)
    assert len(rows) == len(packed._plan) and [r["step"] for r in rows][-1] == packed.output
    assert all(r["ms_per_image"] > 0 for r in rows)
    assert [r["binary_macs"] for r in rows if r["op"].startswith("subbit_conv2d")] == _torch_binary_macs(model, x[:1])
    assert all(r["binary_macs"] == 0 for r in rows if not r["op"].startswith("subbit_conv2d"))
    assert any(r["op"] == "subbit_conv2d+batchnorm+add+rprelu" for r in rows)  # the fused block is one step
    np.testing.assert_array_equal(packed(x), PackedModel(*read_sparks(path), threads=1)(x))  # profiling changes nothing
    assert sum(layer.binary_macs for layer in packed.binary_layers) == sum(_torch_binary_macs(model, x[:1]))
    with pytest.raises(ValueError, match="repeats"):
        packed.profile(x, repeats=0)
    with pytest.raises(ValueError, match="has not run yet"):
        _ = PackedModel(*read_sparks(path)).binary_layers[0].binary_macs


def test_summary_and_table_from_a_hand_made_result():
    steps = [
        {"step": "a", "op": "conv2d+batchnorm", "group": "real conv", "binary_macs": 0,
         "ms_per_image": {1: 2.0, 8: 1.0}},
        {"step": "b", "op": "subbit_conv2d+batchnorm", "group": "binary", "binary_macs": 10**9,
         "ms_per_image": {1: 4.0, 8: 2.0}},
        {"step": "c", "op": "linear", "group": "real conv", "binary_macs": 0, "ms_per_image": {1: 1.0, 8: 0.5}},
        {"step": "d", "op": "flatten", "group": "other", "binary_macs": 0, "ms_per_image": {1: 1.0, 8: 0.5}},
    ]
    result = {"batch_sizes": [1, 8], "inner_loop_peak_macs_per_s": 5e11, "steps": steps}
    s = summarize(result)
    assert s[1]["total_ms"] == 8.0 and s[8]["total_ms"] == 4.0
    assert (s[1]["binary_ms"], s[1]["real conv_ms"], s[1]["other_ms"]) == (4.0, 3.0, 1.0)
    assert math.isclose(s[1]["binary_macs_per_s"], 2.5e11) and math.isclose(s[8]["binary_of_peak"], 1.0)
    table = format_profile(result)
    assert "| b | subbit_conv2d+batchnorm | 4.0000 | 2.0000 | 0.50 | 0.25 | 0.50 |" in table
    assert "per-image time b8/b1: 0.50" in table
    # floor at batch 8: 1e9 MACs at 5e11/s = 2 ms, plus the real (1.0 + 0.5) and other (0.5) steps as measured
    assert math.isclose(s[8]["floor_ms"], 4.0) and "as measured: 4.000 ms/img = 0.50 of b1" in table


def test_inner_loop_peak_is_a_rate():
    peak = inner_loop_peak(seconds=0.05)
    assert math.isfinite(peak) and peak > 1e8  # binary MACs per second; any CPU does far more than 1e8


def test_cli_bench_profile(tiny_resnet_sparks, capsys):
    from sparks.cli import main

    _, path = tiny_resnet_sparks
    args = ["bench", "--model", str(path), "--profile", "--repeats", "1", "--batch-sizes"]
    assert main([*args, "1", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["batch_sizes"] == [1, 3] and result["inner_loop_peak_macs_per_s"] > 0
    assert {"1", "3"} == set(result["steps"][0]["ms_per_image"])
    assert main([*args, "1", "2"]) == 0
    assert "per-image time b2/b1" in capsys.readouterr().out
