"""``sparks eval``: top-1/top-5 accuracy of a checkpoint on a dataset split (the val split of its training run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sparks.cli.common import add_json, add_threads, positive_float, positive_int, print_json, seed_int, set_threads


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint (top-1/top-5)",
                                   description="Evaluate a sparks checkpoint on the val or test split. Dataset, "
                                   "val fraction and seed default to those of the checkpoint's training run.")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file (e.g. OUT/best.pt)")
    parser.add_argument("--dataset", help="dataset name [default: the checkpoint's]")
    parser.add_argument("--data", help="dataset directory [default: the checkpoint's, else the standard location]")
    parser.add_argument("--split", choices=("val", "test"), default="test", help="split to evaluate [default: test]")
    parser.add_argument("--val-fraction", type=positive_float, help="validation fraction [default: the checkpoint's]")
    parser.add_argument("--seed", type=seed_int, help="seed of the validation split [default: the checkpoint's]")
    parser.add_argument("--subset", type=positive_int, help="only the first N examples [default: the checkpoint's]")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="evaluation batch size [default: 256]")
    parser.add_argument("--workers", type=int, default=0, help="data-loader worker processes [default: 0]")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto [default: auto]")
    add_threads(parser)
    add_json(parser, '{"split", "top1", "top5", "n"}')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparks.errors import UsageError
    from sparks.train.checkpoint import load_checkpoint, model_from_checkpoint
    from sparks.train.data import DATASETS, build_datasets
    from sparks.train.distributed import DistInfo, resolve_device
    from sparks.train.evaluation import evaluate

    if args.workers < 0:
        raise UsageError(f"--workers must be an integer >= 0, got {args.workers}")
    if args.val_fraction is not None and args.val_fraction >= 1:
        raise UsageError(f"--val-fraction must be a number in [0, 1), got {args.val_fraction}")
    set_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    stored = dict(state.get("config") or {})
    dataset = args.dataset or stored.get("dataset")
    if dataset is None:
        raise UsageError(f"{args.checkpoint} does not record its dataset; pass --dataset")
    if dataset not in DATASETS:
        raise UsageError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    pick = {name: getattr(args, name) if getattr(args, name) is not None else stored.get(name)
            for name in ("data", "val_fraction", "seed", "subset")}
    if args.seed is None and stored.get("split_seed") is not None:
        pick["seed"] = stored["split_seed"]  # the run's validation split was drawn with split_seed, not its seed
    if args.data is not None and not Path(args.data).is_dir():
        raise UsageError(f"data directory {args.data} does not exist")
    device = resolve_device(args.device)
    model = model_from_checkpoint(state, args.checkpoint).to(device).eval()
    data = build_datasets(dataset, pick["data"], val_fraction=pick["val_fraction"] or 0.0, subset=pick["subset"],
                          seed=pick["seed"] or 0, augment=False, image_size=stored.get("image_size", 224))
    split = getattr(data, args.split)
    if split is None:
        raise UsageError(f"dataset {dataset!r} has no {args.split} split"
                         + (" (pass --val-fraction)" if args.split == "val" else ""))
    result = evaluate(model, split, batch_size=args.batch_size, workers=args.workers,
                      amp=stored.get("amp", "auto"), info=DistInfo(device=device))
    if args.json:
        print_json({"split": args.split, "top1": result["top1"], "top5": result["top5"], "n": result["n"]})
    else:
        print(f"{args.split}: top-1 {result['top1']:.2f}%  top-5 {result['top5']:.2f}%  (n={result['n']})")
    return 0
