"""Build-time only: the compiled form of the wire core, when asked for.

Every piece of metadata is in pyproject.toml; this file adds one thing.
With ``KWS_MYPYC=1`` in the environment, ``pip install .`` / ``pip wheel .``
compile ``server/wire.py`` with mypyc into an extension module
``server.wire`` (needs gcc and the Python headers; mypy comes in through
``_build_backend/backend.py``). ``server/wire.py`` is still shipped beside
it: Python imports the extension first, and the source stays the fallback
(``server.wire.COMPILED`` says which one runs). A failed compilation fails
the build; it never falls back silently. Without ``KWS_MYPYC`` (or with
``KWS_MYPYC=0``) the build is pure Python.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup


def ext_modules() -> list[object]:
    flag = os.environ.get("KWS_MYPYC", "0")
    if flag == "0":
        return []
    if flag != "1":
        sys.exit(f"setup.py: invalid KWS_MYPYC={flag!r}: expected 0 (pure Python) or 1 (mypyc)")
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        sys.exit(f"setup.py: KWS_MYPYC=1 needs mypy (mypyc) in the build environment: {exc}")
    return list(mypycify(["server/wire.py"], opt_level="3"))


setup(ext_modules=ext_modules())
