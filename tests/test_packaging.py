"""The package, built the two ways it ships: ``pip wheel .`` gives the
pure-Python core; ``KWS_MYPYC=1 pip wheel .`` compiles ``server/wire.py``
with mypyc (``setup.py``, ``_build_backend/backend.py``) and still ships the
source beside the extension. The Dockerfile's build stage relies on the
second, offline; so do these tests: real pip, real setuptools, real mypyc
and gcc, in pip's isolated build environment, installing only from
``wheels/`` (``PIP_NO_INDEX=1``, as ``docker build --build-arg
PIP_NO_INDEX=1`` does). A failed compilation must fail the build, never fall
back to the source silently.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from .conftest import requirement_pins

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "wheels"
#: What the Dockerfile copies into the build context for the package.
SOURCES = ["pyproject.toml", "setup.py", "README.md", "LICENSE", "_build_backend", "server"]


def _have_wheel(name: str, version: str) -> bool:
    stem = re.sub(r"[-_.]+", "_", name).lower()
    return any(p.name.lower().startswith(f"{stem}-{version}-") for p in WHEELS.glob("*.whl"))


@pytest.fixture(scope="module")
def wheels() -> Path:
    """wheels/ with the runtime and build pins (scripts/build-wheels.sh, which
    downloads from the package index as scripts/setup.sh does, when any is missing)."""
    wanted = {
        **requirement_pins(ROOT / "requirements/runtime.txt"),
        **requirement_pins(ROOT / "requirements/build.txt"),
    }
    if not all(_have_wheel(n, v) for n, v in wanted.items()):
        subprocess.run(
            ["scripts/build-wheels.sh"],
            cwd=ROOT,
            env={**os.environ, "PYTHON": sys.executable},
            capture_output=True,
            timeout=300,
            check=True,
        )
    missing = [f"{n}=={v}" for n, v in wanted.items() if not _have_wheel(n, v)]
    assert not missing, missing
    return WHEELS


def build(
    tmp_path: Path, wheels: Path, mypyc: str | None, replace: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``pip wheel --no-deps .`` on a copy of the package's sources (some
    files' text replaced), offline."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so")
            )
        else:
            shutil.copy(ROOT / name, src / name)
    for name, text in (replace or {}).items():
        (src / name).write_text(text)
    env = {
        **os.environ,
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheels),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_CACHE_DIR": "1",
    }
    env.pop("KWS_MYPYC", None)
    if mypyc is not None:
        env["KWS_MYPYC"] = mypyc
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), "."],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def the_wheel(tmp_path: Path) -> Path:
    [wheel] = (tmp_path / "dist").glob("knative_websocket_server-*.whl")
    return wheel


def no_wheel(tmp_path: Path) -> bool:
    return not list((tmp_path / "dist").glob("*.whl"))


def import_from(wheel: Path, tmp_path: Path) -> dict[str, object]:
    """Import server.wire from the unpacked wheel (the test environment gives
    Tornado) and report which form ran."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    probe = (
        "import json, server.wire as w; "
        "print(json.dumps({'compiled': w.COMPILED, 'file': w.__file__, "
        "'accept': w.accept_key('dGhlIHNhbXBsZSBub25jZQ==')}))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=site,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(run.stdout)
    assert str(report["file"]).startswith(str(site)), report
    # RFC 6455 section 1.3's example.
    assert report["accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    return report


def test_a_plain_build_is_pure_python(tmp_path: Path, wheels: Path) -> None:
    result = build(tmp_path, wheels, None)
    assert result.returncode == 0, result.stderr
    wheel = the_wheel(tmp_path)
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "server/wire.py" in names
    assert not [n for n in names if n.endswith(".so")], names
    assert import_from(wheel, tmp_path)["compiled"] is False


@pytest.mark.timeout(900)
def test_kws_mypyc_1_builds_the_compiled_wire_core_beside_its_source(
    tmp_path: Path, wheels: Path
) -> None:
    result = build(tmp_path, wheels, "1")
    assert result.returncode == 0, result.stderr
    wheel = the_wheel(tmp_path)
    # A wheel for this interpreter and platform, not py3-none-any.
    tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
    assert tag in wheel.name, wheel.name
    assert "-none-any" not in wheel.name, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "server/wire.py" in names  # the source and fallback ships too
    for module in ("wire", "sendqueue", "transport", "speedups__mypyc"):
        assert [n for n in names if re.fullmatch(rf"server/{module}\..*\.so", n)], names
    assert "server/transport.py" in names
    assert "server/sendqueue.py" in names
    report = import_from(wheel, tmp_path)
    assert report["compiled"] is True, report
    assert str(report["file"]).endswith(".so"), report


@pytest.mark.timeout(900)
def test_a_failed_compilation_fails_the_build(tmp_path: Path, wheels: Path) -> None:
    """mypyc rejects code that does not type-check: the build stops with
    mypy's error, and no wheel of the pure-Python source comes out instead."""
    broken = (ROOT / "server" / "wire.py").read_text() + '\n\nBROKEN: int = "not an int"\n'
    result = build(tmp_path, wheels, "1", {"server/wire.py": broken})
    assert result.returncode != 0
    assert 'Incompatible types in assignment (expression has type "str"' in (
        result.stdout + result.stderr
    )
    assert no_wheel(tmp_path)


def test_a_wheel_builds_from_the_sdist(tmp_path: Path, wheels: Path) -> None:
    """The sdist carries the in-tree backend (MANIFEST.in): pip builds a
    wheel from it, offline; KWS_MYPYC=1 does not stop the sdist. The sdist
    is made by the backend itself, in a scratch virtualenv with the pinned
    setuptools."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    setuptools = requirement_pins(ROOT / "requirements/build.txt")["setuptools"]
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    subprocess.run(
        [python, "-m", "pip", "install", "-q", f"setuptools=={setuptools}"],
        env=offline, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    for name in [*SOURCES, "MANIFEST.in"]:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, src / name)
    # KWS_MYPYC=1 as a release build sets it: the sdist is source all the
    # same, and packing it needs no mypy (this virtualenv has none).
    made = subprocess.run(
        [python, "-c", "import sys; sys.path.insert(0, '_build_backend'); import backend; "
         "assert backend.get_requires_for_build_sdist() == [], 'wants more than setuptools'; "
         f"print(backend.build_sdist({str(tmp_path / 'sdist')!r}))"],
        cwd=src, capture_output=True, text=True, check=True, timeout=300,
        env={**offline, "KWS_MYPYC": "1"},
    )  # fmt: skip
    sdist = tmp_path / "sdist" / made.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tf:
        names = tf.getnames()
    assert any(n.endswith("/_build_backend/backend.py") for n in names), names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".so")], names
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"),
         str(sdist)],
        env={k: v for k, v in offline.items() if k != "KWS_MYPYC"},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert the_wheel(tmp_path).name.endswith("-py3-none-any.whl")


def test_an_unknown_kws_mypyc_value_is_refused_by_name(tmp_path: Path, wheels: Path) -> None:
    result = build(tmp_path, wheels, "yes")
    assert result.returncode != 0
    assert "invalid KWS_MYPYC='yes': expected 0 (pure Python) or 1 (mypyc)" in result.stderr
    assert no_wheel(tmp_path)


def test_the_compiled_build_uses_the_pinned_mypy() -> None:
    ci = requirement_pins(ROOT / "requirements/ci.txt")
    build_pins = requirement_pins(ROOT / "requirements/build.txt")
    assert "mypy" in build_pins
    for name, version in build_pins.items():
        if name != "setuptools":  # the build backend; CI's venv does not install it
            assert ci.get(name) == version, name
    spec = importlib.util.spec_from_file_location(
        "kws_backend", ROOT / "_build_backend" / "backend.py"
    )
    assert spec
    assert spec.loader
    backend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(backend)
    assert f"mypy=={ci['mypy']}" in backend.MYPYC_REQUIRES
