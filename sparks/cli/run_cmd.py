"""``sparks run``: accuracy and images/s of a ``.sparks`` model on the packed CPU engine."""

from __future__ import annotations

import argparse
import json
import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a .sparks model on a dataset (packed engine)",
                                   description="Run an exported .sparks model with the packed CPU engine on a "
                                   "dataset split; print top-1 accuracy and throughput.")
    parser.add_argument("--model", required=True, help=".sparks file from `sparks export`")
    parser.add_argument("--dataset", required=True, help="dataset: fashion-mnist, cifar10 or imagefolder")
    parser.add_argument("--data", help="dataset directory [default: the dataset's standard location]")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test", help="split [default: test]")
    parser.add_argument("--batch-size", type=int, default=256, help="images per engine call [default: 256]")
    parser.add_argument("--limit", type=int, help="only the first N images")
    parser.add_argument("--runtime", choices=("packed", "torch"), default="packed",
                        help="engine [default: packed]; torch runs the rebuilt PyTorch module")
    parser.add_argument("--threads", type=int, help="numba threads [default: all cores]")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from sparks.deploy.format import read_sparks
    from sparks.deploy.rebuild import torch_model
    from sparks.errors import UsageError
    from sparks.runtime import PackedModel
    from sparks.train.data import build_datasets

    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise UsageError(f"--batch-size and --limit must be positive, got {args.batch_size} and {args.limit}")
    if args.threads is not None:
        _set_threads(args.threads)
    meta, tensors = read_sparks(args.model)
    data = build_datasets(args.dataset, args.data, augment=False, val_fraction=0.1 if args.split == "val" else 0.0)
    split = getattr(data, args.split)
    if split is None:
        raise UsageError(f"dataset {args.dataset!r} has no {args.split} split")
    channels = meta["input"]["channels"]
    if channels != data.in_channels or meta["num_classes"] < data.num_classes:
        raise UsageError(f"{args.model} takes {channels}-channel images and gives {meta['num_classes']} logits; "
                         f"{args.dataset} has {data.in_channels}-channel images in {data.num_classes} classes")
    model = PackedModel(meta, tensors) if args.runtime == "packed" else torch_model(meta, tensors)
    n = len(split) if args.limit is None else min(args.limit, len(split))
    correct, seconds = 0, 0.0
    loader = DataLoader(Subset(split, range(n)), batch_size=args.batch_size, shuffle=False)
    for x, labels in loader:
        t0 = time.perf_counter()
        if args.runtime == "packed":
            logits = model(x.numpy())
        else:
            with torch.no_grad():
                logits = model(x).numpy()
        seconds += time.perf_counter() - t0
        correct += int((np.argmax(logits, 1) == np.asarray(labels)).sum())
    result = {"top1": 100.0 * correct / max(n, 1), "n": n, "images_per_s": n / seconds if seconds else None,
              "runtime": args.runtime, "batch_size": args.batch_size}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.split}: top-1 {result['top1']:.2f}% (n={n}), {result['images_per_s']:.1f} images/s "
              f"({args.runtime} engine, batch {args.batch_size})")
    return 0


def _set_threads(threads: int) -> None:
    import numba

    from sparks.errors import UsageError

    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise UsageError(f"--threads must be in 1..{numba.config.NUMBA_NUM_THREADS}, got {threads}")
    numba.set_num_threads(threads)
