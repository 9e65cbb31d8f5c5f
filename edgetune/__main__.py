"""`python -m edgetune` runs the command line (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
