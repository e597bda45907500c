"""The build backend: setuptools' own, plus the build requirements of the
compiled wire core when ``KWS_MYPYC=1`` asks for it (see ``setup.py``).

``pip install .`` and ``pip wheel .`` build in an isolated environment with
what ``[build-system] requires`` names; mypy (which ships mypyc) is needed
only for the compiled build, so it is added here, on request, as setuptools'
documentation suggests for dynamic build dependencies (an in-tree backend
wrapping ``setuptools.build_meta``). Tornado is there for mypyc's type check
of ``server/mask.py``, which ``server/wire.py`` imports.
"""

from __future__ import annotations

import os

import setuptools.build_meta
from setuptools.build_meta import *  # noqa: F403 - every other hook as setuptools has it

#: What the compiled build needs besides setuptools. mypy's pin is
#: requirements/ci.txt's (tests/test_packaging.py checks); Tornado's range is
#: the project's own dependency.
MYPYC_REQUIRES = ["mypy==2.4.1", "tornado>=6.5,<7"]


def _mypyc_requires() -> list[str]:
    return MYPYC_REQUIRES if os.environ.get("KWS_MYPYC", "0") == "1" else []


# setuptools' own hooks run setup.py to collect its `setup_requires` (this
# project has none), and setup.py needs mypy already there when KWS_MYPYC=1:
# so these return only what this project adds.


def get_requires_for_build_wheel(
    config_settings: dict[str, str | list[str]] | None = None,
) -> list[str]:
    return _mypyc_requires()


def get_requires_for_build_editable(
    config_settings: dict[str, str | list[str]] | None = None,
) -> list[str]:
    return _mypyc_requires()


# An sdist is source: whether the wire core is compiled is decided when a
# wheel is built from it. KWS_MYPYC does not apply to the sdist hooks
# (setup.py would otherwise ask for mypy just to pack the source).


def get_requires_for_build_sdist(
    config_settings: dict[str, str | list[str]] | None = None,
) -> list[str]:
    os.environ.pop("KWS_MYPYC", None)
    return list(setuptools.build_meta.get_requires_for_build_sdist(config_settings))


def build_sdist(
    sdist_directory: str, config_settings: dict[str, str | list[str]] | None = None
) -> str:
    os.environ.pop("KWS_MYPYC", None)
    return str(setuptools.build_meta.build_sdist(sdist_directory, config_settings))
