"""`python -m edgetune` runs the main job (`edgetune finetune`, the README's first command);
with arguments it is the `edgetune` command line (see cli.py)."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:] or ["finetune"]))
