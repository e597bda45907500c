#!/usr/bin/env python3
"""The release's facts, from one source: ``server.__version__``.

    release_meta.py version                 the version (server/__init__.py)
    release_meta.py check [--tag vX.Y.Z]    tag, __version__, the chart's version and
                                            appVersion, kustomize/base's image tag and a
                                            CHANGELOG.md entry all agree
    release_meta.py chart-bump [--since TAG | --before TAG]
                                            the chart changed since the last release tag
                                            only with a version bump (chart-testing's rule)
    release_meta.py notes VERSION           CHANGELOG.md's section for VERSION
    release_meta.py names --registry HOST/OWNER
                                            version=, image=, charts= lines (for
                                            $GITHUB_OUTPUT or a shell's eval)

Standard library only: it runs on a bare CI runner and in the tests
(tests/test_release.py). Exit status 1 with one line per problem when a
check fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE_NAME = "knative-websocket-server"
CHART_NAME = "knative-websocket-server"
SEMVER = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
TAG_PATTERN = "v[0-9]*"


class ReleaseError(Exception):
    """A check that failed; the message says what to fix."""


def _field(text: str, key: str, where: str) -> str:
    """A top-level ``key: value`` of a small YAML file, quotes removed."""
    match = re.search(rf"^{re.escape(key)}:\s*(.+?)\s*$", text, re.MULTILINE)
    if not match:
        raise ReleaseError(f"{where}: no top-level {key!r}")
    return match.group(1).strip("\"'")


def package_version(root: Path = ROOT) -> str:
    text = (root / "server" / "__init__.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not match:
        raise ReleaseError('server/__init__.py: no __version__ = "..."')
    return match.group(1)


def chart_versions(text: str) -> tuple[str, str]:
    """(version, appVersion) of a Chart.yaml's text."""
    return _field(text, "version", "Chart.yaml"), _field(text, "appVersion", "Chart.yaml")


def parse_semver(version: str) -> tuple[int, int, int, int, str]:
    """A sortable key; a pre-release sorts before its release."""
    match = SEMVER.match(version)
    if not match:
        raise ReleaseError(f"{version!r} is not a semantic version (X.Y.Z)")
    major, minor, patch, pre = match.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1, pre or ""


def changelog_heading(changelog: str, version: str) -> str | None:
    """The ``## [version] ...`` heading line, or None."""
    match = re.search(rf"^## \[{re.escape(version)}\].*$", changelog, re.MULTILINE)
    return match.group(0) if match else None


def changelog_notes(changelog: str, version: str) -> str:
    """The body of version's section, up to the next ``## `` heading."""
    heading = changelog_heading(changelog, version)
    if heading is None:
        raise ReleaseError(f"CHANGELOG.md has no '## [{version}]' section")
    body = changelog.split(heading, 1)[1]
    body = re.split(r"^## ", body, maxsplit=1, flags=re.MULTILINE)[0]
    # Link reference definitions ([0.1.0]: https://...) belong to the file's end.
    body = re.sub(r"^\[[^\]]+\]:\s+\S+\s*$", "", body, flags=re.MULTILINE)
    return body.strip() + "\n"


def check(root: Path = ROOT, tag: str | None = None) -> list[str]:
    """Every disagreement between the places that state the version."""
    problems = []
    version = package_version(root)
    try:
        parse_semver(version)
    except ReleaseError as exc:
        problems.append(f"server/__init__.py: __version__ {exc}")
    pyproject = (root / "pyproject.toml").read_text()
    if not re.search(r'^dynamic\s*=\s*\[[^\]]*"version"', pyproject, re.MULTILINE) or not re.search(
        r'^version\s*=\s*\{\s*attr\s*=\s*"server.__version__"\s*\}', pyproject, re.MULTILINE
    ):
        problems.append("pyproject.toml: the version must be dynamic, from attr server.__version__")
    chart_version, app_version = chart_versions((root / "chart" / "Chart.yaml").read_text())
    if chart_version != version:
        problems.append(f"chart/Chart.yaml: version {chart_version} != __version__ {version}")
    if app_version != version:
        problems.append(f"chart/Chart.yaml: appVersion {app_version} != __version__ {version}")
    base = (root / "kustomize" / "base" / "service.yaml").read_text()
    images = re.findall(rf"image:\s*\S*/{IMAGE_NAME}:(\S+)", base)
    if images != [version]:
        problems.append(f"kustomize/base/service.yaml: image tag {images} != [{version!r}]")
    changelog_path = root / "CHANGELOG.md"
    changelog = changelog_path.read_text() if changelog_path.exists() else ""
    heading = changelog_heading(changelog, version)
    if heading is None:
        problems.append(f"CHANGELOG.md: no '## [{version}]' section")
    if tag is not None:
        if tag != f"v{version}":
            problems.append(f"tag {tag} != v{version} (__version__)")
        if heading is not None and not re.search(r"\] - \d{4}-\d{2}-\d{2}$", heading):
            problems.append(f"CHANGELOG.md: a release needs a dated heading, not {heading!r}")
    return problems


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )


def last_release_tag(root: Path = ROOT, before: str | None = None) -> str | None:
    """The newest ``v*`` tag reachable from HEAD (or from before's parent)."""
    start = f"{before}^" if before else "HEAD"
    proc = _git(root, "describe", "--tags", "--abbrev=0", f"--match={TAG_PATTERN}", start)
    if proc.returncode != 0:
        if (
            "No names found" in proc.stderr
            or "cannot describe" in proc.stderr
            or (before and "Not a valid object name" in proc.stderr)
        ):
            return None
        raise ReleaseError(f"git describe: {proc.stderr.strip()}")
    return proc.stdout.strip()


def chart_bump(root: Path = ROOT, since: str | None = None, before: str | None = None) -> str:
    """What the version-bump rule found, or ReleaseError when it is broken.

    Like chart-testing's version check: when anything under chart/ differs
    from the last release tag, the chart's version must be greater than it
    was at that tag. No release tag yet means nothing to compare."""
    tag = since or last_release_tag(root, before)
    if tag is None:
        return "no release tag yet: nothing to compare the chart with"
    head = f"{before}" if before else None
    diff = ["diff", "--quiet", tag] + ([head] if head else []) + ["--", "chart"]
    proc = _git(root, *diff)
    if proc.returncode == 0:
        return f"chart unchanged since {tag}"
    if proc.returncode != 1:
        raise ReleaseError(f"git diff against {tag}: {proc.stderr.strip()}")
    old = _git(root, "show", f"{tag}:chart/Chart.yaml")
    if old.returncode != 0:
        return f"no chart at {tag}: a new chart"
    old_version = chart_versions(old.stdout)[0]
    if head:
        new_text = _git(root, "show", f"{head}:chart/Chart.yaml").stdout
    else:
        new_text = (root / "chart" / "Chart.yaml").read_text()
    new_version = chart_versions(new_text)[0]
    if parse_semver(new_version) <= parse_semver(old_version):
        raise ReleaseError(
            f"chart/ changed since {tag} but its version did not go up "
            f"({old_version} -> {new_version}): bump __version__, the chart's version "
            "and appVersion, and add a CHANGELOG.md entry"
        )
    return f"chart changed since {tag}: version {old_version} -> {new_version}"


def names(registry: str, root: Path = ROOT) -> dict[str, str]:
    """Where a release goes: OCI names must be lower case (GitHub owners need not be)."""
    registry = registry.rstrip("/").lower()
    return {
        "version": package_version(root),
        "image": f"{registry}/{IMAGE_NAME}",
        "charts": f"{registry}/charts",
        "chart": CHART_NAME,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release_meta.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version")
    p_check = sub.add_parser("check")
    p_check.add_argument("--tag")
    p_bump = sub.add_parser("chart-bump")
    group = p_bump.add_mutually_exclusive_group()
    group.add_argument("--since", help="compare with this tag (default: the last v* tag)")
    group.add_argument("--before", help="compare this tag with the v* tag before it")
    p_notes = sub.add_parser("notes")
    p_notes.add_argument("version")
    p_names = sub.add_parser("names")
    p_names.add_argument("--registry", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "version":
            print(package_version())
        elif args.command == "check":
            problems = check(tag=args.tag)
            for problem in problems:
                print(f"release check: {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"release check: version {package_version()} agrees everywhere", file=sys.stderr)
        elif args.command == "chart-bump":
            found = chart_bump(since=args.since, before=args.before)
            print(f"chart-bump: {found}", file=sys.stderr)
        elif args.command == "notes":
            changelog = (ROOT / "CHANGELOG.md").read_text()
            sys.stdout.write(changelog_notes(changelog, args.version.removeprefix("v")))
        elif args.command == "names":
            for key, value in names(args.registry).items():
                print(f"{key}={value}")
    except ReleaseError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
