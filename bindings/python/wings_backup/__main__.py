"""``python -m wings_backup``: see :mod:`wings_backup.cli`."""

import sys

from .cli import main

sys.exit(main(prog="python -m wings_backup"))
