"""Device-resident training data for the small in-memory sets (CIFAR-10, Fashion-MNIST).

A CIFAR-10 step of a ResNet-18 on a GPU takes a few milliseconds; a DataLoader that gathers, augments and copies
every batch from the host cannot keep up. :class:`DeviceData` uploads the whole uint8 training set once (150 MB for
CIFAR-10) and :meth:`DeviceData.loader` serves each epoch's batches from the device: the random crop (zero padding)
and horizontal flip and the normalisation run there, batched, with no host round-trip per step.

The batches are exactly those of :func:`sparks.train.data.build_loader` for the same seed: the order comes from the
same sampler (drawn on the host once per epoch, one transfer) and the crops/flips from the same per-epoch table
(:meth:`~sparks.train.data.TensorImages.set_augment_seed`), uploaded once per epoch. The same code runs on the CPU.
ImageFolder datasets (JPEG decoding) keep the multi-worker DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Subset

from sparks.errors import UsageError
from sparks.train.data import TensorImages, build_sampler

CHOICES = ("auto", "on", "off")


def base_and_indices(dataset: Dataset) -> tuple[TensorImages, torch.Tensor | None]:
    """The in-memory :class:`TensorImages` under ``dataset`` and the map from its positions to base indices
    (None: the identity); ``UsageError`` for any other dataset."""
    indices = None
    while isinstance(dataset, Subset):
        step = torch.as_tensor(list(dataset.indices), dtype=torch.int64)
        indices = step if indices is None else step[indices]
        dataset = dataset.dataset
    if not isinstance(dataset, TensorImages):
        raise UsageError(f"--data-on-device needs an in-memory dataset (fashion-mnist, cifar10), not "
                         f"{type(dataset).__name__}")
    return dataset, indices


def use_device_data(choice: str, dataset: Dataset, device: torch.device) -> bool:
    """Whether ``--data-on-device CHOICE`` keeps ``dataset`` on ``device``: ``auto`` is on for CUDA and in-memory
    sets, ``on`` requires an in-memory set, ``off`` never."""
    if choice not in CHOICES:
        raise UsageError(f"--data-on-device must be one of {', '.join(CHOICES)}, got {choice!r}")
    if choice == "off":
        return False
    if choice == "on":
        base_and_indices(dataset)  # raises for image folders
        return True
    try:
        base_and_indices(dataset)
    except UsageError:
        return False
    return device.type == "cuda"


class DeviceData:
    """A training set (a :class:`TensorImages` or a Subset of one) held on ``device`` as uint8 images."""

    def __init__(self, dataset: Dataset, device: torch.device | str) -> None:
        base, indices = base_and_indices(dataset)
        self.dataset = dataset
        self.base = base
        self.device = torch.device(device)
        self.images = base.images.to(self.device)
        self.labels = base.labels.to(self.device)
        self.positions = indices  # host: maps each epoch's sampler order to base indices before the upload
        self.transform = base.transform.to(self.device)

    def __len__(self) -> int:
        return len(self.dataset)

    def loader(self, batch_size: int, *, seed: int = 0, distributed: bool = False) -> DeviceLoader:
        """One epoch's training batches, as ``build_loader(dataset, batch_size, train=True, seed=seed, ...)``."""
        if batch_size < 1:
            raise UsageError(f"batch size must be positive, got {batch_size}")
        return DeviceLoader(self, batch_size, seed, distributed)


class DeviceLoader:
    """Iterates (images float32 (B, C, H, W), labels int64 (B,)) on the device; full batches only, like the
    training DataLoader (``drop_last`` when the shard holds at least one batch). ``sampler`` is the host sampler
    that orders the epoch (``set_epoch`` under DDP, as for a DataLoader)."""

    def __init__(self, data: DeviceData, batch_size: int, seed: int, distributed: bool) -> None:
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.sampler = build_sampler(data.dataset, train=True, seed=seed, distributed=distributed)
        self.drop_last = len(self.sampler) >= batch_size
        self.params = data.base.augment_params  # this epoch's crops/flips, drawn by build_sampler for ``seed``

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data = self.data
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)  # the same order as the DataLoader
        base = (order if data.positions is None else data.positions[order]).to(data.device)  # one upload per epoch
        params = None if self.params is None else tuple(t.to(data.device) for t in self.params)
        for i in range(len(self)):
            idx = base[i * self.batch_size : (i + 1) * self.batch_size]
            batch = None if params is None else tuple(t[idx] for t in params)
            yield data.transform(data.images[idx], batch), data.labels[idx]
