"""Shared pytest fixtures: real datasets (skipped when absent)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``cifar-10-batches-py/`` (all 50,000 training images, no test_batch), expanded once per
    session from ../shared/data/cifar10; the test is skipped when ../shared is absent."""
    expand = SHARED / "data" / "cifar10" / "expand.py"
    if not expand.is_file():
        pytest.skip(f"CIFAR-10 source not found ({expand})")
    root = tmp_path_factory.mktemp("cifar10")
    subprocess.run([sys.executable, str(expand), str(root)], check=True, capture_output=True)
    return root


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """The Fashion-MNIST IDX folder (apt package dataset-fashion-mnist); the test is skipped when absent."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST}")
    return FASHION_MNIST
