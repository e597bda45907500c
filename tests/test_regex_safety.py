"""No regular expression in ``server/`` can backtrack super-linearly.

How the check works (and what it does not claim). Every call ``re.X(pattern,
...)`` in ``server/*.py`` is found in the module's syntax tree, and its
pattern argument is evaluated in the imported module's namespace (so
patterns built from constants, f-strings or ``re.escape`` are the real
strings); module-level ``re.Pattern`` objects are collected too. Each is
parsed with the standard library's own regex parser (``re._parser``, the
3.11 name of ``sre_parse``; a private module, used only by this test) and
its tree is searched for the two shapes behind polynomial backtracking in
Python's engine:

- *nested*: an unbounded repeat inside another unbounded repeat
  (``(a+)+``, ``(\\w+\\s?)*``);
- *adjacent*: two unbounded repeats that can consume the same character,
  with only optional items between them (``\\s*x?\\s*``, ``a*a*``): a
  failing match tries every split of a run of that character between them,
  so the work grows with the square of the run.

A pattern used with ``search``/``sub``/``findall``/``finditer``/``split``
is tried at every position, which adds one more unbounded repeat in front
of it: such a pattern must not start with one. The character sets are
compared over the code points U+0000-U+30FF (ASCII, Latin-1 and every
Unicode space). This is a conservative syntactic check, not a proof: it
does not model lookarounds or backreferences (none is allowed here), and
it flags some patterns that would be harmless. The known-bad patterns in
``test_the_check_catches_known_backtracking_shapes`` show that it can fail.
"""

from __future__ import annotations

import ast
import importlib
import re
import re._constants as sre_constants  # type: ignore[import-not-found]
import re._parser as sre_parse  # type: ignore[import-not-found]
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from server import wire

from .conftest import ROOT

_CODEPOINTS = range(0x3100)
_UNBOUNDED = sre_constants.MAXREPEAT
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)
_SINGLE = (
    sre_constants.LITERAL,
    sre_constants.NOT_LITERAL,
    sre_constants.IN,
    sre_constants.ANY,
    sre_constants.CATEGORY,
)
_SCANNING = {"search", "sub", "subn", "findall", "finditer", "split"}
_ALL_CALLS = _SCANNING | {"match", "fullmatch", "compile"}


def _chars(item: tuple[Any, Any], state: Any, flags: int) -> frozenset[int]:
    """The code points (of _CODEPOINTS) one single-character item matches."""
    sub = sre_parse.SubPattern(state, [item])
    compiled = re._compiler.compile(sub, flags)  # type: ignore[attr-defined]
    return frozenset(c for c in _CODEPOINTS if compiled.fullmatch(chr(c)))


class _Analysis:
    def __init__(self, parsed: Any, flags: int) -> None:
        self.state = parsed.state
        self.flags = flags
        self.problems: list[str] = []
        self._cache: dict[tuple[str, str], frozenset[int]] = {}

    def chars(self, item: tuple[Any, Any]) -> frozenset[int]:
        key = (str(item[0]), repr(item[1]))
        if key not in self._cache:
            self._cache[key] = _chars(item, self.state, self.flags)
        return self._cache[key]

    # -- what items can match -------------------------------------------

    def leaves(self, seq: Any) -> frozenset[int]:
        """Every character any part of ``seq`` can consume."""
        out: set[int] = set()
        for op, av in seq:
            if op in _SINGLE:
                out |= self.chars((op, av))
            elif op in _REPEATS:
                out |= self.leaves(av[2])
            elif op == sre_constants.SUBPATTERN:
                out |= self.leaves(av[3])
            elif op == sre_constants.BRANCH:
                for branch in av[1]:
                    out |= self.leaves(branch)
            elif op == sre_constants.ATOMIC_GROUP:
                out |= self.leaves(av)
        return frozenset(out)

    def nullable(self, op: Any, av: Any) -> bool:
        if op in _REPEATS:
            return av[0] == 0 or all(self.nullable(*i) for i in av[2])
        if op == sre_constants.SUBPATTERN:
            return all(self.nullable(*i) for i in av[3])
        if op == sre_constants.ATOMIC_GROUP:
            return all(self.nullable(*i) for i in av)
        if op == sre_constants.BRANCH:
            return any(all(self.nullable(*i) for i in b) for b in av[1])
        return op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT)

    def edge(self, op: Any, av: Any, first: bool) -> frozenset[int]:
        """Characters an unbounded repeat at the start (``first``) or end of
        this item can consume."""
        if op in _REPEATS:
            if av[1] == _UNBOUNDED:
                return self.leaves(av[2])
            return self.seq_edge(av[2], first)
        if op == sre_constants.SUBPATTERN:
            return self.seq_edge(av[3], first)
        if op == sre_constants.BRANCH:
            out: set[int] = set()
            for branch in av[1]:
                out |= self.seq_edge(branch, first)
            return frozenset(out)
        return frozenset()  # an atomic group or possessive repeat gives nothing back

    def seq_edge(self, seq: Any, first: bool) -> frozenset[int]:
        items = list(seq) if first else list(reversed(list(seq)))
        out: set[int] = set()
        for op, av in items:
            out |= self.edge(op, av, first)
            if not self.nullable(op, av):
                break
        return frozenset(out)

    # -- the two shapes --------------------------------------------------

    def check(self, seq: Any, inside_unbounded: bool = False) -> None:
        items = list(seq)
        for i, (op, av) in enumerate(items):
            if op in _REPEATS:
                unbounded = av[1] == _UNBOUNDED
                if unbounded and inside_unbounded:
                    self.problems.append("nested unbounded repeats")
                self.check(av[2], inside_unbounded or unbounded)
            elif op == sre_constants.SUBPATTERN:
                self.check(av[3], inside_unbounded)
            elif op == sre_constants.BRANCH:
                for branch in av[1]:
                    self.check(branch, inside_unbounded)
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                self.problems.append("a lookaround (not modelled)")
            elif op == sre_constants.GROUPREF:
                self.problems.append("a backreference (not modelled)")
            end = self.edge(op, av, first=False)
            if not end:
                continue
            for op2, av2 in items[i + 1 :]:
                if end & self.edge(op2, av2, first=True):
                    self.problems.append("adjacent unbounded repeats share a character")
                    break
                if not self.nullable(op2, av2):
                    break


def problems(pattern: str | re.Pattern[str], scanning: bool = False) -> list[str]:
    """Why ``pattern`` could backtrack super-linearly (empty: it cannot)."""
    if isinstance(pattern, re.Pattern):
        source, flags = pattern.pattern, pattern.flags
    else:
        source, flags = pattern, 0
    if isinstance(source, bytes):
        source = source.decode("latin-1")
    parsed = sre_parse.parse(source, flags)
    analysis = _Analysis(parsed, flags)
    analysis.check(parsed)
    if scanning and analysis.seq_edge(parsed, first=True):
        analysis.problems.append("tried at every position, and starts with an unbounded repeat")
    return analysis.problems


#: Patterns made at run time from what is not client input, so this scan
#: cannot read them: (file, the argument's source) and why each is safe.
DYNAMIC_PATTERNS = {
    # Connections.select(route=...): an app's own URL pattern, the one it
    # gave Tornado for the route (which compiles it the same way).
    ("connections.py", "route if route.endswith('$') else route + '$'"),
}


def server_patterns() -> Iterator[tuple[str, str | re.Pattern[str], bool]]:
    """(where, pattern, used to scan) for every regex in server/."""
    for path in sorted((ROOT / "server").glob("*.py")):
        module = importlib.import_module(f"server.{path.stem}")
        namespace = vars(module)
        for name, value in namespace.items():
            if isinstance(value, re.Pattern):
                yield f"{path.name}:{name}", value, False
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and node.args
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _ALL_CALLS
            ):
                continue
            target = node.func.value
            direct = isinstance(target, ast.Name) and target.id == "re"
            where = f"{path.name}:{node.lineno}"
            if direct:
                arg = node.args[0]
                if (path.name, ast.unparse(arg)) in DYNAMIC_PATTERNS:
                    continue  # not client input: see DYNAMIC_PATTERNS
                expr = ast.Expression(arg)
                value = eval(compile(expr, where, "eval"), namespace)
                yield where, value, node.func.attr in _SCANNING
            elif node.func.attr in _SCANNING and isinstance(target, ast.Name):
                # pattern.search(...) on a module-level Pattern
                value = namespace.get(target.id)
                if isinstance(value, re.Pattern):
                    yield where, value, True


def test_every_regex_in_server_is_free_of_backtracking_shapes() -> None:
    found = list(server_patterns())
    assert len(found) >= 5  # the scan finds the patterns at all
    bad = {where: problems(p, scanning) for where, p, scanning in found}
    assert not {k: v for k, v in bad.items() if v}, bad


@pytest.mark.parametrize(
    ("pattern", "scanning"),
    [
        # issue 19: the permessage-deflate parameter pattern before the fix
        (r"\s*([a-z]+)\s*(?:=\s*([a-z]+|\"(?:[^\"\\]|\\.)*\"))?\s*", False),
        (r"(a+)+b", False),
        (r"^(\w+\s?)*$", False),
        (r"a*a*b", False),
        (r"\s*x?\s*", False),
        (r"(?:a|b)*(?:b|c)*d", False),
        (r"\s+$", True),
    ],
)
def test_the_check_catches_known_backtracking_shapes(pattern: str, scanning: bool) -> None:
    assert problems(pattern, scanning)


@pytest.mark.parametrize(
    "pattern",
    [r"[a-z]+", r'"(?:[^"\\]|\\.)*"', r"[1-9][0-9]?", r"\s*[a-z]+\s*", r"a*b*c", r"\\(.)"],
)
def test_the_check_passes_linear_patterns(pattern: str) -> None:
    assert problems(pattern) == []


# -- the extension header: time linear in its length --------------------------

#: What the parser may spend per character of header (it measures about
#: 0.1-0.3 µs; the quadratic parser spent 14 µs a character at 4 KB and
#: 50 µs at 15.5 KB). Generous: the machine is shared.
_SECONDS_PER_CHAR = 4e-6
#: Pieces of a header: tokens, long runs of whitespace, separators.
_PIECES = st.one_of(
    st.text("ab-_1", min_size=1, max_size=40),
    st.builds(lambda char, n: char * n, st.sampled_from(" \t"), st.integers(1, 5000)),
    st.sampled_from([";", ",", "=", '"', "\\", '\\"']),
)


def _parse_seconds(header: str) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        wire.parse_extensions([header])
        best = min(best, time.perf_counter() - started)
    return best


@settings(max_examples=100, deadline=None)
@given(
    st.lists(_PIECES, min_size=1, max_size=12),
    st.sampled_from(["permessage-deflate; ", "permessage-deflate;a=", "x, y;", ""]),
)
# The shapes that were quadratic, always tried (random ones find them too,
# in about one run of three at 100 examples).
@example(["a", " " * 5000, "b"], "permessage-deflate; ")
@example(["=", " " * 5000, "="], "permessage-deflate; a")
@example([" " * 5000], "permessage-deflate; ")
def test_extension_header_parse_time_per_character_is_bounded(
    pieces: list[str], prefix: str
) -> None:
    """Headers made of tokens, long runs of whitespace (between a
    parameter's name and value, say) and the separators the grammar cares
    about: the parse costs at most a constant per character."""
    header = prefix + "".join(pieces)
    seconds = _parse_seconds(header)
    assert seconds < 0.002 + _SECONDS_PER_CHAR * len(header), (len(header), seconds)


def test_the_worst_offer_of_issue_19_parses_in_linear_time() -> None:
    header = "permessage-deflate; a" + " " * 15_500 + "b"
    seconds = _parse_seconds(header)
    assert seconds < 0.002 + _SECONDS_PER_CHAR * len(header), seconds  # was 0.8 s


def test_an_extension_header_over_the_cap_is_declined_unparsed() -> None:
    ok = "permessage-deflate; client_max_window_bits"
    assert wire.negotiate_deflate([ok]) is not None
    padded = ok + "," * (wire.MAX_EXTENSIONS_LENGTH - len(ok))
    assert wire.negotiate_deflate([padded]) is not None
    assert wire.negotiate_deflate([padded + ","]) is None
    assert wire.negotiate_deflate([padded[:2000], padded[2000:] + ","]) is None
