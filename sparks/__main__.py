"""``python -m sparks`` (and ``torchrun -m sparks train ...``) runs the command line."""

import sys

from sparks.cli import main

sys.exit(main())
