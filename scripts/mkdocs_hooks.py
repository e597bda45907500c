"""MkDocs hooks (``hooks:`` in mkdocs.yml).

The docstrings use Sphinx's roles (``:class:`Service```, ``:meth:`close```),
which mkdocstrings leaves as they are: ``:class:`` then the name as code.
Keep the code, drop the role."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|data|mod|attr|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub("", html)
