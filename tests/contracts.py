"""A custom import-linter contract (``pyproject.toml``, ``lint-imports``):
no module of the package but the one allowed imports a private name
(``_something``) from Tornado. import-linter's own contracts see modules,
not names; this one reads the import lines grimp records."""

from __future__ import annotations

import re
from typing import Any

from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck

_PRIVATE = re.compile(r"(?:\bimport\s+\(?\s*|,\s*|\.)(_[A-Za-z]\w*)")


class PrivateNamesContract(Contract):
    """Only ``allowed_module`` may import ``_private`` names from ``external``."""

    source_package = fields.StringField()
    external = fields.StringField()
    allowed_module = fields.StringField()

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        source = str(self.source_package)
        external = str(self.external)
        allowed = str(self.allowed_module)
        found: list[str] = []
        for importer in sorted(graph.find_descendants(source) | {source}):
            if importer == allowed:
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported != external and not imported.startswith(external + "."):
                    continue
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    line = detail["line_contents"]
                    names = [n for n in _PRIVATE.findall(line) if not n.startswith("__")]
                    if names:
                        found.append(
                            f"{importer}:{detail['line_number']}: {line.strip()} "
                            f"(private: {', '.join(names)})"
                        )
        return ContractCheck(kept=not found, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        from importlinter.application import output

        for line in check.metadata["found"]:
            output.print_error(line, bold=False)
