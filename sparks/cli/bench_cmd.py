"""``sparks bench``: per-layer and whole-model speed of a ``.sparks`` model, packed engine vs torch fp32 eager."""

from __future__ import annotations

import argparse

from sparks.cli.common import add_json, add_threads, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bench", help="time a .sparks model: packed engine vs torch fp32",
                                   description="Time each sub-bit layer (torch conv2d, packed xor-popcount, "
                                   "codeword-reuse LUT) and the whole model at batch 1 and 32 against the torch "
                                   "fp32 module of the same file, interleaved in one run.")
    parser.add_argument("--model", required=True, help=".sparks file from `sparks export`")
    add_json(parser)
    add_threads(parser)
    parser.add_argument("--repeats", type=int, default=10, help="timed whole-model repeats [default: 10]")
    parser.add_argument("--layer-repeats", type=int, default=20, help="timed repeats per layer [default: 20]")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="wall clock, or CPU time of the calling thread (needs --threads 1; robust on a shared "
                        "machine) [default: wall]")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32],
                        help="whole-model batch sizes [default: 1 32]")
    parser.add_argument("--profile", action="store_true",
                        help="instead: time each step of the packed engine (one thread) at --batch-sizes, with the "
                        "binary MAC rate of each sub-bit conv against the kernel's inner-loop peak")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numba

    from sparks.bench.modelbench import bench_model, format_bench
    from sparks.errors import UsageError
    from sparks.filekind import expect_sparks

    threads = numba.config.NUMBA_NUM_THREADS if args.threads is None else args.threads  # auto: all cores
    if not 1 <= threads <= numba.config.NUMBA_NUM_THREADS:
        raise UsageError(f"--threads must be in 1..{numba.config.NUMBA_NUM_THREADS}, got {threads}")
    expect_sparks(args.model)
    if args.repeats < 1 or args.layer_repeats < 1 or min(args.batch_sizes) < 1:
        raise UsageError("--repeats, --layer-repeats and --batch-sizes must be positive")
    if args.profile:
        from sparks.bench.profile import format_profile, profile_model

        result = profile_model(args.model, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats)
        if args.json:
            print_json(result)
        else:
            print(format_profile(result))
        return 0
    result = bench_model(args.model, threads=threads, repeats=args.repeats, layer_repeats=args.layer_repeats,
                         batch_sizes=tuple(args.batch_sizes), clock=args.clock)
    if args.json:
        print_json(result)
    else:
        print(format_bench(result))
    return 0
