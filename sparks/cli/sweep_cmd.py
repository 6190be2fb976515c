"""``sparks sweep``: run a (method × τ × seed) grid from a grid file, resumably, and write its report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

from sparks.cli.common import print_json
from sparks.errors import UsageError


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [v for v in text.split(",") if v]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="run a method × τ × seed grid (resumable) and write its tables and plots",
        description="Run every step-2 run of GRID.yaml that its results CSV does not hold yet (each in its own "
                    "folder, JOBS at a time), append one CSV row per finished run, then regenerate the report "
                    "section of the grid's doc and its plots from the CSV. See docs/experiments.md.")
    parser.add_argument("grid", metavar="GRID.yaml", help="grid file")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at a time, each a process; 0: one at a time in this process [default: 1]")
    parser.add_argument("--report-only", action="store_true", help="only regenerate tables and plots from the CSV")
    parser.add_argument("--no-report", action="store_true", help="run, but do not rewrite the doc and plots")
    parser.add_argument("--dry-run", action="store_true", help="list the runs still to do and exit")
    parser.add_argument("--methods", type=_names, metavar="A,B", help="only these method labels")
    parser.add_argument("--taus", type=_ints, metavar="T,T", help="only these τ (sign/float are never filtered out)")
    parser.add_argument("--seeds", type=_ints, metavar="S,S", help="only these seeds")
    parser.add_argument("--csv", help="results CSV instead of the grid file's")
    parser.add_argument("--runs-dir", help="folder of the run folders instead of the grid file's")
    parser.add_argument("--step1", metavar="CHECKPOINT", help="step-1 checkpoint instead of the grid file's")
    parser.add_argument("--doc", help="markdown file for the report instead of the grid file's (plots beside it)")
    parser.add_argument("--data", help="dataset folder instead of the grid file's")
    parser.add_argument("--device", help="training device instead of the grid file's (cpu, cuda, ...)")
    parser.add_argument("--json", action="store_true",
                        help='print {"recorded": [..], "skipped": [..], "failed": [..], "diverged": [..]} as JSON '
                             '(progress to stderr)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sparks.experiments.spec import load_grid

    if args.report_only and (args.dry_run or args.no_report):
        raise UsageError("--report-only cannot be combined with --dry-run or --no-report")
    paths = {key: None if value is None else str(Path(value).resolve())  # relative to here, not to the grid file
             for key, value in (("csv", args.csv), ("runs_dir", args.runs_dir), ("step1", args.step1),
                                ("data", args.data), ("doc", args.doc))}
    spec = load_grid(args.grid, {**paths, "device": args.device})
    with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
        status, outcome = _sweep(args, spec)
    if args.json:
        print_json({"grid": spec.name, **({} if outcome is None else dataclasses.asdict(outcome))})
    return status


def _sweep(args: argparse.Namespace, spec: object) -> tuple[int, object]:
    from sparks.experiments.report import write_report
    from sparks.experiments.runner import run_grid

    status, outcome = 0, None
    if not args.report_only:
        outcome = run_grid(spec, jobs=args.jobs, labels=args.methods, taus=args.taus, seeds=args.seeds,
                           dry_run=args.dry_run)
        if args.dry_run:
            return 0, outcome
        print(f"grid {spec.name}: {len(outcome.recorded)} recorded, {len(outcome.skipped)} skipped, "
              f"{len(outcome.diverged)} diverged, {len(outcome.failed)} failed")
        for diverged in outcome.diverged:
            print(f"  diverged: {diverged}")
        for failed in outcome.failed:
            print(f"  failed: {failed}")
        status = 1 if outcome.failed or outcome.diverged else 0
    if not args.no_report:
        write_report(spec.name, spec.csv, spec.doc, spec.plots, spec.compare)
        print(f"report: {spec.doc} (section {spec.name}), plots {spec.plots}_bits.png and {spec.plots}_bops.png")
    return status, outcome
