"""Experiment grids: (method × τ × seed) step-2 runs from shared step-1 checkpoints, recorded in a results CSV kept
in the repository, and the report (tables, paired confidence intervals, plots) written from that CSV alone.

    sparks sweep experiments/cifar10_cpu.yaml --jobs 2        # run what is missing, then report
    sparks sweep experiments/cifar10_cpu.yaml --report-only   # tables and plots from the CSV
    python -m sparks.experiments GRID.yaml ...                # the same command

See docs/experiments.md.
"""
