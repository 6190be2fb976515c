"""``python -m sparks.fuzz``: run a fuzz campaign (or, with ``--worker``, be one of its worker processes)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sparks.fuzz", description="Fuzz the .sparks and checkpoint "
                                     "loaders: every mutated file must give the one error type or load and run "
                                     "finitely, within the memory limit and the timeout.")
    parser.add_argument("--kind", choices=("sparks", "checkpoint"), default="sparks",
                        help="file kind [default: sparks]")
    parser.add_argument("--count", type=int, default=2000, help="mutated files [default: 2000]")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed [default: 0]")
    parser.add_argument("--workers", type=int, default=2, help="worker processes [default: 2]")
    parser.add_argument("--memory-gib", type=float, default=3.0, help="address-space limit per worker [default: 3]")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per file [default: 60]")
    parser.add_argument("--json", help="also write the full result to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    parser.add_argument("--memory-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from sparks.fuzz.harness import limit_self, run_campaign, worker

    if args.worker:
        if args.memory_bytes > 0:
            limit_self(args.memory_bytes)
        worker(args.kind, args.seed, args.start, args.stop, Path(args.dir))
        return 0
    result = run_campaign(args.kind, args.count, args.seed, args.workers, int(args.memory_gib * (1 << 30)),
                          args.timeout)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("failures", "by_mutation")}))
    print("by mutation:", json.dumps(result["by_mutation"]))
    for failure in result["failures"]:
        print("FAIL", json.dumps(failure))
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
