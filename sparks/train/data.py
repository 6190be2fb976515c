"""Datasets for training on real data: Fashion-MNIST (IDX files), CIFAR-10 (python batches), ImageNet-style folders.

``build_datasets(name, root, ...)`` returns the train/val/test splits with their transforms; ``build_loader`` wraps
one in a ``DataLoader``. The two small sets live in memory as uint8 tensors, and their augmentation (random crop with
zero padding, horizontal flip, normalisation) is done for a whole batch at once with one gather (``__getitems__``), so
loading costs a few milliseconds per batch and the 2-core machine stays busy with the model.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
)

from sparks.errors import UsageError
from sparks.train.readers import (  # noqa: F401  (re-exported: the readers are part of the data API)
    CIFAR10_CLASSES,
    cifar10_folder,
    load_cifar10,
    load_fashion_mnist,
    read_cifar_pickle,
    read_idx,
)

DATASETS: tuple[str, ...] = ("fashion-mnist", "cifar10", "imagefolder")
DEFAULT_ROOTS: dict[str, str] = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",
    "cifar10": "data/cifar10",
    "imagefolder": "data/imagenet",
}

# Per-channel mean/std of the training images, in [0, 1] units (the values the literature uses).
FASHION_MNIST_STATS = ((0.2860,), (0.3530,))
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]

# Padding of the random crop and whether to flip horizontally, per small dataset. Fashion-MNIST: 2 px (of 28) and
# flips: a garment's class does not depend on its left-right orientation, and crop+flip is the usual FMNIST recipe.
AUGMENT = {"fashion-mnist": (2, True), "cifar10": (4, True)}


@dataclass
class DatasetSplits:
    """The splits of one dataset and what a model needs to know about its inputs."""

    train: Dataset  # with training augmentation
    val: Dataset | None  # carved from the training set when val_fraction > 0 (eval transform)
    test: Dataset | None  # official test set when present (fashion-mnist t10k; cifar10 test_batch; imagefolder val/)
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]  # (H, W)
    class_names: list[str]


# ----------------------------------------------------------------------------------------------- batched transforms


class BatchTransform:
    """uint8 images (B, C, H, W) → normalised float32, with optional random crop (zero padding) and horizontal flip.

    Crop and flip work on the whole batch at once (no per-image Python), on whatever device the images are. The
    random crop offsets and flips are either given (``params``: one row per image, see :meth:`draw`) or drawn from
    torch's global generator. The training loaders draw them once per epoch for every image with a generator
    seeded by (seed, epoch) (:meth:`TensorImages.set_augment_seed`), so batches do not depend on the worker count,
    and the device-resident loader (:mod:`sparks.train.device_data`) reproduces them bit for bit.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], padding: int = 0, flip: bool = False) -> None:
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.shift = -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t
        self.padding = padding
        self.flip = flip

    @property
    def augments(self) -> bool:
        return bool(self.padding or self.flip)

    def to(self, device: torch.device | str) -> BatchTransform:
        """A copy whose normalisation constants live on ``device`` (no per-batch host→device copy)."""
        out = copy.copy(self)
        out.scale, out.shift = self.scale.to(device), self.shift.to(device)
        return out

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Random (top, left, flipped) for ``n`` images: crop offsets in [0, 2·padding], flips with probability ½."""
        span = 2 * self.padding + 1
        top = torch.randint(0, span, (n,), generator=generator)
        left = torch.randint(0, span, (n,), generator=generator)
        flipped = torch.rand(n, generator=generator) < 0.5
        return top, left, flipped

    def __call__(self, images: torch.Tensor, params: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        if self.augments:
            images = self.crop_flip(images, *(params if params is not None else self.draw(len(images))))
        return images.float().mul_(self.scale.to(images.device)).add_(self.shift.to(images.device))

    def crop_flip(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                  flipped: torch.Tensor) -> torch.Tensor:
        """Each image's (2p+1)²-position crop window at (top, left) of its zero-padded copy, flipped where asked."""
        b, _, h, w = images.shape
        p = self.padding
        if p:  # every (2p+1)² crop position as a view, then one gather of each image's own window
            windows = torch.nn.functional.pad(images, (p, p, p, p)).unfold(2, h, 1).unfold(3, w, 1)
            images = windows[torch.arange(b, device=images.device), :, top, left]
        if self.flip:
            images = torch.where(flipped.view(b, 1, 1, 1), images.flip(-1), images)
        return images

    def __repr__(self) -> str:
        return f"BatchTransform(padding={self.padding}, flip={self.flip})"


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch ops single-threaded: a batch of small images gains nothing from intra-op threads, and on a busy
    2-core machine each parallel region waits for a descheduled thread (measured ~50× slower; docs/benchmarks.md)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class TensorImages(Dataset):
    """In-memory images, uint8 Tensor[N, C, H, W], with int64 labels; items are (float image, int label).

    ``__getitems__`` (which ``DataLoader`` calls with a whole batch of indices) transforms the batch at once.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: BatchTransform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.augment_params: tuple[torch.Tensor, ...] | None = None

    def set_augment_seed(self, seed: int | None) -> None:
        """Draw every image's crop/flip for one epoch from a generator seeded with ``seed`` (None: global RNG)."""
        self.augment_params = None
        if seed is not None and self.transform.augments:
            self.augment_params = self.transform.draw(len(self), torch.Generator().manual_seed(seed))

    def _params(self, index: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        return None if self.augment_params is None else tuple(t[index] for t in self.augment_params)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = range(len(self))[index]  # negative indices; IndexError past the end
        with _one_thread():
            params = self._params(torch.tensor([index]))
            return self.transform(self.images[index : index + 1], params)[0], int(self.labels[index])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        with _one_thread():
            index = torch.as_tensor(indices, dtype=torch.int64)
            images = self.transform(self.images[index], self._params(index))
            return list(zip(images.unbind(0), self.labels[index].tolist(), strict=True))


# ------------------------------------------------------------------------------------------------------ Fashion-MNIST

def _imagefolder_splits(root: Path, image_size: int, augment: bool):
    try:
        from torchvision import datasets, transforms
    except ImportError:
        raise UsageError("dataset 'imagefolder' needs torchvision: pip install 'sparks[vision]'") from None
    except (RuntimeError, OSError) as err:  # e.g. a torchvision build for another torch version
        raise UsageError(f"dataset 'imagefolder': torchvision is installed but fails to import ({err}); install the "
                         f"build that matches torch {torch.__version__}") from None
    if not (root / "train").is_dir():
        raise UsageError(f"imagefolder: {root / 'train'} not found (expected root/train/<class>/*.JPEG)")
    normalize = transforms.Normalize(*IMAGENET_STATS)
    eval_tf = transforms.Compose([transforms.Resize(int(round(256 / 224 * image_size))),
                                  transforms.CenterCrop(image_size), transforms.ToTensor(), normalize])
    train_tf = transforms.Compose([transforms.RandomResizedCrop(image_size, scale=(0.08, 1.0)),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize])
    try:
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf if augment else eval_tf)
        test = datasets.ImageFolder(str(root / "val"), transform=eval_tf) if (root / "val").is_dir() else None
    except (FileNotFoundError, RuntimeError) as err:
        raise UsageError(f"imagefolder: {err}") from None
    if test is not None and test.classes != train.classes:
        raise UsageError(f"imagefolder: {root / 'val'} and {root / 'train'} have different class folders")
    evaluated = _with_transform(train, eval_tf)
    return train, evaluated, test, train.classes


def _with_transform(dataset, transform):
    """A shallow copy of a torchvision dataset with another transform (shares the file list)."""
    clone = copy.copy(dataset)
    clone.transform = transform
    return clone


# ------------------------------------------------------------------------------------------------------------ builders


def _split_indices(n: int, val_fraction: float, subset: int | None, seed: int):
    """(train indices or None for all, val indices or None): seeded random val split, then the first ``subset``."""
    if not 0.0 <= val_fraction < 1.0:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if subset is not None and subset < 1:
        raise UsageError(f"subset must be a positive number of images, got {subset}")
    train_idx, val_idx = None, None
    if val_fraction > 0:
        n_val = max(1, int(round(n * val_fraction)))
        if n_val >= n:
            raise UsageError(f"val_fraction {val_fraction} leaves no training images out of {n}")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        is_val = torch.zeros(n, dtype=torch.bool)
        is_val[perm[:n_val]] = True
        val_idx = torch.nonzero(is_val).flatten().tolist()
        train_idx = torch.nonzero(~is_val).flatten().tolist()
    if subset is not None and subset < (n if train_idx is None else len(train_idx)):
        train_idx = list(range(subset)) if train_idx is None else train_idx[:subset]
    return train_idx, val_idx


def _subset(dataset: Dataset, indices: list[int] | None) -> Dataset:
    return dataset if indices is None else Subset(dataset, indices)


def build_datasets(name: str, root: str | None = None, *, val_fraction: float = 0.0, subset: int | None = None,
                   seed: int = 0, augment: bool = True, image_size: int = 224) -> DatasetSplits:
    """Train (augmented unless ``augment=False``), optional val (seeded split of train) and test sets of ``name``.

    ``val_fraction``: share of the training images held out (random with ``seed``; eval transform).
    ``subset``: keep the first N training images after the split (smoke runs). ``image_size``: imagefolder only.
    """
    if name not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    path = Path(root if root is not None else DEFAULT_ROOTS[name]).expanduser()
    if name == "imagefolder":
        if image_size < 1:
            raise UsageError(f"image size must be positive, got {image_size}")
        train, evaluated, test, classes = _imagefolder_splits(path, image_size, augment)
        train_idx, val_idx = _split_indices(len(train), val_fraction, subset, seed)
        val = None if val_idx is None else Subset(evaluated, val_idx)
        return DatasetSplits(_subset(train, train_idx), val, test, len(classes), 3, (image_size, image_size),
                             list(classes))
    if name == "fashion-mnist":
        (images, labels), test_pair = load_fashion_mnist(path)
        stats, classes = FASHION_MNIST_STATS, FASHION_MNIST_CLASSES
    else:
        (images, labels), test_pair, classes = load_cifar10(path)
        stats = CIFAR10_STATS
    padding, flip = AUGMENT[name] if augment else (0, False)
    eval_tf = BatchTransform(*stats)
    train_idx, val_idx = _split_indices(len(labels), val_fraction, subset, seed)
    train = _subset(TensorImages(images, labels, BatchTransform(*stats, padding=padding, flip=flip)), train_idx)
    val = None if val_idx is None else Subset(TensorImages(images, labels, eval_tf), val_idx)
    test = None if test_pair is None else TensorImages(*test_pair, eval_tf)
    return DatasetSplits(train, val, test, len(classes), images.shape[1], tuple(images.shape[2:]), list(classes))


def _base_dataset(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def default_workers(dataset: Dataset) -> int:
    """In-memory sets: 0 on CPU-only machines (batched augmentation costs ≤ 0.1 % of a train step; a worker process
    would compete with the model for the 2 cores), 2 with CUDA so loading overlaps the GPU. Image folders (JPEG
    decoding): one worker per CPU but one, at most 8."""
    if isinstance(_base_dataset(dataset), TensorImages):
        return 2 if torch.cuda.is_available() else 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus - 1))


def build_sampler(dataset: Dataset, *, train: bool, seed: int = 0, distributed: bool = False) -> Sampler:
    """The sampler of :func:`build_loader`: seeded shuffle (train), in order (eval), sharded under DDP."""
    base = _base_dataset(dataset)
    if train and isinstance(base, TensorImages):
        base.set_augment_seed(seed)
    if distributed:
        return DistributedSampler(dataset, shuffle=train, seed=seed)
    if train:
        return RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    return SequentialSampler(dataset)


def build_loader(dataset: Dataset, batch_size: int, *, train: bool, workers: int | None = None, seed: int = 0,
                 distributed: bool = False) -> DataLoader:
    """A DataLoader: shuffled (seeded) with full batches only when ``train``, in order otherwise.

    ``distributed``: a ``DistributedSampler`` (call ``loader.sampler.set_epoch(epoch)`` each epoch).
    ``workers``: worker processes; ``None`` picks :func:`default_workers`. Training on an in-memory set also seeds
    its augmentation with ``seed`` (:meth:`TensorImages.set_augment_seed`).
    """
    if batch_size < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    workers = default_workers(dataset) if workers is None else workers
    if workers < 0:
        raise UsageError(f"workers must be >= 0, got {workers}")
    sampler = build_sampler(dataset, train=train, seed=seed, distributed=distributed)
    per_replica = len(sampler)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=train and per_replica >= batch_size, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0, generator=torch.Generator().manual_seed(seed + 1))
