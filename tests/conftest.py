"""Shared pytest fixtures: a tiny CIFAR-10 written by the tests themselves, and Fashion-MNIST (skipped when absent).

The CIFAR-10 fixture writes the official python-batch layout byte for byte as the Python-2 pickles of the real
download (str keys as BINSTRING, arrays through ``numpy.core.multiarray._reconstruct``), so the restricted reader
is tested on the real format without the 170 MB download.
"""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_PER_BATCH = 60  # 5 training batches of 60 images: 300 images, 30 per class


class Py2Str(bytes):
    """A bytes value pickled as a Python-2 str, as in the official files."""


class _Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2str(self, obj: Py2Str) -> None:
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + bytes(obj) if n < 256
                   else pickle.BINSTRING + struct.pack("<i", n) + bytes(obj))
        self.memoize(obj)

    def _save_ndarray(self, arr: np.ndarray) -> None:  # numpy 1.x's ndarray.__reduce__, written out by hand
        arr = np.ascontiguousarray(arr)
        w = self.write
        w(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
        w(pickle.GLOBAL + b"numpy\nndarray\n")
        self.save((0,))
        self.save(Py2Str(b"b"))
        w(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
        self.save(1)
        self.save(tuple(int(s) for s in arr.shape))
        w(pickle.GLOBAL + b"numpy\ndtype\n")
        self.save((Py2Str(arr.dtype.str[1:].encode()), 0, 1))
        w(pickle.REDUCE)
        self.save((3, Py2Str(b"|"), None, None, None, -1, -1, 0))
        w(pickle.BUILD)
        self.save(False)
        self.save(Py2Str(arr.tobytes()))
        w(pickle.TUPLE + pickle.BUILD)

    dispatch[Py2Str] = _save_py2str
    dispatch[np.ndarray] = _save_ndarray


def _dump(obj: object, path: Path) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar10(folder: str | os.PathLike, images: np.ndarray, labels: np.ndarray, per_batch: int,
                  prefix: str = "data_batch_", label: str = "training") -> None:
    """Write uint8 images (N, 32, 32, 3) and labels as official CIFAR-10 python batches (+ batches.meta)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = (len(images) + per_batch - 1) // per_batch
    for b in range(count):
        part = slice(b * per_batch, (b + 1) * per_batch)
        rows = np.ascontiguousarray(images[part].transpose(0, 3, 1, 2).reshape(-1, 3072))  # R plane, G, B
        name = f"{prefix}{b + 1}" if prefix.endswith("_") else prefix
        _dump({Py2Str(b"batch_label"): Py2Str(f"{label} batch {b + 1} of {count}".encode()),
               Py2Str(b"labels"): [int(v) for v in labels[part]], Py2Str(b"data"): rows}, folder / name)
    _dump({Py2Str(b"num_cases_per_batch"): per_batch, Py2Str(b"label_names"): [Py2Str(n.encode())
           for n in CIFAR10_NAMES], Py2Str(b"num_vis"): 3072}, folder / "batches.meta")


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``cifar-10-batches-py/``: 5 training batches of 60 random images (labels 30 per class,
    shuffled, seed 0), no test_batch — the layout of the CIFAR-10 copy the project trains on."""
    root = tmp_path_factory.mktemp("cifar10")
    rng = np.random.default_rng(0)
    n = 5 * CIFAR10_PER_BATCH
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.permutation(np.arange(n) % 10)
    write_cifar10(root / "cifar-10-batches-py", images, labels, CIFAR10_PER_BATCH)
    return root


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """The Fashion-MNIST IDX folder (apt package dataset-fashion-mnist); the test is skipped when absent."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST}")
    return FASHION_MNIST


@pytest.fixture(scope="session")
def tiny_resnet_sparks(tmp_path_factory):
    """(model, path): resnet18_cifar width 0.125, 1×28×28 input, Sparks τ=5, exported to a ``.sparks`` file; its
    LearnableBiases are non-zero, so the engine's fusion of them into the packing is exercised."""
    import torch

    from sparks.deploy.export import export
    from sparks.models import create

    torch.manual_seed(0)
    model = create("resnet18_cifar", width=0.125, in_channels=1, num_classes=10, tau=5, method="sparks").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.dim() == 4:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    path = tmp_path_factory.mktemp("tiny_resnet") / "m.sparks"
    export(model, path)
    return model, path
