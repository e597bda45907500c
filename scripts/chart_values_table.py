"""Print (or check) the values table of chart/README.md from chart/values.yaml.

Each key's description is its "# -- " comment in values.yaml.
    python scripts/chart_values_table.py          # rewrite the table in chart/README.md
    python scripts/chart_values_table.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "chart"
BEGIN = "<!-- values-table:begin -->"
END = "<!-- values-table:end -->"


def rows(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    stack: list[str] = []
    desc: list[str] = []
    for line in text.splitlines():
        if m := re.match(r"^\s*# -- (.*)$", line):
            desc = [m.group(1)]
        elif (m := re.match(r"^\s*# (.*)$", line)) and desc:
            desc.append(m.group(1))
        elif m := re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line):
            stack = [*stack[: len(m.group(1)) // 2], m.group(2)]
            if desc:
                out.append((".".join(stack), " ".join(desc)))
            desc = []
    return out


def table() -> str:
    text = (CHART / "values.yaml").read_text()
    values: Any = yaml.safe_load(text)
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, desc in rows(text):
        value = values
        for part in key.split("."):
            value = value[part]
        lines.append(f"| `{key}` | `{json.dumps(value)}` | {desc.replace('|', '/')} |")
    return "\n".join(lines)


def main() -> int:
    readme = CHART / "README.md"
    text = readme.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    updated = text[:start] + "\n" + table() + "\n" + text[end:]
    if "--check" in sys.argv:
        if updated != text:
            print("chart/README.md: values table is out of date; run scripts/chart_values_table.py")
            return 1
        return 0
    readme.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
