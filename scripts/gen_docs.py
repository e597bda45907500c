"""Regenerate (or check) every generated table of the documentation.

    python scripts/gen_docs.py          # rewrite every table from the code
    python scripts/gen_docs.py --check  # exit 1, naming each table out of date

Each table sits between ``<!-- generated:NAME:begin -->`` and
``<!-- generated:NAME:end -->`` in its page, and is made from the code that
defines what it lists, so a new setting, event, error kind or metric shows
up in the docs by running this script (tests/test_docs.py runs ``--check``):

    settings       docs/reference/settings.md      server.config.option_table()
    events         docs/reference/events.md        server.events.Event, its docstrings
    close-causes   docs/reference/events.md        server.kinds.CloseCause, its docstrings
    error-kinds    docs/reference/events.md        server.kinds.ErrorKind, its docstrings
    metrics        docs/reference/metrics.md       server.metrics.Metrics, as /metrics shows it
    chart-values   docs/reference/chart-values.md  chart/values.yaml's "# -- " comments
                   (and chart/README.md's table, by scripts/chart_values_table.py)
"""

from __future__ import annotations

import ast
import enum
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import chart_values_table  # noqa: E402

from server import events, kinds  # noqa: E402
from server.config import option_table  # noqa: E402

DOCS = ROOT / "docs"

#: Where a setting is explained at length (the docs' own cross-references;
#: a setting not named here simply has none).
SEE_ALSO = {
    "WS_DRAIN_SPREAD": ("Shutdown", "../guides/operate.md#shutdown"),
    "WS_DRAIN_TIMEOUT": ("Shutdown", "../guides/operate.md#shutdown"),
    "WS_WORKERS": ("Several workers", "../guides/operate.md#several-workers-ws_workers"),
    "WS_TRUSTED_PROXIES": ("Who the client is", "../guides/security.md#who-the-client-is"),
    "WS_FORWARDED_HEADER": ("Who the client is", "../guides/security.md#who-the-client-is"),
    "WS_MAX_CONNECTION_AGE": (
        "Maximum connection age",
        "../guides/operate.md#maximum-connection-age",
    ),
}


def _cell(text: str) -> str:
    """One table cell: a single line, no unescaped pipe, rST literals as Markdown."""
    text = " ".join(inspect.cleandoc(text).split())
    return text.replace("``", "`").replace("|", "\\|")


def _code_names(text: str) -> str:
    """Setting names and quoted values of a ``--help`` text as code. A quote
    opens after no letter and closes before none: an apostrophe ("Tornado's")
    stays one."""
    text = re.sub(r"(?<!\w)'([^' ]+(?: [^' ]+)*)'(?!\w)", r"`\1`", text)
    return re.sub(r"(?<![`\w])((?:WS_[A-Z_]+)|PORT)(?![`\w])", r"`\1`", text)


def member_docs(module: object, cls: type[enum.Enum]) -> dict[str, str]:
    """Each member's docstring (the string right after its assignment), by value.
    A member without one maps to ''."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())  # type: ignore[arg-type]
    [node] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    found: dict[str, str] = {}
    for stmt, after in zip(node.body, [*node.body[1:], None], strict=True):
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name)):
            continue
        name = stmt.targets[0].id
        doc = ""
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            doc = after.value.value
        found[name] = doc
    return {str(member.value): found.get(member.name, "") for member in cls}


UNDOCUMENTED = "(not documented yet: give the member a docstring)"


def settings() -> str:
    lines = ["| variable | default | flag | meaning |", "|---|---|---|---|"]
    for env, flag, default, help_text in option_table():
        meaning = _code_names(_cell(help_text))
        if env in SEE_ALSO:
            title, link = SEE_ALSO[env]
            meaning += f" (see [{title}]({link}))"
        lines.append(f"| `{env}` | `{default}` | `{flag}` | {meaning} |")
    return "\n".join(lines)


def event_table() -> str:
    lines = ["| event | what, and its fields |", "|---|---|"]
    for value, doc in member_docs(events, events.Event).items():
        lines.append(f"| `{value}` | {_cell(doc) or UNDOCUMENTED} |")
    return "\n".join(lines)


def close_causes() -> str:
    lines = ["| `cause` | what ended the connection |", "|---|---|"]
    for value, doc in member_docs(kinds, kinds.CloseCause).items():
        lines.append(f"| `{value}` | {_cell(doc) or UNDOCUMENTED} |")
    return "\n".join(lines)


def error_kinds() -> str:
    lines = ["| kind | what happened | the client gets |", "|---|---|---|"]
    for value, doc in member_docs(kinds, kinds.ErrorKind).items():
        what, _, client = inspect.cleandoc(doc).partition("The client gets:")
        lines.append(
            f"| `{value}` | {_cell(what) or UNDOCUMENTED} | {_cell(client).rstrip('.') or '-'} |"
        )
    return "\n".join(lines)


def metrics() -> str:
    """Every metric family as a scrape shows it: one server, then what a pod
    with ``WS_WORKERS`` > 1 adds."""
    from prometheus_client.metrics_core import Metric

    from server import exposition
    from server.metrics import Metrics, Slots, slot_count

    def families(made: Metrics) -> dict[str, Metric]:
        return {f.name: f for f in exposition.registry(made).collect()}

    one = families(Metrics())
    pod = families(Metrics(Slots(memoryview(bytearray(8 * slot_count())), 0.0)))
    lines = ["| metric | type | labels | help |", "|---|---|---|---|"]
    for name, family in {**one, **pod}.items():
        shown = f"{name}_total" if family.type == "counter" else name
        labels: dict[str, list[str]] = {}
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            for label, value in sample.labels.items():
                if value not in labels.setdefault(label, []):
                    labels[label].append(value)
        cells = []
        for label, values in labels.items():
            if label == "le":
                cells.append("buckets: " + ", ".join(v for v in values if v != "+Inf"))
            else:
                cells.append(f"`{label}`: " + ", ".join(f"`{v}`" for v in values))
        helptext = _cell(family.documentation)
        if name not in one and "WS_WORKERS" not in helptext:
            helptext += " (only with WS_WORKERS > 1)"
        helptext = _code_names(helptext)
        lines.append(f"| `{shown}` | {family.type} | {'; '.join(cells) or '-'} | {helptext} |")
    return "\n".join(lines)


#: Table name -> (page, generator).
TABLES: dict[str, tuple[Path, Callable[[], str]]] = {
    "settings": (DOCS / "reference/settings.md", settings),
    "events": (DOCS / "reference/events.md", event_table),
    "close-causes": (DOCS / "reference/events.md", close_causes),
    "error-kinds": (DOCS / "reference/events.md", error_kinds),
    "metrics": (DOCS / "reference/metrics.md", metrics),
    "chart-values": (DOCS / "reference/chart-values.md", chart_values_table.table),
}


def rewrite(text: str, name: str, table: str) -> str:
    begin, end = f"<!-- generated:{name}:begin -->", f"<!-- generated:{name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1:
        raise SystemExit(f"the page for table {name!r} needs one {begin} and one {end}")
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + table + "\n" + text[stop:]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale: list[str] = []
    pages: dict[Path, str] = {}
    for name, (page, make) in TABLES.items():
        before = pages.get(page, page.read_text())
        pages[page] = rewrite(before, name, make())
        if pages[page] != before:
            stale.append(f"{page.relative_to(ROOT)}: table {name!r}")
    sys.argv = [sys.argv[0], *(["--check"] if check else [])]
    chart_stale = chart_values_table.main() != 0
    if check:
        for item in stale:
            print(f"{item} is out of date; run python scripts/gen_docs.py")
        return 1 if stale or chart_stale else 0
    for page, text in pages.items():
        if page.read_text() != text:
            page.write_text(text)
            print(f"wrote {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
