"""Summarise an Autobahn Testsuite report and fail on any bad case.

    python conformance/summary.py .autobahn/reports/index.json

Prints, per section, how many cases ended with each behaviour, lists every
case that did not pass, and exits 1 if any case's behaviour (or its closing
behaviour) is FAILED or UNIMPLEMENTED, or if no case ran at all.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

#: Behaviours that count as passing. NON-STRICT: allowed by the RFC, though
#: not the strictest reading; INFORMATIONAL: the suite only records what happened.
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    index = json.loads(Path(argv[1]).read_text())
    by_section: dict[str, Counter[str]] = defaultdict(Counter)
    bad: list[str] = []
    total = 0
    for agent, cases in index.items():
        for case in sorted(cases, key=_case_key):
            result = cases[case]
            total += 1
            behavior, closing = result["behavior"], result["behaviorClose"]
            by_section[case.split(".")[0]][behavior] += 1
            if behavior not in PASSING or closing not in PASSING:
                bad.append(
                    f"{agent} {case}: {behavior} (close: {closing}) - {result['reportfile']}"
                )
    print("| section | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for section in sorted(by_section, key=int):
        counts = by_section[section]
        print(f"| {section} | " + " | ".join(str(counts[c]) for c in COLUMNS) + " |")
    if total == 0:
        print("no cases ran", file=sys.stderr)
        return 1
    if bad:
        print(f"\n{len(bad)} of {total} cases did not pass:", file=sys.stderr)
        for line in bad:
            print("  " + line, file=sys.stderr)
        return 1
    print(f"\nall {total} cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
