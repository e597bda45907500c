"""The Python versions the project claims are the versions it tests, in
every place that says so: ``requires-python`` and the classifiers in
pyproject.toml, ruff's and mypy's target (the floor), the Quick start of
the README and of the docs' home page, the CI workflow (the whole suite on
the floor, the fast suite in a matrix on the others) and scripts/test.sh
(the fast suite on the others, locally)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _minor(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _claims() -> dict[str, set[tuple[int, int]]]:
    """Each place's set of claimed or tested versions, as (3, minor)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    classifiers = {
        _minor(c.rsplit("::", 1)[1].strip())
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yaml").read_text())
    jobs = workflow["jobs"]
    [whole] = [
        s["with"]["python-version"]
        for s in jobs["test"]["steps"]
        if str(s.get("uses", "")).startswith("actions/setup-python@")
    ]
    matrix = {_minor(v) for v in jobs["fast"]["strategy"]["matrix"]["python"]}
    [fast_step] = [
        s
        for s in jobs["fast"]["steps"]
        if str(s.get("uses", "")).startswith("actions/setup-python@")
    ]
    assert fast_step["with"]["python-version"] == "${{ matrix.python }}"
    assert jobs["test"]["env"]["EXTRA_PYTHONS"] == ""  # the matrix runs them
    test_sh = (ROOT / "scripts/test.sh").read_text()
    extra = re.search(r"^EXTRA_PYTHONS=\$\{EXTRA_PYTHONS-([0-9. ]+)\}$", test_sh, re.MULTILINE)
    assert extra, "scripts/test.sh has no EXTRA_PYTHONS default"
    quick_starts = {}
    for place, path in (("README", "README.md"), ("docs home", "docs/index.md")):
        quick = re.search(
            r"Run the server \(Python ([0-9.]+), ([0-9.]+) or ([0-9.]+)", (ROOT / path).read_text()
        )
        assert quick, f"the {place}'s Quick start names no Python versions"
        quick_starts[f"{place} Quick start"] = {_minor(v) for v in quick.groups()}
    return {
        "classifiers": classifiers,
        **quick_starts,
        "CI (whole suite + fast matrix)": {_minor(whole)} | matrix,
        # .venv runs the whole suite on the floor; EXTRA_PYTHONS, the rest.
        "scripts/test.sh (.venv + EXTRA_PYTHONS)": {min(classifiers)}
        | {_minor(v) for v in extra.group(1).split()},
    }


def test_every_place_claims_the_same_versions() -> None:
    claims = _claims()
    versions = claims["classifiers"]
    assert versions, "no 'Programming Language :: Python :: 3.X' classifiers"
    for place, claimed in claims.items():
        assert claimed == versions, (place, sorted(claimed), sorted(versions))
    # Consecutive minors: no gap that nothing tests.
    minors = sorted(minor for _, minor in versions)
    assert minors == list(range(minors[0], minors[-1] + 1)), minors


def test_the_floor_is_the_oldest_version_tested() -> None:
    versions = _claims()["classifiers"]
    floor = min(versions)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == f">={floor[0]}.{floor[1]}"
    assert pyproject["tool"]["ruff"]["target-version"] == f"py{floor[0]}{floor[1]}"
    assert pyproject["tool"]["mypy"]["python_version"] == f"{floor[0]}.{floor[1]}"
    # The whole suite runs on the floor, locally (.venv) and in CI.
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yaml").read_text())
    [whole] = [
        s["with"]["python-version"]
        for s in workflow["jobs"]["test"]["steps"]
        if str(s.get("uses", "")).startswith("actions/setup-python@")
    ]
    assert _minor(whole) == floor


def test_this_interpreter_is_one_the_project_claims() -> None:
    """The suite is never run, and counted, on a version nobody claims."""
    assert sys.version_info[:2] in _claims()["classifiers"], sys.version
