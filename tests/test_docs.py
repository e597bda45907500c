"""The documentation as tested code: the generated reference tables match
the code that defines what they list (``scripts/gen_docs.py --check``), every
event the server logs is a documented :class:`server.events.Event`, and the
site's strict build fails on a broken link. scripts/docs.sh (run by
scripts/test.sh) builds the whole site and checks its links; these tests
pin the parts that can drift without anyone touching ``docs/``."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from server import events, kinds

from .conftest import ROOT

GEN_DOCS = ROOT / "scripts" / "gen_docs.py"


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", GEN_DOCS)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


def test_every_generated_table_is_current() -> None:
    """Run ``python scripts/gen_docs.py`` after changing a setting, an event,
    an error kind, a close cause, a metric or a chart value."""
    proc = subprocess.run(
        [sys.executable, str(GEN_DOCS), "--check"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_check_fails_when_the_code_changes_and_the_docs_do_not(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A new setting (as server/config.py would add it) makes ``--check``
    fail and name the table; the pages are not written in check mode."""
    settings_page = ROOT / "docs" / "reference" / "settings.md"
    before = settings_page.read_text()
    real = gen_docs.option_table

    def with_a_new_setting() -> list[tuple[str, str, str, str]]:
        return [*real(), ("WS_NEW_THING", "--new-thing", "1", "a setting the docs lack")]

    monkeypatch.setattr(gen_docs, "option_table", with_a_new_setting)
    assert gen_docs.main(["--check"]) == 1
    assert "docs/reference/settings.md: table 'settings' is out of date" in capsys.readouterr().out
    assert settings_page.read_text() == before
    assert "WS_NEW_THING" in gen_docs.settings()


def test_a_new_metric_or_error_kind_reaches_its_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The metrics table is read from a scrape and the error kinds from the
    enum: nothing to add by hand but the member's docstring."""
    assert "`websocket_worker_restarts_total`" in gen_docs.metrics()  # WS_WORKERS > 1 only
    for kind in kinds.ErrorKind:
        assert f"| `{kind.value}` |" in gen_docs.error_kinds()
    for event in events.Event:
        assert f"| `{event.value}` |" in gen_docs.event_table()
    for cause in kinds.CloseCause:
        assert f"| `{cause.value}` |" in gen_docs.close_causes()


def test_quoted_values_become_code_and_apostrophes_stay_text() -> None:
    """A ``--help`` text's 'quoted value' is code in the settings table; an
    apostrophe is not a quote: "Tornado's default ... the balancer's 60 s"
    once rendered as a code span from "s default" to "balancer"."""
    text = "closed with 1001 'max connection age'; Tornado's default, the balancer's 60 s"
    assert gen_docs._code_names(text) == (
        "closed with 1001 `max connection age`; Tornado's default, the balancer's 60 s"
    )
    for table in (gen_docs.settings(), gen_docs.metrics()):
        stray = re.findall(r"\w`s\b", table)
        assert not stray, f"an apostrophe made into a backtick: {stray}"


def _prose() -> dict[str, str]:
    """Every page of the site and the README, generated tables left out
    (they are made from the code: the test above keeps them current)."""
    generated = re.compile(r"<!-- generated:([a-z-]+):begin -->.*?<!-- generated:\1:end -->", re.S)
    pages = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md"]
    return {str(p.relative_to(ROOT)): generated.sub("", p.read_text()) for p in pages}


def test_every_setting_and_metric_the_prose_names_exists() -> None:
    """A setting renamed or a metric renamed in the code leaves no guide or
    runbook naming the old one: each ``WS_*`` the pages name is a setting,
    each metric name (``websocket_..._total`` and the like) one /metrics has."""
    settings = {env for env, *_ in gen_docs.option_table()}
    metrics = set(re.findall(r"^\| `(websocket_[a-z_]+)` \|", gen_docs.metrics(), re.M))
    assert "websocket_errors_total" in metrics  # the scan works
    metric = re.compile(
        r"\b(websocket_[a-z_]+?(?:_total|_seconds|_connections|_connected))(?:_bucket|_count|_sum)?\b"
    )
    unknown = []
    for page, text in _prose().items():
        unknown += [
            f"{page}: {n}" for n in set(re.findall(r"\bWS_[A-Z_]*[A-Z]\b", text)) - settings
        ]
        unknown += [f"{page}: {n}" for n in set(metric.findall(text)) - metrics]
    assert not unknown, f"named in the docs, unknown to the code: {sorted(unknown)}"


def test_links_to_the_repository_on_github_name_its_files() -> None:
    """The link check runs offline and skips github.com: a page's link to a
    file of this repository on GitHub (``.../blob/main/PATH``) names a file
    the checkout has."""
    repo = re.escape("https://github.com/knative-websocket-server/knative-websocket-server/")
    link = re.compile(repo + r"(?:blob|tree)/main/([^)\s\"'#>]+)")
    found = {f"{page}: {path}" for page, text in _prose().items() for path in link.findall(text)}
    assert found, "the scan works"
    missing = sorted(f for f in found if not (ROOT / f.split(": ")[1]).exists())
    assert not missing, missing


def test_the_code_points_into_the_site_not_the_old_readme() -> None:
    """The README is a front door now: a docstring (shown on the API pages),
    a comment or the echo console that sends readers to "the README's"
    section sends them to one that moved to docs/."""
    stale = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "server").rglob("*"))
        if path.suffix in {".py", ".html", ".js"}
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "README's" in line
    ]
    assert not stale, f"point these to the page in docs/: {stale}"


def _emitted_events() -> dict[str, str]:
    """Every event name ``server/`` passes to ``emit()`` as a literal, with
    where; ``emit_message`` writes ``message`` and ``record_error``
    ``error``."""
    found = {"message": "server/events.py emit_message", "error": "server/telemetry.py"}
    for path in sorted((ROOT / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            first = node.args[0]
            if name == "emit" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found[first.value] = f"{path.relative_to(ROOT)}:{node.lineno}"
    return found


def test_every_event_the_server_logs_is_documented() -> None:
    emitted = _emitted_events()
    assert {"open", "close", "listening", "drain", "exit"} <= set(emitted)  # the scan works
    undocumented = {e: where for e, where in emitted.items() if e not in set(events.Event)}
    assert not undocumented, f"add these to server.events.Event, with a docstring: {undocumented}"


@pytest.mark.parametrize(
    ("module", "enum"),
    [(events, events.Event), (kinds, kinds.ErrorKind), (kinds, kinds.CloseCause)],
    ids=["Event", "ErrorKind", "CloseCause"],
)
def test_every_member_has_the_docstring_its_row_needs(module: ModuleType, enum: type) -> None:
    docs = gen_docs.member_docs(module, enum)
    assert set(docs) == {m.value for m in enum}
    missing = [value for value, doc in docs.items() if not doc.strip()]
    assert not missing, f"{enum.__name__}: no docstring for {missing}"
    if enum is kinds.ErrorKind:
        no_client = [v for v, doc in docs.items() if "The client gets:" not in doc]
        assert not no_client, f"ErrorKind: say what the client gets for {no_client}"


def test_the_strict_build_fails_on_a_broken_link(tmp_path: Path) -> None:
    """mkdocs.yml's strict build and link validation, on a copy of the docs
    with one link to an anchor that is not there."""
    for name in ("mkdocs.yml", "CHANGELOG.md", "server", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "guides" / "clients.md"
    page.write_text(page.read_text() + "\nSee [the drain](operate.md#no-such-section).\n")
    env = {"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", "out"]
    proc = subprocess.run(
        build, cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "operate.md#no-such-section" in proc.stderr
    page.write_text(page.read_text().replace("#no-such-section", "#shutdown"))
    proc = subprocess.run(
        build, cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_link_check_fails_on_a_broken_anchor_in_the_built_site(tmp_path: Path) -> None:
    """scripts/docs.sh check-links (LinkChecker, offline) on a two-page
    site: a link to an id the other page lacks fails it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "other.html").write_text('<html><body><h2 id="here">Here</h2></body></html>')
    check = [str(ROOT / "scripts" / "docs.sh"), "check-links", str(site)]
    for anchor, status in (("here", 0), ("gone", 1)):
        (site / "index.html").write_text(
            f'<html><body><a href="other.html#{anchor}">there</a></body></html>'
        )
        proc = subprocess.run(check, capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == status, proc.stdout + proc.stderr
        if status:
            assert "other.html#gone" in proc.stdout


def test_the_readmes_links_lead_somewhere() -> None:
    """The README is read on GitHub, outside the site's strict build: each
    relative link names a file of the repository, and each page it links
    into the site is in the site's navigation."""
    readme = (ROOT / "README.md").read_text()
    links = [t for t in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme) if "://" not in t]
    assert len(links) > 20, links
    nav = (ROOT / "mkdocs.yml").read_text()
    for target in links:
        assert (ROOT / target).exists(), target
        if target.startswith("docs/") and target.endswith(".md"):
            assert target.removeprefix("docs/") in nav, target


def test_the_api_pages_document_public_members_with_docstrings() -> None:
    """The Python API pages (mkdocstrings) show docstrings: every public
    member the base defines, and every public name of the wire core, has
    one, and the base's page lists each name the base adds to Tornado's."""
    import importlib.util
    import inspect
    import sys

    from server.base import KnativeWebSocketHandler

    # The wire core from its source, as mkdocstrings reads it: compiled
    # (the suite's mypyc pass), its classes' methods carry no docstrings.
    source = ROOT / "server" / "wire.py"
    spec = importlib.util.spec_from_file_location("server._wire_source", source)
    assert spec is not None
    assert spec.loader is not None
    wire = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = wire  # dataclasses look their module up
    try:
        spec.loader.exec_module(wire)
    finally:
        del sys.modules[spec.name]

    def undocumented(owner: type) -> list[str]:
        return [
            name
            for name, member in vars(owner).items()
            if not name.startswith("_")
            and (callable(member) or isinstance(member, property))
            and not (member.__doc__ or "").strip()
        ]

    assert not undocumented(KnativeWebSocketHandler)
    missing = []
    for name in wire.__all__:
        obj = getattr(wire, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            if not (obj.__doc__ or "").strip():
                missing.append(name)
            if inspect.isclass(obj):
                missing += [f"{name}.{m}" for m in undocumented(obj)]
    assert not missing
    page = (ROOT / "docs" / "reference" / "api" / "base.md").read_text()
    listed = set(re.findall(r"^        - ([a-z_]+)$", page, re.MULTILINE))
    assert {"peer", "connections", "authorize", "on_error", "write_message_threadsafe"} <= listed
    public = {name for name in vars(KnativeWebSocketHandler) if not name.startswith("_")}
    assert public - listed == set(), "public members of the base missing from its API page"
    for name in listed:
        member = getattr(KnativeWebSocketHandler, name)
        assert name in vars(KnativeWebSocketHandler), f"{name} is Tornado's, not the base's"
        assert (member.__doc__ or "").strip(), name  # its own: griffe inherits none
