"""``sparks run``: accuracy and images/s of a ``.sparks`` model (``sparks.load``: packed CPU engine by default)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from sparks.cli.common import add_json, add_threads, positive_int, print_json, set_threads
from sparks.deploy.load import DEFAULT_RUNTIME, RUNTIMES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run a .sparks model on a dataset (packed engine)",
                                   description="Run an exported .sparks model (sparks.load) on a dataset split; "
                                   "print top-1 and top-5 accuracy and throughput. --split val is the validation "
                                   "split the model was trained with, as recorded by `sparks export`.")
    parser.add_argument("--model", required=True, help=".sparks file from `sparks export`")
    parser.add_argument("--dataset", help="dataset: fashion-mnist, cifar10 or imagefolder [default: the model's]")
    parser.add_argument("--data", help="dataset directory [default: the dataset's standard location]")
    parser.add_argument("--split", choices=("test", "val", "train"), default="test", help="split [default: test]")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="images per engine call [default: 256]")
    parser.add_argument("--limit", type=positive_int, help="only the first N images [default: all]")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                        help=f"engine; torch runs the rebuilt PyTorch module [default: {DEFAULT_RUNTIME}]")
    add_threads(parser)
    add_json(parser, '{"split", "top1", "top5", "n", "images_per_s", ...}')
    parser.set_defaults(func=run)


def split_options(metadata: dict[str, Any], dataset: str, split: str, model: str) -> dict[str, Any]:
    """``build_datasets`` options for ``split``: for ``val``, the split recorded in the file (or a UsageError)."""
    from sparks.errors import UsageError

    if split != "val":
        return {"val_fraction": 0.0}
    record = ((metadata.get("training") or {}).get("data")) if isinstance(metadata.get("training"), dict) else None
    if not isinstance(record, dict) or not record.get("dataset"):
        raise UsageError(f"{model} does not record the split it was trained with; use --split test (or re-export it "
                         "from its checkpoint with this sparks version)")
    if record["dataset"] != dataset:
        raise UsageError(f"{model} was trained on {record['dataset']}, so it has no val split of {dataset}")
    if not record.get("val_fraction"):
        raise UsageError(f"{model} was trained on all training images of {dataset} (no val split); use --split test")
    return {"val_fraction": float(record["val_fraction"]), "seed": int(record.get("seed") or 0),
            "subset": record.get("subset")}


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Subset

    from sparks.deploy.load import load
    from sparks.errors import UsageError
    from sparks.filekind import expect_sparks
    from sparks.train.data import build_datasets

    set_threads(args.threads)
    expect_sparks(args.model)
    model = load(args.model, runtime=args.runtime)
    meta = model.metadata
    recorded = ((meta.get("training") or {}).get("data") or {}) if isinstance(meta.get("training"), dict) else {}
    dataset = args.dataset or (recorded.get("dataset") if isinstance(recorded, dict) else None)
    if not dataset:
        raise UsageError(f"{args.model} does not record its dataset; pass --dataset")
    data = build_datasets(dataset, args.data, augment=False, **split_options(meta, dataset, args.split, args.model))
    split = getattr(data, args.split)
    if split is None:
        raise UsageError(f"dataset {dataset!r} has no {args.split} split")
    channels = meta["input"]["channels"]
    if channels != data.in_channels or meta["num_classes"] < data.num_classes:
        raise UsageError(f"{args.model} takes {channels}-channel images and gives {meta['num_classes']} logits; "
                         f"{dataset} has {data.in_channels}-channel images in {data.num_classes} classes")
    n = len(split) if args.limit is None else min(args.limit, len(split))
    correct1 = correct5 = 0
    seconds = 0.0
    for x, labels in DataLoader(Subset(split, range(n)), batch_size=args.batch_size, shuffle=False):
        t0 = time.perf_counter()
        if args.runtime == "torch":
            with torch.no_grad():
                logits = model(x).numpy()
        else:
            logits = model(x.numpy())
        seconds += time.perf_counter() - t0
        labels = np.asarray(labels)
        top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        correct1 += int((top5[:, 0] == labels).sum())
        correct5 += int((top5 == labels[:, None]).any(axis=1).sum())
    result = {"split": args.split, "dataset": dataset, "top1": 100.0 * correct1 / max(n, 1),
              "top5": 100.0 * correct5 / max(n, 1), "n": n, "images_per_s": n / seconds if seconds else None,
              "runtime": args.runtime, "batch_size": args.batch_size}
    if args.json:
        print_json(result)
    else:
        print(f"{args.split}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  (n={n}), "
              f"{result['images_per_s']:.1f} images/s ({args.runtime} engine, batch {args.batch_size})")
    return 0
