"""Export → load round trips: the torch rebuild is bit-identical, the packed engine matches torch within float
tolerance with identical argmax on real Fashion-MNIST test images, file size tracks the model's bit count."""

from __future__ import annotations

import operator

import numba
import numpy as np
import pytest
import torch
from torch import nn

import sparks
from sparks.core.convert import convert
from sparks.core.layers import SubBitConv2d
from sparks.deploy.export import export, export_tables
from sparks.deploy.format import SparksFormatError, read_sparks
from sparks.deploy.load import load
from sparks.models import create
from sparks.runtime import PackedModel

METHODS = ("sparks", "sign", "snn", "topn", "kmedoids", "random", "float")


@pytest.fixture(autouse=True)
def one_thread():
    # the CI machine has 2 shared cores: OpenMP/numba spinning with 2 threads under load is many times slower
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(torch_threads)
    numba.set_num_threads(numba_threads)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and shifts, as after training; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.5)
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.dim() == 4:  # LearnableBias
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model.eval()


def tiny(name: str = "resnet18_cifar", method: str = "sparks", tau: int = 5, in_channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return randomize(create(name, width=0.125, in_channels=in_channels, num_classes=10, tau=tau, method=method))


@pytest.mark.parametrize("method", METHODS)
def test_torch_round_trip_is_exact_for_every_method(tmp_path, method):
    model = tiny(method=method, tau=4)
    path = tmp_path / "m.sparks"
    export(model, path)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    rebuilt = load(path, runtime="torch")
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    pairs = zip(sparks.subbit_layers(rebuilt), sparks.subbit_layers(model), strict=True)
    for (name, got), (_, want) in pairs:
        assert got.method == want.method
        if want.quantizer.binary:
            assert torch.equal(got.binary_weight(), want.binary_weight()), name
            assert torch.equal(got.alpha(), want.alpha())
            # indices may point at a duplicate codeword only if the sub-codebook has duplicates (snn between refines)
            assert torch.equal(got.subcodebook()[got.kernel_indices()], want.subcodebook()[want.kernel_indices()])


@pytest.mark.parametrize("name", ["vgg_small", "reactnet18"])
def test_other_architectures_round_trip(tmp_path, name):
    model = tiny(name, "topn", in_channels=3)
    size = 32
    path = tmp_path / "m.sparks"
    export(model, path, input_size=(3, size, size))
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(load(path, runtime="torch")(x), ref)
    logits = load(path, runtime="packed")(x)
    np.testing.assert_allclose(logits, ref.numpy(), rtol=0, atol=1e-4 * float(ref.abs().max()))


def test_packed_engine_matches_torch(tmp_path):
    model = tiny(tau=5)
    path = tmp_path / "m.sparks"
    export(model, path)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    packed = load(path, runtime="packed")
    assert isinstance(packed, PackedModel)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(packed(x), ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(packed(x.numpy()[0]), ref[:1], rtol=0, atol=1e-4 * np.abs(ref).max())
    unfused = PackedModel(*read_sparks(path), fuse_bn=False)
    np.testing.assert_allclose(unfused(x), ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    with pytest.raises(ValueError, match="shape"):
        packed(np.zeros((1, 3, 28, 28), np.float32))


def test_generic_converted_sequential(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=True), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.AvgPool2d(3, 2, 1, ceil_mode=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(), nn.Linear(32, 7))
    convert(model, tau=4, method="topn")
    assert sum(isinstance(m, SubBitConv2d) for m in model.modules()) == 2
    randomize(model)
    path = tmp_path / "seq.sparks"
    with pytest.raises(ValueError, match="input_size"):
        export(model, path)
    export(model, path, input_size=(1, 3, 20, 20))
    x = torch.randn(2, 3, 20, 20, generator=torch.Generator().manual_seed(4))
    rebuilt = load(path, runtime="torch")
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(rebuilt(x), ref)
    np.testing.assert_allclose(load(path, runtime="packed")(x), ref.numpy(), atol=1e-4 * float(ref.abs().max()))


@pytest.mark.parametrize("method", ["topn", "float"])
def test_modified_registered_model_falls_back_to_the_graph(tmp_path, method):
    from sparks.deploy.rebuild import GraphModel

    model = tiny(method=method)
    model.features = model.features[:5]  # still carries model_name, but is no longer what create() builds
    model.fc = nn.Linear(16, 10)
    export(model, tmp_path / "cut.sparks")
    rebuilt = load(tmp_path / "cut.sparks", runtime="torch")
    assert isinstance(rebuilt, GraphModel)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


class _Gelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.GELU()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv(x)).mean((2, 3)))


class _Sigmoid(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(torch.sigmoid(x).flatten(1))


@pytest.mark.parametrize("model, what", [(_Gelu(), "GELU"), (_Sigmoid(), "sigmoid"),
                                         (nn.Sequential(nn.Conv2d(3, 4, 3, groups=1, dilation=2)), "dilation")])
def test_unsupported_modules_name_the_type(tmp_path, model, what):
    with pytest.raises(ValueError, match=f"not supported yet: .*{what}"):
        export(model, tmp_path / "x.sparks", input_size=(3, 8, 8))
    assert not (tmp_path / "x.sparks").exists()


def test_flatten_of_a_map_keeps_torch_order(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 5, 4)).eval()
    export(model, tmp_path / "f.sparks", input_size=(2, 6, 7))
    x = torch.randn(2, 2, 6, 7)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(load(tmp_path / "f.sparks", runtime="packed")(x), ref, atol=1e-5)
    assert operator.eq(load(tmp_path / "f.sparks", runtime="torch")(x).detach().numpy().tolist(), ref.tolist())


@pytest.mark.parametrize("tau, method", [(5, "sparks"), (9, "sign")])
def test_file_size_tracks_bit_count(tmp_path, tau, method):
    torch.manual_seed(0)
    model = create("resnet18_cifar", tau=tau, method=method)
    total_bytes = sparks.summary(model, (1, 3, 32, 32), print_fn=None)["total_bits"] / 8
    path = tmp_path / "r18.sparks"
    export(model, path)
    size = path.stat().st_size
    assert size <= 1.02 * total_bytes + 64 * 1024, (size, total_bytes)
    assert size >= total_bytes * 0.95  # nothing is silently dropped


def test_half_stores_real_layers_in_float16(tmp_path):
    model = tiny(method="topn")
    export(model, tmp_path / "f32.sparks")
    meta = export(model, tmp_path / "f16.sparks", half=True)
    assert meta["real_dtype"] == "float16"
    _, tensors = read_sparks(tmp_path / "f16.sparks")
    assert tensors["stem.0.weight"].dtype == np.float16 and tensors["features.0.conv.alpha"].dtype == np.float32
    assert (tmp_path / "f16.sparks").stat().st_size < (tmp_path / "f32.sparks").stat().st_size
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    rebuilt = load(tmp_path / "f16.sparks", runtime="torch")
    assert torch.equal(rebuilt.stem[0].weight, model.stem[0].weight.half().float())  # rounded, nothing else
    assert torch.equal(rebuilt.fc.weight, model.fc.weight.half().float())
    with torch.no_grad():
        half = rebuilt(x)
    scale = float(half.abs().max())
    np.testing.assert_allclose(load(tmp_path / "f16.sparks", runtime="packed")(x), half.numpy(), atol=1e-4 * scale)


def test_bad_files_raise_format_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.sparks")
    (tmp_path / "junk.sparks").write_bytes(b"not a model at all")
    with pytest.raises(SparksFormatError):
        load(tmp_path / "junk.sparks")
    with pytest.raises(SparksFormatError):
        load(tmp_path / "junk.sparks", runtime="packed")
    with pytest.raises(ValueError, match="runtime"):
        load(tmp_path / "junk.sparks", runtime="onnx")


def test_format_and_runtime_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, sparks, sparks.deploy.format, sparks.runtime, sparks.runtime.engine; "
            "sparks.runtime.PackedModel; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------- a trained model, real data
@pytest.fixture(scope="module")
def trained(fashion_mnist_root):
    """resnet18_cifar (width 1/8, τ=5, topn) trained 30 seeded steps on Fashion-MNIST; 1,000 normalized test
    images (bench/runtime_parity.py runs the same check on all 10,000)."""
    from sparks.train.data import FASHION_MNIST_STATS, load_fashion_mnist

    (train_x, train_y), (test_x, test_y) = load_fashion_mnist(fashion_mnist_root)
    (mean,), (std,) = FASHION_MNIST_STATS
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, in_channels=1, num_classes=10, tau=5, method="topn")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(30):
        idx = torch.randint(0, len(train_y), (64,), generator=g)
        loss = nn.functional.cross_entropy(model((train_x[idx].float() / 255 - mean) / std), train_y[idx].long())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    return model.eval(), (test_x[:1000].float() / 255 - mean) / std, test_y[:1000]


def test_trained_model_on_real_images(tmp_path, trained):
    model, images, labels = trained
    path = tmp_path / "fm.sparks"
    export(model, path)
    with torch.no_grad():
        ref = model(images).numpy()
        assert np.array_equal(load(path, runtime="torch")(images).numpy(), ref)
    assert (ref.argmax(1) == labels.numpy()).mean() > 0.2  # it learned something (chance: 0.1)
    logits = load(path, runtime="packed")(images)
    assert np.array_equal(logits.argmax(1), ref.argmax(1))  # 100% identical predictions
    scale = np.abs(ref).max(axis=1)
    close = (np.abs(logits - ref).max(axis=1) <= 1e-4 * scale).mean()
    # a pre-sign value within an ulp of 0 may flip one ±1 activation (real convs sum in another order than torch)
    assert close >= 0.99, close


def test_cli_export_run_bench(tmp_path, trained, fashion_mnist_root, capsys):
    import json

    from sparks.cli import main
    from sparks.train.checkpoint import FORMAT_VERSION, save_checkpoint

    model, _, _ = trained
    ckpt = tmp_path / "best.pt"
    save_checkpoint({"format_version": FORMAT_VERSION, "model_name": model.model_name,
                     "model_args": dict(model.model_args), "model": model.state_dict(),
                     "data": {"input_size": [28, 28]}}, ckpt)  # what it was trained at: the export's input size
    out = tmp_path / "m.sparks"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    meta, _ = read_sparks(out)
    assert meta["input"] == {"channels": 1, "height": 28, "width": 28}
    assert main(["run", "--model", str(out), "--dataset", "fashion-mnist", "--data", str(fashion_mnist_root),
                 "--limit", "300", "--batch-size", "128", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 300 and 0 <= result["top1"] <= 100 and result["images_per_s"] > 0
    assert main(["bench", "--model", str(out), "--json", "--threads", "1", "--repeats", "1", "--layer-repeats", "1",
                 "--batch-sizes", "1", "2"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert len(bench["layers"]) == 16 and {"name", "shape", "torch_ms", "packed_ms", "lut_ms", "speedup"} <= set(
        bench["layers"][0])
    assert {"batch1_speedup", "batch2_speedup"} <= set(bench["model"])
    # bad input: one line, exit code 2
    (tmp_path / "bad.sparks").write_bytes(out.read_bytes()[:1000])
    assert main(["run", "--model", str(tmp_path / "bad.sparks"), "--dataset", "fashion-mnist"]) == 2
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "Traceback" not in err


def test_export_tables_are_json_and_arrays():
    meta, tensors = export_tables(tiny(method="topn"))
    assert meta["model_name"] == "resnet18_cifar" and meta["tau"] == 5 and meta["method"] == "topn"
    assert all(isinstance(t, np.ndarray) for t in tensors.values())
