"""Filters on metadata: a small expression language, parsed (never evaluated as Python) and run on Arrow.

    price < 20000 and colour == 'red'
    colour in ['red', 'blue'] and not (title == 'Red mug' or width < 100)
    title contains 'car' and brand != null

Comparisons == != < <= > >=, `in [..]`, `not in [..]`, `contains` and `not contains`
(a case-insensitive substring of a text), `and`, `or`, `not`, parentheses, quoted
strings, numbers, true/false/null. Missing (null) values follow SQL: a comparison
with one is neither true nor false, so it never passes, even under `not`
(`not (price > 100)` leaves out items without a price); `== null` and `!= null`
find them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..indexer.errors import InvalidInputError, option

BUILT_IN_COLUMNS = ("modality", "path", "width", "height", "size")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)
_KEYWORDS = {"and", "or", "not", "in", "contains", "true", "false", "null"}
_COMPARE = {"==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal, ">": pc.greater,
            ">=": pc.greater_equal}
_MIRROR = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class FilterError(InvalidInputError):
    """A filter that cannot be parsed or does not fit the index's columns."""


@dataclass(frozen=True)
class Token:
    kind: str  # number | string | op | punct | name | keyword | end
    text: str
    value: Any
    at: int


@dataclass(frozen=True)
class Compare:
    column: str
    op: str
    value: Any


@dataclass(frozen=True)
class In:
    column: str
    values: tuple
    negate: bool


@dataclass(frozen=True)
class Contains:
    column: str
    text: Any  # a str once checked
    negate: bool


@dataclass(frozen=True)
class Logic:
    op: str  # and | or | not
    parts: tuple


Node = Union[Compare, In, Contains, Logic]


@dataclass(frozen=True)
class TextCause:
    """Why a column that is mostly numbers is text: the first line of its corpus whose value is not a number."""

    file: str  # the corpus's name
    line: int
    value: str
    na_values: tuple[str, ...]  # the corpus's missing markers
    number: str | None = None  # the value is a number written another way: "decimal comma", "grouped digits", ...

    def explain(self, column: str) -> str:
        from ..indexer.build import na_values_argument

        said = f"{column} is text, not numbers: line {self.line} of {self.file} holds {self.value!r}"
        mark = {"decimal comma": ",", "decimal point": "."}.get(self.number)
        if mark:  # a number is never offered as a missing marker: "12,5" would be 12 and 5, and lose a real 5
            return f"{said}, a number with a {self.number}; index {self.file} again with {option('decimal', mark)}"
        if self.number:
            return f"{said}, a number with grouped digits, which are not read as one; write it as 1234567"
        markers = na_values_argument((*self.na_values, self.value))
        return (f"{said}; if that means a missing value, index {self.file} again with {option('na_values')} "
                f"{markers}, or fix that line")


@dataclass(frozen=True)
class Filter:
    text: str
    tree: Node

    @property
    def columns(self) -> set[str]:
        return _columns(self.tree)

    def mask(self, table: pa.Table, causes: Mapping[str, TextCause] | None = None) -> np.ndarray:
        """One bool per row of `table` (its columns: the built-ins and the metadata fields): True where the
        filter holds. `causes`: why text columns that are mostly numbers are text, for a filter comparing
        one with a number to say."""
        missing = sorted(self.columns - set(table.column_names))
        if missing:
            known = ", ".join(sorted((c for c in table.column_names if c != "row_id"),
                                     key=lambda c: (c in BUILT_IN_COLUMNS, c)))
            raise FilterError(f"unknown column {missing[0]!r} in the filter; the columns are {known}")
        holds, _ = _evaluate(self.tree, table, causes or {})
        return holds


def parse_filter(text: str) -> Filter:
    if text is None or not text.strip():
        raise FilterError("the filter is empty; write a condition such as price < 20000 and colour == 'red'")
    parser = _Parser(text, _tokens(text))
    tree = parser.expression()
    parser.expect_end()
    return Filter(text, tree)


def _unreadable_hint(first: str) -> str:
    """What the character the tokens stopped at most likely means."""
    if first in "'\"":
        return "close the quoted text"
    if first in "=!~<>":
        return "compare with ==, !=, <, <=, >, >=, in or contains"
    return "quote texts, e.g. colour == 'red'"


def _tokens(text: str) -> list[Token]:
    found, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None:
            raise FilterError(f"cannot read the filter at {_where(text, at)}; {_unreadable_hint(text[at])}")
        kind = match.lastgroup
        raw = match.group(kind)
        if kind == "number":
            found.append(Token("number", raw, float(raw) if re.search(r"[.eE]", raw) else int(raw), at))
        elif kind == "string":
            found.append(Token("string", raw, re.sub(r"\\(.)", r"\1", raw[1:-1]), at))
        elif kind == "name" and raw.lower() in _KEYWORDS:
            word = raw.lower()
            found.append(Token("keyword", word, {"true": True, "false": False, "null": None}.get(word), at))
        elif kind != "space":
            found.append(Token(kind, raw, raw, at))
        at = match.end()
    found.append(Token("end", "", None, len(text)))
    return found


def _where(text: str, at: int) -> str:
    return f"position {at + 1} ({text[:at]}⟨here⟩{text[at:]})"


class _Parser:
    def __init__(self, text: str, tokens: list[Token]):
        self.text, self.tokens, self.i = text, tokens, 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def fail(self, expected: str) -> None:
        got = f"'{self.token.text}'" if self.token.kind != "end" else "the end"
        raise FilterError(f"syntax error in the filter: expected {expected}, found {got} at "
                          f"{_where(self.text, self.token.at)}")

    def accept(self, kind: str, text: str | None = None) -> Token | None:
        token = self.token
        if token.kind == kind and (text is None or token.text == text):
            self.i += 1
            return token
        return None

    def expect_end(self) -> None:
        if self.token.kind != "end":
            self.fail("'and', 'or' or the end")

    def expression(self) -> Node:
        parts = [self.conjunction()]
        while self.accept("keyword", "or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else Logic("or", tuple(parts))

    def conjunction(self) -> Node:
        parts = [self.negation()]
        while self.accept("keyword", "and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else Logic("and", tuple(parts))

    def negation(self) -> Node:
        if self.accept("keyword", "not"):
            return Logic("not", (self.negation(),))
        if self.accept("punct", "("):
            inner = self.expression()
            if not self.accept("punct", ")"):
                self.fail("')'")
            return inner
        return self.condition()

    def condition(self) -> Node:
        if self.token.kind in ("number", "string") or (self.token.kind == "keyword" and
                                                         self.token.text in ("true", "false", "null")):
            value = self.literal()  # 20000 > price: the literal first
            op = self.accept("op")
            if op is None:
                self.fail("a comparison (==, !=, <, <=, >, >=)")
            return Compare(self.column(), _MIRROR[op.text], value)
        column = self.column()
        negate = bool(self.accept("keyword", "not"))
        if self.accept("keyword", "in"):
            return In(column, self.literal_list(), negate)
        if self.accept("keyword", "contains"):
            return Contains(column, self.literal(), negate)
        if negate:
            self.fail("'in' or 'contains' after 'not'")
        op = self.accept("op")
        if op is None:
            self.fail("a comparison (==, !=, <, <=, >, >=), 'in' or 'contains'")
        return Compare(column, op.text, self.literal())

    def column(self) -> str:
        token = self.accept("name")
        if token is None:
            self.fail("a column name")
        return token.text

    def literal(self) -> Any:
        token = self.token
        if token.kind in ("number", "string") or (token.kind == "keyword" and token.text in ("true", "false", "null")):
            self.i += 1
            return token.value
        if token.kind == "name":
            self.fail(f"a value (quote texts: '{token.text}')")
        self.fail("a value (a number, a quoted text, true, false or null)")

    def literal_list(self) -> tuple:
        if not self.accept("punct", "["):
            self.fail("'[' to start the list")
        values = [self.literal()]
        while self.accept("punct", ","):
            values.append(self.literal())
        if not self.accept("punct", "]"):
            self.fail("',' or ']'")
        return tuple(values)


def _columns(node: Node) -> set[str]:
    if isinstance(node, Logic):
        return set().union(*(_columns(p) for p in node.parts))
    return {node.column}


Truth = tuple[np.ndarray, np.ndarray]  # (holds, known) per row: SQL's true / false / unknown (null)


def _evaluate(node: Node, table: pa.Table, causes: Mapping[str, TextCause]) -> Truth:
    """Three-valued, as SQL: `holds` is true only where the value is known to be true."""
    if isinstance(node, Logic):
        parts = [_evaluate(p, table, causes) for p in node.parts]
        if node.op == "not":
            holds, known = parts[0]
            return ~holds & known, known
        holds = np.logical_and.reduce([h for h, _ in parts]) if node.op == "and" else \
            np.logical_or.reduce([h for h, _ in parts])
        decided = np.logical_or.reduce([~h & k for h, k in parts]) if node.op == "and" else \
            np.logical_and.reduce([~h & k for h, k in parts])  # and: one part false; or: every part false
        return holds, holds | decided
    column = table.column(node.column)
    valid = _bools(pc.is_valid(column))
    if isinstance(node, Contains):
        _check_contains(node.column, column.type, node.text)
        if pa.types.is_null(column.type):
            return np.zeros(len(column), bool), valid
        found = _bools(pc.match_substring(column, node.text, ignore_case=True))
        return (~found & valid if node.negate else found), valid
    if isinstance(node, In):
        for value in node.values:
            _check_type(node.column, column.type, value, "in", causes)
        present = [v for v in node.values if v is not None]
        found = pc.is_in(column, value_set=pa.array(present, type=column.type)) if present and \
            not pa.types.is_null(column.type) else pa.array(np.zeros(len(column), bool))
        holds, known = _bools(found), valid.copy()
        if None in node.values:  # `in [.., null]` asks for the missing values too: every row is decided
            holds |= ~valid
            known[:] = True
        return (~holds & known if node.negate else holds), known
    if node.value is None:
        if node.op not in ("==", "!="):
            raise FilterError(f"{node.column} {node.op} null compares nothing; use == null or != null")
        return (~valid if node.op == "==" else valid), np.ones(len(column), bool)
    _check_type(node.column, column.type, node.value, node.op, causes)
    if pa.types.is_null(column.type):
        return np.zeros(len(column), bool), valid
    compared = _COMPARE[node.op](column, pa.scalar(node.value, type=_literal_type(column.type, node.value)))
    return _bools(compared), valid


def _check_contains(column: str, arrow_type: pa.DataType, text: Any) -> None:
    if not isinstance(text, str):
        shown = "null" if text is None else str(text).lower() if isinstance(text, bool) else str(text)
        raise FilterError(f"contains takes a quoted text, e.g. {column} contains '{shown}'")
    kind = _kind(arrow_type)
    if kind not in ("text", "null"):
        raise FilterError(f"{column} holds {kind} values; contains finds text within text: compare {column} "
                          "with ==, !=, <, <=, >, >= or in")


def _bools(array) -> np.ndarray:
    return np.asarray(pc.fill_null(array, False).to_numpy(zero_copy_only=False), dtype=bool)


def _kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        return "number"
    if pa.types.is_boolean(arrow_type):
        return "true/false"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "text"
    if pa.types.is_null(arrow_type):
        return "null"
    return str(arrow_type)


def _check_type(column: str, arrow_type: pa.DataType, value: Any, op: str,
                causes: Mapping[str, TextCause]) -> None:
    if value is None:
        return
    kind = _kind(arrow_type)
    given = "true/false" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else "text"
    if kind == "null" or kind == given:
        if given == "true/false" and op not in ("==", "!=", "in"):
            raise FilterError(f"{column} holds true/false; compare it with == or !=")
        return
    if kind == "text" and given == "number" and column in causes:  # never "quote the number": fix the data
        raise FilterError(causes[column].explain(column))
    shown = repr(value) if given == "text" else str(value).lower() if given == "true/false" else str(value)
    example = {"number": "a number", "text": "a quoted text", "true/false": "true or false"}.get(kind, kind)
    raise FilterError(f"{column} holds {kind} values, not {given}s like {shown}; compare it with {example}")


def _literal_type(arrow_type: pa.DataType, value: Any) -> pa.DataType:
    if pa.types.is_integer(arrow_type) and isinstance(value, float):
        return pa.float64()  # price < 19999.5 on an integer column
    return arrow_type
