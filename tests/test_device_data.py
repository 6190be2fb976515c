"""The device-resident training data path gives exactly the batches of the DataLoader path for the same seed."""

from __future__ import annotations

import pytest
import torch

from sparks.errors import UsageError
from sparks.train import data
from sparks.train.device_data import DeviceData, use_device_data

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def synthetic(n: int = 300, channels: int = 3, size: int = 32, padding: int = 4) -> data.TensorImages:
    g = torch.Generator().manual_seed(n)
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return data.TensorImages(images, labels, data.BatchTransform((0.5,) * channels, (0.25,) * channels,
                                                                  padding=padding, flip=True))


def assert_same_batches(dataset, device: str, batch_size: int, seed: int, workers: int = 0, distributed=False):
    reference = list(data.build_loader(dataset, batch_size, train=True, workers=workers, seed=seed,
                                       distributed=distributed))
    loader = DeviceData(dataset, device).loader(batch_size, seed=seed, distributed=distributed)
    got = list(loader)
    assert len(got) == len(loader) == len(reference) > 0
    for (x, y), (rx, ry) in zip(got, reference, strict=True):
        assert x.device.type == torch.device(device).type and x.dtype == torch.float32
        assert torch.equal(x.cpu(), rx) and torch.equal(y.cpu(), ry)
    return got


def test_same_batches_as_the_dataloader_with_subsets_and_seeds():
    dataset = synthetic()
    first = assert_same_batches(dataset, "cpu", 64, seed=3)
    # a subset (the training part of a val split) maps positions to base indices
    subset = torch.utils.data.Subset(dataset, list(range(5, 300, 2)))
    assert_same_batches(subset, "cpu", 32, seed=4)
    # another seed (the loop uses seed·100003 + epoch) gives other batches: the augmentation is reseeded
    other = list(DeviceData(dataset, "cpu").loader(64, seed=4))
    assert not torch.equal(other[0][0], first[0][0])
    # augmentation is real: each image is its padded original, cropped at a seeded offset and maybe flipped
    plain = data.TensorImages(dataset.images, dataset.labels, data.BatchTransform((0.5,) * 3, (0.25,) * 3))
    order = list(iter(data.build_loader(dataset, 64, train=True, seed=3).sampler))[:64]
    top, left, flipped = dataset.transform.draw(len(dataset), torch.Generator().manual_seed(3))
    for row in range(3):
        i = order[row]
        padded = torch.nn.functional.pad(dataset.images[i].int(), (4, 4, 4, 4))
        ref = padded[:, top[i] : top[i] + 32, left[i] : left[i] + 32]
        ref = ref.flip(-1) if flipped[i] else ref
        assert torch.equal(first[0][0][row], plain.transform(ref.to(torch.uint8).unsqueeze(0))[0])


def test_batches_do_not_depend_on_the_worker_count():
    dataset = synthetic(n=130, channels=1, size=28, padding=2)
    assert_same_batches(dataset, "cpu", 64, seed=7, workers=1)


def test_distributed_shard_matches(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert_same_batches(synthetic(n=100), "cpu", 16, seed=2, distributed=True)
    finally:
        dist.destroy_process_group()


def test_fashion_mnist_val_split_matches(fashion_mnist_root):
    splits = data.build_datasets("fashion-mnist", str(fashion_mnist_root), val_fraction=0.1, subset=500, seed=1)
    assert_same_batches(splits.train, "cpu", 128, seed=100_003)


def test_auto_on_off(tmp_path):
    dataset = synthetic(n=8)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_device_data("auto", dataset, cuda) and not use_device_data("auto", dataset, cpu)
    assert use_device_data("on", dataset, cpu) and not use_device_data("off", dataset, cuda)
    folder = torch.utils.data.TensorDataset(torch.zeros(4))  # stands in for an ImageFolder
    assert not use_device_data("auto", folder, cuda)
    with pytest.raises(UsageError, match="needs an in-memory dataset"):
        use_device_data("on", folder, cuda)
    with pytest.raises(UsageError, match="must be one of"):
        use_device_data("maybe", dataset, cpu)


@pytest.mark.cuda
@NEEDS_CUDA
def test_cuda_batches_match_the_cpu_loader():
    assert_same_batches(synthetic(), "cuda", 64, seed=11)


def tiny_run(data_root, out, *extra):
    from sparks.cli import main

    args = ["train", "--arch", "vgg_small", "--width", "0.0625", "--data", str(data_root), "--subset", "192",
            "--batch-size", "64", "--epochs", "2", "--workers", "0", "--no-eval-test", "--threads", "1",
            "--val-fraction", "0.005", "--no-progress", "--out", str(out), *extra]
    assert main(args) == 0
    from sparks.train.checkpoint import load_checkpoint

    return load_checkpoint(out / "last.pt")


def test_training_on_device_data_is_the_same_run(tmp_path, fashion_mnist_root):
    """--data-on-device on (here on the CPU) trains exactly the run of the DataLoader path: same weights."""
    loader = tiny_run(fashion_mnist_root, tmp_path / "loader", "--data-on-device", "off")
    device = tiny_run(fashion_mnist_root, tmp_path / "device", "--data-on-device", "on")
    assert loader["step"] == device["step"] == 6
    for key, value in loader["model"].items():
        assert torch.equal(value, device["model"][key]), key
    assert (tmp_path / "loader" / "metrics.jsonl").read_text().count("train_loss") == 2
