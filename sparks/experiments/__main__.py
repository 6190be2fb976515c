"""``python -m sparks.experiments GRID.yaml [options]``: the same as ``sparks sweep``."""

import sys

from sparks.cli import main

sys.exit(main(["sweep", *sys.argv[1:]]))
