"""One version from one source, and chart-testing's version-bump rule.

``scripts/release_meta.py`` is what the release workflow and the local
release run call; these tests run it as a program (and its functions) on
this repository and on small git repositories they build, with the real
``git``.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

import server

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "release_meta.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("release_meta", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


meta = _load()


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(cwd / "scripts" / "release_meta.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid",
         "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return proc.stdout


# -- this repository ------------------------------------------------------------------


def test_every_place_states_the_package_version() -> None:
    version = server.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r"^version\s*=\s*\"", pyproject, re.M)  # no second, static version
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "server.__version__" }' in pyproject
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    assert chart["name"] == "knative-websocket-server"
    assert chart["version"] == chart["appVersion"] == version
    base = (ROOT / "kustomize" / "base" / "service.yaml").read_text()
    assert f"/knative-websocket-server:{version}\n" in base
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert "## [Unreleased]" in changelog
    proc = run("check", "--tag", f"v{version}")
    assert proc.returncode == 0, proc.stderr
    assert run("version").stdout.strip() == version


def test_the_release_check_names_each_disagreement(tmp_path: Path) -> None:
    repo = _copy_release_files(tmp_path)
    assert run("check", cwd=repo).returncode == 0
    chart = repo / "chart" / "Chart.yaml"
    chart.write_text(chart.read_text().replace('appVersion: "0.1.0"', 'appVersion: "0.1.1"'))
    (repo / "CHANGELOG.md").write_text("# Changelog\n")
    proc = run("check", "--tag", "v9.9.9", cwd=repo)
    assert proc.returncode == 1
    assert "appVersion 0.1.1 != __version__ 0.1.0" in proc.stderr
    assert "CHANGELOG.md: no '## [0.1.0]' section" in proc.stderr
    assert "tag v9.9.9 != v0.1.0" in proc.stderr


def test_release_notes_are_the_changelog_section() -> None:
    notes = run("notes", f"v{server.__version__}")
    assert notes.returncode == 0, notes.stderr
    assert notes.stdout.strip()
    assert "## [" not in notes.stdout
    assert "]: https://" not in notes.stdout
    missing = run("notes", "v99.0.0")
    assert missing.returncode == 1
    assert "no '## [99.0.0]' section" in missing.stderr


def test_release_names_are_lower_case_oci_names() -> None:
    proc = run("names", "--registry", "ghcr.io/Some-Owner")
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert got == {
        "version": server.__version__,
        "image": "ghcr.io/some-owner/knative-websocket-server",
        "charts": "ghcr.io/some-owner/charts",
        "chart": "knative-websocket-server",
    }


def test_the_chart_was_bumped_since_the_last_release_tag() -> None:
    """The rule on this repository. Before the first release there is no tag
    to compare with, and the rule says so rather than passing silently."""
    tags = git(ROOT, "tag", "--list", "v[0-9]*", "--merged", "HEAD").split()
    proc = run("chart-bump")
    assert proc.returncode == 0, proc.stderr
    if not tags:
        assert "no release tag yet" in proc.stderr
    else:
        assert "no release tag yet" not in proc.stderr


# -- the rule, on repositories built here ----------------------------------------------


def _copy_release_files(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for rel in (
        "scripts/release_meta.py",
        "server/__init__.py",
        "pyproject.toml",
        "CHANGELOG.md",
        "kustomize/base/service.yaml",
        "chart/Chart.yaml",
        "chart/values.yaml",
    ):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, repo / rel)
    return repo


@pytest.fixture
def released(tmp_path: Path) -> Path:
    """A repository whose v0.1.0 tag is this project's release files."""
    repo = _copy_release_files(tmp_path)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "release 0.1.0")
    git(repo, "tag", "-a", "v0.1.0", "-m", "v0.1.0")
    return repo


def _bump(repo: Path, version: str) -> None:
    chart = repo / "chart" / "Chart.yaml"
    text = re.sub(r"^version: .*$", f"version: {version}", chart.read_text(), flags=re.M)
    chart.write_text(re.sub(r"^appVersion: .*$", f'appVersion: "{version}"', text, flags=re.M))


def test_a_chart_change_without_a_bump_fails(released: Path) -> None:
    values = released / "chart" / "values.yaml"
    values.write_text(values.read_text().replace("target: 100", "target: 90"))
    proc = run("chart-bump", cwd=released)
    assert proc.returncode == 1
    assert "chart/ changed since v0.1.0 but its version did not go up (0.1.0 -> 0.1.0)" in (
        proc.stderr
    )
    git(released, "commit", "-q", "-am", "tweak the chart")
    assert run("chart-bump", cwd=released).returncode == 1
    _bump(released, "0.0.9")
    assert "(0.1.0 -> 0.0.9)" in run("chart-bump", cwd=released).stderr
    _bump(released, "0.1.1-rc.1")
    proc = run("chart-bump", cwd=released)
    assert proc.returncode == 0, proc.stderr
    assert "version 0.1.0 -> 0.1.1-rc.1" in proc.stderr


def test_an_unchanged_chart_needs_no_bump(released: Path) -> None:
    (released / "README.md").write_text("outside the chart\n")
    git(released, "add", "README.md")
    git(released, "commit", "-q", "-m", "docs")
    proc = run("chart-bump", cwd=released)
    assert proc.returncode == 0, proc.stderr
    assert "chart unchanged since v0.1.0" in proc.stderr


def test_a_release_tag_is_compared_with_the_tag_before_it(released: Path) -> None:
    values = released / "chart" / "values.yaml"
    values.write_text(values.read_text().replace("target: 100", "target: 90"))
    git(released, "commit", "-q", "-am", "chart change, no bump")
    git(released, "tag", "-a", "v0.1.1", "-m", "v0.1.1")
    proc = run("chart-bump", "--before", "v0.1.1", cwd=released)
    assert proc.returncode == 1
    assert "changed since v0.1.0" in proc.stderr
    # The first tag of all has nothing before it.
    first = run("chart-bump", "--before", "v0.1.0", cwd=released)
    assert first.returncode == 0, first.stderr
    assert "no release tag yet" in first.stderr


def test_no_tag_at_all_is_said_not_hidden(tmp_path: Path) -> None:
    repo = _copy_release_files(tmp_path)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    assert meta.last_release_tag(repo) is None
    assert meta.chart_bump(repo) == "no release tag yet: nothing to compare the chart with"


def test_semver_ordering() -> None:
    order = ["0.1.0-rc.1", "0.1.0", "0.1.1", "0.2.0", "1.0.0"]
    assert sorted(order, key=meta.parse_semver) == order
    with pytest.raises(meta.ReleaseError, match="not a semantic version"):
        meta.parse_semver("1.0")
