"""Format version 2: file size against the bit count, limits checked before allocation, hostile model_args."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
import torch

from sparks.complexity import summary
from sparks.deploy.export import export_tables
from sparks.deploy.format import SparksFormatError, read_sparks, read_sparks_bytes, sparks_bytes
from sparks.deploy.load import load
from sparks.limits import Limits
from sparks.models import create


def _file(name: str, input_size: tuple[int, int, int], half: bool = False, **kwargs) -> tuple[bytes, float, dict]:
    torch.manual_seed(0)
    model = create(name, in_channels=input_size[0], **kwargs)
    meta, tensors = export_tables(model, input_size=input_size, half=half)
    bits = summary(model, (1, *input_size), print_fn=None)["total_bits"] / 8
    return sparks_bytes(meta, tensors), bits, meta


def test_demo_model_is_within_115_percent_of_its_bit_count():
    data, bits, _ = _file("vgg_small", (1, 28, 28), width=0.125, tau=5, num_classes=10)
    assert bits == 14_076  # the demo model of the README (independent of the input size)
    assert len(data) <= 1.15 * bits


@pytest.mark.parametrize("name, size, kwargs", [
    ("vgg_small", (3, 32, 32), {"width": 0.25, "tau": 4, "method": "topn"}),
    ("vgg_small", (1, 28, 28), {"width": 0.125, "method": "sign"}),
    ("resnet18_cifar", (3, 32, 32), {"width": 0.25, "tau": 5}),
    ("resnet18_cifar", (1, 28, 28), {"width": 0.125, "tau": 9, "method": "topn"}),
    ("reactnet18", (3, 32, 32), {"width": 0.25, "tau": 6, "num_classes": 100}),
    ("reactnet34", (3, 32, 32), {"width": 0.125, "tau": 1, "method": "random"}),
    ("vgg_small", (3, 32, 32), {"width": 0.125, "method": "float"}),
])
def test_every_model_is_within_102_percent_plus_4_kib(name, size, kwargs):
    data, bits, meta = _file(name, size, **kwargs)
    assert len(data) <= 1.02 * bits + 4096, (len(data), bits)
    got, _ = read_sparks_bytes(data)
    assert got == meta


def test_half_files_are_smaller_than_the_bit_count():
    data, bits, _ = _file("vgg_small", (1, 28, 28), half=True, width=0.125, tau=5)
    assert len(data) < bits


def test_table_limits_can_be_raised_on_purpose():
    data, _, meta = _file("vgg_small", (1, 28, 28), width=0.125, tau=5)
    params = 9 * sum(op["in_channels"] * op["out_channels"] for op in meta["ops"] if op["op"] == "subbit_conv2d")
    with pytest.raises(SparksFormatError, match="max_params"):
        read_sparks_bytes(data, Limits(max_params=params))
    with pytest.raises(SparksFormatError, match="max_channels"):
        read_sparks_bytes(data, Limits(max_channels=8))  # 16 channels in the wider layers
    read_sparks_bytes(data, Limits(max_params=params * 2))


@pytest.mark.parametrize("args, match", [({"width": 64.0}, "parameter count"), ({"width": 1e308}, "width"),
                                         ({"num_classes": 10**9}, "num_classes"), ({"width": -1}, "width"),
                                         ({"width": None, "num_classes": -5}, "num_classes")])
def test_hostile_model_args_are_refused_before_the_torch_rebuild(tmp_path, args, match):
    torch.manual_seed(0)
    model = create("vgg_small", in_channels=1, width=0.125, tau=5)
    meta, tensors = export_tables(model, input_size=(1, 28, 28))
    meta["model_args"].update(args)
    path = tmp_path / "m.sparks"
    path.write_bytes(sparks_bytes(meta, tensors))  # a valid file: model_args are informative to the packed runtime
    with pytest.raises(SparksFormatError, match=match):
        load(path, runtime="torch")
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32)
    assert np.isfinite(load(path, runtime="packed")(x)).all()


def test_huge_values_are_refused():
    torch.manual_seed(0)
    model = create("vgg_small", in_channels=1, width=0.125, tau=5)
    meta, tensors = export_tables(model, input_size=(1, 28, 28))
    tensors["features.0.bn.scale"] = np.full_like(tensors["features.0.bn.scale"], 3e38)
    with pytest.raises(SparksFormatError, match="huge"):
        read_sparks_bytes(sparks_bytes(meta, tensors, check=False))


@pytest.mark.parametrize("header", [0, 2**40, 2**64 - 1, 100])
def test_sparse_giant_file_is_refused_from_its_header(tmp_path, header):
    path = tmp_path / "giant.sparks"
    with open(path, "wb") as f:
        f.write(header.to_bytes(8, "little") + b"{" * 8)
        f.truncate(3 << 30)  # 3 GiB, sparse: nothing but the first 16 bytes is ever read
    tracemalloc.start()
    try:
        with pytest.raises(SparksFormatError):
            read_sparks(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        os.unlink(path)
    assert peak < 1 << 20


def test_over_the_file_limit_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.sparks"
    with open(path, "wb") as f:
        f.truncate((1 << 32) + 1)
    try:
        with pytest.raises(SparksFormatError, match="max_file_bytes"):
            read_sparks(path)
    finally:
        os.unlink(path)


def test_compressed_table_bomb_is_refused():
    import zlib

    from sparks.deploy.format import pack_container

    table = zlib.compress(json.dumps({"format_version": 2, "pad": " " * (1 << 25)}).encode(), 9)
    import hashlib

    data = pack_container({"layers": table}, hashlib.sha256(table).hexdigest())
    assert len(data) < 1 << 16
    with pytest.raises(SparksFormatError, match="decompressed layer table"):
        read_sparks_bytes(data)
