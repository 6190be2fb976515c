"""Mixed precision keeps the binary forward exact: under bf16 autocast a sub-bit layer's ±1 convolution sums are the
exact integers and α is applied in fp32, bit for bit the fp32 layer (and so the exported model)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparks.core.activation import binary_sign
from sparks.core.layers import SubBitConv2d


def exact_reference(layer: SubBitConv2d, x: torch.Tensor) -> torch.Tensor:
    """α ⊙ (integer ±1 sums computed in float64), rounded once to fp32: what an exact binary forward returns."""
    with torch.no_grad():
        kernels = layer.subcodebook()[layer.kernel_indices()].double()
        sums = F.conv2d(binary_sign(x).double(), kernels, padding=1)
        assert torch.equal(sums, sums.round())
        return sums.float() * layer.alpha().view(1, -1, 1, 1)


@pytest.mark.parametrize("method", ["sign", "sparks"])
def test_bf16_autocast_binary_sums_are_exact(method):
    torch.manual_seed(0)
    layer = SubBitConv2d(64, 8, tau=5, method=method)  # 576 terms per output: sums far beyond bf16's 256
    with torch.no_grad():
        layer.weight.add_(0.05)  # mostly +1 kernels and inputs: large sums, many not representable in bf16
    layer.reset_selection()
    x = torch.randn(2, 64, 6, 6, generator=torch.Generator().manual_seed(1)) + 1.5
    reference = exact_reference(layer, x)
    for mode in ("eval", "train"):
        getattr(layer, mode)()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        assert out.dtype == torch.float32
        assert torch.equal(out, reference), mode
    # The fixture does exercise the problem: a plain bf16 convolution of the same ±1 operands rounds the sums.
    kernels = layer.subcodebook()[layer.kernel_indices()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = F.conv2d(binary_sign(x), kernels, padding=1)
    assert naive.dtype == torch.bfloat16
    assert (naive.float() * layer.alpha().view(1, -1, 1, 1) != reference).any()


def test_bf16_autocast_training_step_reaches_the_selection_scores():
    torch.manual_seed(0)
    layer = SubBitConv2d(16, 8, tau=4, method="sparks").train()
    x = torch.randn(2, 16, 5, 5, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = layer(x).square().mean()
    loss.backward()
    scores = layer.quantizer.selector.scores
    assert scores.grad is not None and scores.grad.dtype == torch.float32 and scores.grad.abs().sum() > 0


def test_device_options_on_the_cpu(tmp_path, fashion_mnist_root, capsys):
    """bf16 autocast and channels-last run on the CPU; fp16 (CUDA-only loss scaling) is refused in one line."""
    from sparks.cli import main
    from sparks.train.checkpoint import load_checkpoint

    base = ["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(fashion_mnist_root), "--subset", "64",
            "--batch-size", "32", "--epochs", "1", "--workers", "0", "--no-eval-test", "--threads", "1",
            "--no-progress", "--device", "cpu"]
    out = tmp_path / "bf16"
    assert main([*base, "--amp", "bf16", "--channels-last", "--out", str(out)]) == 0
    state = load_checkpoint(out / "last.pt")
    assert state["config"]["amp"] == "bf16" and state["config"]["channels_last"] is True
    assert all(v.dtype != torch.bfloat16 for v in state["model"].values())  # weights stay fp32
    capsys.readouterr()
    out = tmp_path / "fp16"
    assert main([*base, "--amp", "fp16", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--amp fp16 needs a CUDA device" in err[0]
    assert not out.exists()


def test_compile_option_wraps_the_training_model(tmp_path, fashion_mnist_root, monkeypatch, capsys):
    """--compile hands the training model to torch.compile (recorded here: a real CPU compile takes minutes, see
    docs/benchmarks.md) and is refused in one line where it cannot work."""
    import sparks.train.device_options as device_options
    from sparks.cli import main

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda net, **kw: compiled.append(net) or net)
    base = ["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(fashion_mnist_root), "--subset", "64",
            "--batch-size", "32", "--epochs", "1", "--workers", "0", "--no-eval-test", "--threads", "1",
            "--no-progress", "--device", "cpu", "--compile"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "VGGSmall"
    monkeypatch.setattr(device_options.shutil, "which", lambda name: None)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compile on the CPU needs a C++ compiler" in err[0]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_compiled_bf16_forward_matches_eager():
    from sparks.models import create

    torch.manual_seed(0)
    model = create("vgg_small", width=0.0625, tau=5, method="sparks").cuda().eval()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager = model(x).float()
        compiled = torch.compile(model)(x).float()
    torch.testing.assert_close(compiled, eager, rtol=2e-2, atol=2e-2)
