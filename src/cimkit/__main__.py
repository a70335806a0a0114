"""``python -m cimkit ...``: the command line (what ``torchrun -m cimkit run ...`` starts on every rank)."""

import sys

from cimkit.cli import main

sys.exit(main())
