"""sparks.data: the dataset readers on real data, splits, augmentation, loaders and the bad-input errors."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_cifar10
from torch.utils.data import default_collate

from sparks.errors import UsageError
from sparks.train import data

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530
CIFAR_MEAN = np.array([0.4914, 0.4822, 0.4465]).reshape(3, 1, 1)
CIFAR_STD = np.array([0.2470, 0.2435, 0.2616]).reshape(3, 1, 1)


def _raw_idx(path: Path, header: int) -> np.ndarray:
    """Reference IDX reader: skip the fixed-size header, no validation."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8)[header:]


def _is_crop_flip(aug: np.ndarray, padded: np.ndarray, size: int) -> bool:
    """Brute force: is ``aug`` some size×size window of ``padded``, possibly mirrored left-right?"""
    span = padded.shape[-1] - size
    for top in range(span + 1):
        for left in range(span + 1):
            window = padded[:, top : top + size, left : left + size]
            if np.allclose(aug, window, atol=1e-5) or np.allclose(aug, window[..., ::-1], atol=1e-5):
                return True
    return False


# --------------------------------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_reader(fashion_mnist_root):
    splits = data.build_datasets("fashion-mnist", str(fashion_mnist_root))
    assert (len(splits.train), len(splits.test), splits.val) == (60000, 10000, None)
    assert (splits.num_classes, splits.in_channels, splits.input_size) == (10, 1, (28, 28))
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[9] == "Ankle boot"
    labels = _raw_idx(fashion_mnist_root / "train-labels-idx1-ubyte.gz", 8)
    test_labels = _raw_idx(fashion_mnist_root / "t10k-labels-idx1-ubyte.gz", 8)
    assert np.array_equal(splits.train.labels.numpy(), labels)
    assert np.bincount(labels).tolist() == [6000] * 10 and np.bincount(test_labels).tolist() == [1000] * 10
    # the test set uses the eval transform: (pixel / 255 - mean) / std, checked in float64
    pixels = _raw_idx(fashion_mnist_root / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    for i in (0, 1234, 9999):
        image, label = splits.test[i]
        assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == test_labels[i]
        expected = (pixels[i].astype(np.float64) / 255 - FMNIST_MEAN) / FMNIST_STD
        np.testing.assert_allclose(image.numpy(), expected, atol=1e-5)


def test_fashion_mnist_augmentation_is_crop_and_flip(fashion_mnist_root):
    splits = data.build_datasets("fashion-mnist", str(fashion_mnist_root), subset=8)
    plain = data.build_datasets("fashion-mnist", str(fashion_mnist_root), subset=8, augment=False)
    torch.manual_seed(0)
    batch = splits.train.__getitems__(list(range(8)))
    for i, (aug, label) in enumerate(batch):
        assert aug.shape == (1, 28, 28) and label == plain.train[i][1]
        ref = plain.train[i][0].numpy()
        padded = np.pad(ref, ((0, 0), (2, 2), (2, 2)), constant_values=-FMNIST_MEAN / FMNIST_STD)
        assert _is_crop_flip(aug.numpy(), padded, 28)


def test_corrupt_and_truncated_idx(fashion_mnist_root, tmp_path):
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        shutil.copy(fashion_mnist_root / name, tmp_path / name)
    truncated = tmp_path / "train-labels-idx1-ubyte.gz"
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(UsageError, match="train-labels-idx1-ubyte.gz"):
        data.build_datasets("fashion-mnist", str(tmp_path))
    # right gzip, wrong content: magic number of an image file in the label file
    with gzip.open(truncated, "wb") as f:
        f.write((0x803).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\0" * 9)
    with pytest.raises(UsageError, match="magic"):
        data.build_datasets("fashion-mnist", str(tmp_path))
    # header promises more bytes than the file holds
    with gzip.open(truncated, "wb") as f:
        f.write((0x801).to_bytes(4, "big") + (60000).to_bytes(4, "big") + b"\0" * 100)
    with pytest.raises(UsageError, match="truncated"):
        data.build_datasets("fashion-mnist", str(tmp_path))


def test_read_idx_uncompressed_small(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes((0x803).to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in images.shape)
                     + images.tobytes())
    assert np.array_equal(data.read_idx(path, 3), images)


def test_missing_dirs_and_unknown_dataset(tmp_path):
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
        data.build_datasets("fashion-mnist", str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="expand.py"):
        data.build_datasets("cifar10", str(tmp_path))
    with pytest.raises(UsageError, match="unknown dataset 'mnist'"):
        data.build_datasets("mnist")


# -------------------------------------------------------------------------------------------------------- CIFAR-10


def test_cifar10_reader(cifar10_root):
    splits = data.build_datasets("cifar10", str(cifar10_root))
    assert (len(splits.train), splits.val, splits.test) == (300, None, None)
    assert (splits.num_classes, splits.in_channels, splits.input_size) == (10, 3, (32, 32))
    assert splits.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck"]
    labels = splits.train.labels
    assert labels.dtype == torch.int64 and torch.bincount(labels).tolist() == [30] * 10
    # reference: the plain pickle module on the file this test session wrote itself
    with open(cifar10_root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        ref = pickle.load(f, encoding="bytes")
    rows = ref[b"data"].reshape(-1, 3, 32, 32)
    assert torch.equal(splits.train.images[60:120], torch.from_numpy(rows))
    assert labels[60:120].tolist() == ref[b"labels"]
    # the same folder given directly
    direct = data.build_datasets("cifar10", str(cifar10_root / "cifar-10-batches-py"), augment=False)
    image, label = direct.train[67]
    assert label == ref[b"labels"][7] and direct.train[-1][1] == int(labels[-1])
    with pytest.raises(IndexError):
        direct.train[300]
    np.testing.assert_allclose(image.numpy(), (rows[7] / 255.0 - CIFAR_MEAN) / CIFAR_STD, atol=1e-5)


def test_cifar10_val_split_and_subset(cifar10_root):
    splits = data.build_datasets("cifar10", str(cifar10_root), val_fraction=0.1, seed=3)
    train_idx, val_idx = splits.train.indices, splits.val.indices
    assert len(val_idx) == 30 and len(train_idx) == 270
    assert not set(train_idx) & set(val_idx) and set(train_idx) | set(val_idx) == set(range(300))
    assert data.build_datasets("cifar10", str(cifar10_root), val_fraction=0.1, seed=3).val.indices == val_idx
    assert data.build_datasets("cifar10", str(cifar10_root), val_fraction=0.1, seed=4).val.indices != val_idx
    # val is not augmented: the same item twice is identical
    assert torch.equal(splits.val[5][0], splits.val[5][0])
    small = data.build_datasets("cifar10", str(cifar10_root), val_fraction=0.1, seed=3, subset=100)
    assert small.train.indices == train_idx[:100] and small.val.indices == val_idx
    assert len(data.build_datasets("cifar10", str(cifar10_root), subset=7).train) == 7


def test_cifar10_augmentation_and_loader(cifar10_root):
    splits = data.build_datasets("cifar10", str(cifar10_root), subset=300)
    plain = data.build_datasets("cifar10", str(cifar10_root), subset=300, augment=False)
    loader = data.build_loader(splits.train, 128, train=True, seed=1)
    assert loader.num_workers == 0 and len(loader) == 2  # 300 images → 2 full batches (drop_last)
    torch.manual_seed(0)
    images, labels = next(iter(loader))
    assert images.shape == (128, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64
    # the same seed gives the same order again; the next epoch is reshuffled
    order = list(iter(data.build_loader(splits.train, 128, train=True, seed=1).sampler))[:128]
    assert labels.tolist() == [plain.train[i][1] for i in order]
    assert list(iter(loader.sampler))[:128] != order
    pad = -CIFAR_MEAN / CIFAR_STD
    for row in range(4):
        ref = plain.train[order[row]][0].numpy()
        padded = np.concatenate([np.pad(ref[c : c + 1], ((0, 0), (4, 4), (4, 4)), constant_values=pad[c, 0, 0])
                                 for c in range(3)])
        assert _is_crop_flip(images[row].numpy(), padded, 32)
    # eval loader: in order, every image once, same as the per-item path
    evaluated = data.build_loader(plain.train, 128, train=False)
    batches = list(evaluated)
    assert [len(b[1]) for b in batches] == [128, 128, 44]
    per_item = default_collate([plain.train[i] for i in range(128)])
    assert torch.equal(batches[0][0], per_item[0]) and torch.equal(batches[0][1], per_item[1])


def _write_tiny_cifar(folder: Path, with_test: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    y = np.arange(20) % 10
    write_cifar10(folder, x, y, per_batch=4)
    if with_test:
        write_cifar10(folder, x[:6], y[:6], per_batch=6, prefix="test_batch", label="testing")


def test_cifar10_test_batch_and_missing_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_tiny_cifar(folder, with_test=True)
    splits = data.build_datasets("cifar10", str(tmp_path))
    assert len(splits.train) == 20 and len(splits.test) == 6
    assert splits.test.labels.tolist() == [0, 1, 2, 3, 4, 5]
    os.remove(folder / "data_batch_4")
    with pytest.raises(UsageError, match="data_batch_4"):
        data.build_datasets("cifar10", str(tmp_path))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_restricted_unpickler_rejects_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    _write_tiny_cifar(folder, with_test=False)
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": _Exploit(), "labels": [0]}, protocol=2))
    with pytest.raises(UsageError, match=r"data_batch_1.*system\' is not allowed"):
        data.build_datasets("cifar10", str(tmp_path))
    assert not (tmp_path / "pwned").exists()
    # an object array (whose items would be unpickled as arbitrary objects) is refused too
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": np.array([None, 1], dtype=object)}, protocol=2))
    with pytest.raises(UsageError, match="not allowed"):
        data.read_cifar_pickle(folder / "data_batch_1")
    # a well-formed pickle with the wrong content
    (folder / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(UsageError, match="not a CIFAR-10 batch"):
        data.build_datasets("cifar10", str(tmp_path))


# ------------------------------------------------------------------------------------------- splits, loader, folder


def test_split_arguments_are_checked(tmp_path):
    for kwargs, message in (({"val_fraction": 1.0}, "val_fraction"), ({"subset": 0}, "subset")):
        with pytest.raises(UsageError, match=message):
            data._split_indices(10, seed=0, **{"val_fraction": 0.0, "subset": None, **kwargs})
    with pytest.raises(UsageError, match="batch size"):
        data.build_loader(torch.utils.data.TensorDataset(torch.zeros(4)), 0, train=True)


def test_distributed_loader_shards(tmp_path):
    import torch.distributed as dist

    dataset = data.TensorImages(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10),
                                data.BatchTransform((0.0,), (1.0,)))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loader = data.build_loader(dataset, 4, train=True, seed=5, distributed=True)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler) and len(loader) == 2
        seen = torch.cat([y for _, y in loader]).tolist()
        assert len(seen) == 8 and len(set(seen)) == 8
    finally:
        dist.destroy_process_group()


def test_imagefolder(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(UsageError, match=r"needs torchvision: pip install 'sparks\[vision\]'"):
            data.build_datasets("imagefolder", str(tmp_path))
        return
    except (RuntimeError, OSError):  # installed, but built for another torch
        with pytest.raises(UsageError, match="torchvision is installed but fails to import"):
            data.build_datasets("imagefolder", str(tmp_path))
        return
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    splits = data.build_datasets("imagefolder", str(tmp_path), image_size=16, val_fraction=0.34)
    assert splits.class_names == ["cat", "dog"] and (splits.num_classes, splits.input_size) == (2, (16, 16))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 2, 2)
    for dataset in (splits.train, splits.val, splits.test):
        image, label = dataset[0]
        assert image.shape == (3, 16, 16) and label in (0, 1)
    assert data.default_workers(splits.train) >= 1
