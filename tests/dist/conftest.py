"""Multi-process tests: the rank functions live in ``dist_workers`` (importable by name, which the
``spawn`` start method needs: it re-imports the function in each fresh process from ``sys.path``)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
