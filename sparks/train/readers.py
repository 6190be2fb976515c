"""Readers of the dataset files on disk, bounded before they allocate: Fashion-MNIST's IDX files (optionally
gzipped) and CIFAR-10's python batches (through a restricted unpickler that builds only plain containers and numpy
arrays)."""

from __future__ import annotations

import math
import os
import pickle
import zlib
from pathlib import Path

import numpy as np
import torch

from sparks.errors import UsageError
from sparks.limits import Limits, check_size, resolve

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned-byte labels (1-D) and images (3-D)


def read_idx(path: str | os.PathLike, ndim: int, limits: Limits | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (optionally gzipped) with ``ndim`` dimensions; ``UsageError`` if corrupt.
    The file and its gunzipped size are bounded by ``limits.max_data_bytes`` (no gzip bomb)."""
    path, cap = Path(path), resolve(limits).max_data_bytes
    try:
        check_size(f"{path}: file size", path.stat().st_size, cap, "max_data_bytes", UsageError)
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = zlib.decompressobj(wbits=31).decompress(raw, cap + 1)
            check_size(f"{path}: decompressed size", len(raw), cap, "max_data_bytes", UsageError)
    except (OSError, EOFError, zlib.error) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != _IDX_MAGIC[ndim]:
        raise UsageError(f"{path} is not an IDX file of {ndim}-D unsigned bytes (bad magic number)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + math.prod(shape):
        raise UsageError(f"{path} is truncated or corrupt: header says {shape}, {len(raw) - header} data bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _idx_pair(root: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    files = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        name = f"{prefix}-{kind}"
        found = next((root / n for n in (name + ".gz", name) if (root / n).is_file()), None)
        if found is None:
            raise UsageError(f"fashion-mnist: {root / (name + '.gz')} not found")
        files.append(found)
    images, labels = read_idx(files[0], 3), read_idx(files[1], 1)
    if len(images) != len(labels):
        raise UsageError(f"fashion-mnist: {files[0].name} has {len(images)} images but {files[1].name} has "
                         f"{len(labels)} labels")
    if labels.max(initial=0) >= 10:
        raise UsageError(f"fashion-mnist: {files[1]} has a label outside 0..9")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(root: str | os.PathLike) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple | None]:
    """((train images, labels), (test images, labels) or None) from the IDX files in ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"fashion-mnist not found at {root}: apt-get install dataset-fashion-mnist, or give the "
                         f"folder holding train-images-idx3-ubyte.gz")
    train = _idx_pair(root, "train")
    has_test = any((root / f"t10k-images-idx3-ubyte{ext}").is_file() for ext in (".gz", ""))
    return train, _idx_pair(root, "t10k") if has_test else None


# ----------------------------------------------------------------------------------------------------------- CIFAR-10


def _safe_dtype(*args: object) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError("object arrays are not allowed")
    return dtype


try:  # numpy >= 2 moved numpy.core to numpy._core; the official files name numpy.core.multiarray
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _safe_dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR-10 batches: plain types plus numpy array reconstruction, nothing else."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR-10 batch") from None


def read_cifar_pickle(path: str | os.PathLike) -> dict[str, object]:
    """Load one CIFAR-10 batch file with :class:`RestrictedUnpickler`; keys decoded to str; ``UsageError`` if bad."""
    try:
        check_size(f"{path}: file size", Path(path).stat().st_size, resolve().max_data_bytes, "max_data_bytes",
                   UsageError)
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f, encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - any failure of the restricted unpickler means a bad file
        raise UsageError(f"cannot read CIFAR-10 batch {path}: {err}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path} is not a CIFAR-10 batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batch = read_cifar_pickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        raise UsageError(f"{path}: 'data' is not a uint8 array of N×3072 pixels")
    if not isinstance(labels, list) or len(labels) != len(data) or not all(isinstance(v, int) for v in labels):
        raise UsageError(f"{path}: 'labels' is not a list of {len(data)} ints")
    y = np.asarray(labels, dtype=np.int64)
    if len(y) and (y.min() < 0 or y.max() >= 10):
        raise UsageError(f"{path}: a label is outside 0..9")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(y)


def cifar10_folder(root: str | os.PathLike) -> Path:
    """The folder holding ``data_batch_1``: ``root/cifar-10-batches-py`` or ``root`` itself."""
    root = Path(root)
    for folder in (root / "cifar-10-batches-py", root):
        if (folder / "data_batch_1").is_file():
            return folder
    raise UsageError(f"cifar10 not found at {root} (no cifar-10-batches-py/data_batch_1): write it with "
                     f"`python ../shared/data/cifar10/expand.py {root}` or download the official python version")


def load_cifar10(root: str | os.PathLike) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple | None, list[str]]:
    """((train images, labels), (test images, labels) or None, class names) from the official python batches."""
    folder = cifar10_folder(root)
    parts = []
    for i in range(1, 6):
        path = folder / f"data_batch_{i}"
        if not path.is_file():
            raise UsageError(f"cifar10: {path} not found (the training set has data_batch_1..5)")
        parts.append(_cifar_batch(path))
    train = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    test = _cifar_batch(folder / "test_batch") if (folder / "test_batch").is_file() else None
    names = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        meta_names = read_cifar_pickle(folder / "batches.meta").get("label_names")
        if isinstance(meta_names, list) and len(meta_names) == 10:
            names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in meta_names]
    return train, test, list(names)


# -------------------------------------------------------------------------------------------------------- imagefolder
