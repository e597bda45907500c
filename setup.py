"""Build-time only: the compiled form of the wire core, when asked for.

Every piece of metadata is in pyproject.toml; this file adds one thing.
With ``KWS_MYPYC=1`` in the environment, ``pip install .`` / ``pip wheel .``
compile the per-message path with mypyc - ``server/wire.py``,
``server/sendqueue.py`` and ``server/transport.py``, as one group
(``server/speedups__mypyc``: their calls to each other are native) - into
extension modules (needs gcc and the Python headers; mypy comes in through
``_build_backend/backend.py``). The sources are still shipped beside them:
Python imports the extensions first, and the sources stay the fallback
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
    paths = ["server/wire.py", "server/sendqueue.py", "server/transport.py"]
    return list(mypycify(paths, opt_level="3", group_name="server.speedups"))


setup(ext_modules=ext_modules())
