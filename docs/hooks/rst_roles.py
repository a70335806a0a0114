"""MkDocs hook: drop Sphinx roles (``:func:``, ``:class:``, ...) that docstrings put before code spans.

The docstrings are written for both plain-text readers and the API pages; on the pages the role name
itself is noise, so ``:func:`<code>x</code>``` renders as the code span alone.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:func|class|mod|meth|data|attr|obj|exc):(?=<code>|<a )")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub("", html)
