"""Typing columns: which cells are missing, and each metadata column's one type.

Table cells that are empty or a missing marker (NA, N/A, null, None, -, nan by default, matched ignoring
case and surrounding spaces) are nulls, in every format, so one "N/A" does not make a column of prices
text. A column's type is inferred from its other cells unless set (`ColumnTyping.column_types`); what a
read found of each column (`ColumnInfo`) is reported and recorded with the source.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidInputError, option

DECIMAL_MARKS = {".": "decimal point", ",": "decimal comma"}
_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")  # no leading zeros: "01234" is an identifier, not a number
# A number with either decimal mark, as a cell of text writes it: "12.5" or, with --decimal ",", "12,5".
_FLOAT = {mark: re.compile(rf"[+-]?((0|[1-9][0-9]*)(\{mark}[0-9]*)?|\{mark}[0-9]+)([eE][+-]?[0-9]+)?")
          for mark in DECIMAL_MARKS}
# A type set by the user converts what it can read: leading zeros are fine there ("01234" as an int is 1234).
_WHOLE = re.compile(r"[+-]?[0-9]+")
_CODE = re.compile(r"0[0-9]+")  # digits with a leading zero: a zip code, a phone number, an article number
_DECIMAL = {mark: re.compile(rf"[+-]?([0-9]+(\{mark}[0-9]*)?|\{mark}[0-9]+)([eE][+-]?[0-9]+)?")
            for mark in DECIMAL_MARKS}
_GROUPED = re.compile(r"[+-]?[0-9]{1,3}([,.' \u00a0\u202f][0-9]{3})+([.,][0-9]+)?")  # 1,234,567 or 1.234,5
_TRUTH = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
DEFAULT_NA_VALUES = ("NA", "N/A", "null", "None", "-", "nan")  # cells that mean missing; an empty cell always does
COLUMN_TYPES = {"int": "int", "float": "float", "bool": "bool", "str": "text", "text": "text"}  # name -> type


@dataclass(frozen=True)
class ColumnTyping:
    """How a table's cells become typed values: the markers that mean missing (matched ignoring case and
    surrounding spaces; an empty cell always means missing), and columns whose type is set, not inferred."""

    na_values: tuple[str, ...] = DEFAULT_NA_VALUES
    column_types: dict[str, str] = field(default_factory=dict)  # column -> int | float | bool | text
    decimal: str | None = None  # the decimal mark of numbers in CSV and TSV cells; None: as the table shows

    def __post_init__(self):
        object.__setattr__(self, "markers", frozenset(v.strip().lower() for v in self.na_values))

    def missing(self, value: Any) -> bool:
        if value is None:
            return True
        if isinstance(value, str):
            cell = value.strip()
            return not cell or cell.lower() in self.markers
        return isinstance(value, float) and value != value  # NaN: a float's own "missing"


def parse_na_values(text: str) -> tuple[str, ...]:
    """`--na-values` as given: comma-separated markers, or a JSON list of them (which may hold a comma:
    '["n/a", "a, b"]'); "" leaves only empty cells missing."""
    if text.strip().startswith("["):
        try:
            markers = json.loads(text)
        except ValueError:
            markers = None
        if not isinstance(markers, list) or not all(isinstance(m, str) for m in markers):
            raise InvalidInputError(f"{option('na_values')} {text!r} starts like a JSON list but is not one of "
                                    """strings; write e.g. '["N/A", "a, b"]', or the markers comma-separated""")
        return tuple(m.strip() for m in markers if m.strip())
    return tuple(v.strip() for v in text.split(",") if v.strip())


def na_values_argument(markers: tuple[str, ...]) -> str:
    """Markers as `--na-values` takes them, quoted for a shell: comma-separated, or a JSON list where one holds
    a comma (split at it, "12,5" would be two markers)."""
    if any("," in m or m.startswith("[") for m in markers):
        return shlex.quote(json.dumps(list(markers), ensure_ascii=False))
    text = ",".join(markers)
    return f'"{text}"' if not re.search(r'["$`\\!]', text) else shlex.quote(text)


def check_decimal(mark: str) -> str:
    if mark not in DECIMAL_MARKS:
        raise InvalidInputError(f"unknown decimal mark {mark!r} in {option('decimal')}; use . or ,")
    return mark


def number_form(value: str, decimal: str) -> str | None:
    """How a cell that is not a number with `decimal` is one all the same, so that it is never taken for a
    missing marker: "decimal comma" or "decimal point" (the other mark), "grouped digits" (1,234,567); None:
    it is no number."""
    other = "," if decimal == "." else "."
    if _FLOAT[other].fullmatch(value) and re.search("[0-9]", value):
        return DECIMAL_MARKS[other]
    return "grouped digits" if _GROUPED.fullmatch(value) else None


def infer_decimal(cells: list[str]) -> str | None:
    """"," where a table's cells write numbers with a decimal comma ("12,5") and none with a point; else None."""
    comma = point = False
    for cell in cells:
        cell = cell.strip()
        comma = comma or bool(re.fullmatch(r"[+-]?[0-9]+,[0-9]+", cell))
        point = point or bool(re.fullmatch(r"[+-]?[0-9]+\.[0-9]+", cell))
    return "," if comma and not point else None


def parse_column_types(text: str) -> dict[str, str]:
    """`--column-types price=float,zip=str` as a checked mapping of column -> type."""
    types = {}
    for part in (p.strip() for p in text.split(",")):
        name, equals, kind = (x.strip() for x in part.partition("="))
        if not part:
            continue
        if not equals or not name or not kind:
            raise InvalidInputError(f"{option('column_types')} takes NAME=TYPE pairs, e.g. price=float,zip=str "
                                    f"(got {part!r})")
        types[name] = kind
    return check_column_types(types)


def check_column_types(types: dict[str, str]) -> dict[str, str]:
    """The types named, in their canonical names (str is text); an unknown one is refused."""
    checked = {}
    for name, kind in types.items():
        if str(kind).lower() not in COLUMN_TYPES:
            raise InvalidInputError(f"unknown column type {kind!r} for {name} in {option('column_types')}; "
                                    "use int, float, bool or str")
        checked[name] = COLUMN_TYPES[str(kind).lower()]
    return checked


@dataclass(frozen=True)
class ColumnInfo:
    """What reading a corpus found of one metadata column (over the rows that became items).

    A text column that is mostly numbers (more than half of its values) keeps the first line whose
    value is not one: why the column is text, what the run reports and what a filter comparing it
    with a number names. A column holding codes with leading zeros (zip codes: "01234") is text by
    intent, and keeps none.
    """

    name: str
    type: str  # int | float | bool | text | empty (no values at all)
    nulls: int
    set: bool = False  # the type was set (column_types), not inferred
    first_text_line: int | None = None  # a text column that is mostly numbers: the first line holding no number
    first_text_value: str | None = None
    first_text_number: str | None = None  # that value is a number all the same, in this form (number_form)

    def to_record(self) -> dict[str, Any]:
        """As the manifest records it with its source (Source.columns)."""
        return {k: v for k, v in self.__dict__.items() if v is not None and v is not False}


@dataclass
class _Seen:
    """What the first pass saw of one column's present (not missing) values."""

    present: int = 0
    numbers: int = 0  # values that are numbers (ints or floats)
    ints: bool = True  # CSV: every value is a whole number (no leading zeros: "01234" is an identifier)
    floats: bool = True  # CSV: every value is a number
    bools: bool = True  # CSV: every value is true or false
    kinds: set[type] = field(default_factory=set)  # JSON and Parquet: the types of the values
    first_text: tuple[int, str, str | None] | None = None  # the first value that is not a number: (line, value,
    # the form in which it is a number all the same: number_form)
    codes: bool = False  # some values are digits with leading zeros: codes, meant as text

    def add(self, line: int, value: Any, from_text: bool, decimal: str = ".") -> None:
        self.present += 1
        form = None
        if from_text:
            value = value.strip()
            number = bool(_FLOAT[decimal].fullmatch(value))
            if self.ints:
                self.ints = bool(_INT.fullmatch(value)) and abs(int(value)) < 2**63
            self.floats = self.floats and number
            if self.bools:
                self.bools = value.lower() in ("true", "false")
            form = None if number else number_form(value, decimal)
        else:
            self.kinds.add(type(value))
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
        self.numbers += number or form is not None  # "12,5" is a number too, in a column of numbers
        if not number and isinstance(value, str) and _CODE.fullmatch(value):
            self.codes = True
        if not number and self.first_text is None:
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            self.first_text = (line, shown, form)

    def kind(self, from_text: bool) -> str:
        if not self.present:
            return "empty"
        if from_text:
            return "int" if self.ints else "float" if self.floats else "bool" if self.bools else "text"
        for kind, allowed in (("bool", {bool}), ("int", {int}), ("float", {int, float})):
            if self.kinds <= allowed:
                return kind
        return "text"


class ColumnTypes:
    """Each metadata column's one type for the whole corpus, as a database column would have, learnt a row
    at a time over the rows that become items. Missing values (empty cells, the missing markers, NaN) are
    nulls and do not count. CSV cells are numbers or booleans only if every present cell is; JSON and
    Parquet values keep their type, ints mixed with floats become floats, and anything else mixed becomes
    text. A type set in `typing.column_types` is the column's type, and every value must convert to it."""

    def __init__(self, from_text: bool, typing: ColumnTyping, file: str):
        self.from_text, self.typing, self.file = from_text, typing, file
        self.decimal = typing.decimal or "."
        self.names: dict[str, None] = {}
        self.metadata: list[str] = []
        self.rows = 0
        self.items = 0  # rows with a usable text: what the types and null counts describe
        self._seen: dict[str, _Seen] = {}
        self._kinds: dict[str, str] = {}  # column -> type, once the pass is over

    def see(self, line: int, row: dict[str, Any], item: bool) -> None:
        self.names.update(dict.fromkeys(row))
        if not item:
            return
        self.items += 1
        for name, value in row.items():
            if self.typing.missing(value):
                continue
            self._seen.setdefault(name, _Seen()).add(line, value, self.from_text, self.decimal)
            if name in self.typing.column_types:
                self._check_converts(name, value, line)

    def _check_converts(self, name: str, value: Any, line: int) -> None:
        kind = self.typing.column_types[name]
        value = value.strip() if self.from_text else value
        try:
            _set_type(value, kind, self.decimal)
        except ValueError:
            article = "an" if kind == "int" else "a"
            form = number_form(value, self.decimal) if isinstance(value, str) else None
            fix = f"count it as missing with {option('na_values')}" if form is None else \
                f"read it {_reading(form)}"  # a number is never offered as a missing marker
            raise InvalidInputError(
                f"{self.file} line {line}: {name} holds {value!r}, which is not {article} {kind} "
                f"({option('column_types')} sets {name}={kind}); fix that line, or {fix}") from None

    def finish(self, text_column: str) -> None:
        self.metadata = [c for c in self.names if c != text_column]
        self._kinds = {name: self.typing.column_types.get(name) or self._seen.get(name, _Seen()).kind(self.from_text)
                       for name in self.metadata}

    def infos(self) -> list[ColumnInfo]:
        found = []
        for name in self.metadata:
            seen, kind, chosen = self._seen.get(name, _Seen()), self._kinds[name], name in self.typing.column_types
            mostly_numbers = 2 * seen.numbers > seen.present and not seen.codes
            line, value, form = seen.first_text if kind == "text" and not chosen and mostly_numbers else (None,) * 3
            found.append(ColumnInfo(name, kind, self.items - seen.present, chosen, line, value, form))
        return found

    def typed(self, row: dict[str, Any]) -> dict[str, Any]:
        return {name: self._convert(name, row.get(name)) for name in self.metadata}

    def _convert(self, name: str, value: Any) -> Any:
        if self.typing.missing(value):
            return None
        kind = self._kinds[name]
        if self.from_text:
            value = value.strip()
        if name in self.typing.column_types:
            return _set_type(value, kind, self.decimal)
        if self.from_text:
            return int(value) if kind == "int" else float(value.replace(self.decimal, ".")) if kind == "float" else \
                value.lower() == "true" if kind == "bool" else value
        if kind in ("bool", "int"):
            return value
        if kind == "float":
            return float(value)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _reading(form: str) -> str:
    """How to read a number written in `form` (number_form) as one."""
    mark = {name: mark for mark, name in DECIMAL_MARKS.items()}.get(form)
    return f"with {option('decimal', mark)}" if mark else "with its digits ungrouped (1234567, not 1,234,567)"


def _set_type(value: Any, kind: str, decimal: str = ".") -> Any:
    """A present value as the type the user set; ValueError where it does not convert."""
    if kind == "text":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, str):
        cell = value.strip()
        if kind == "int" and _WHOLE.fullmatch(cell) and abs(int(cell)) < 2**63:
            return int(cell)
        if kind == "float" and _DECIMAL[decimal].fullmatch(cell):
            return float(cell.replace(decimal, "."))
        if kind == "bool" and cell.lower() in _TRUTH:
            return _TRUTH[cell.lower()]
    elif isinstance(value, bool):
        if kind == "bool":
            return value
    elif isinstance(value, (int, float)):
        if kind == "float":
            return float(value)
        if kind == "int" and float(value).is_integer() and abs(value) < 2**63:
            return int(value)
        if kind == "bool" and value in (0, 1):
            return bool(value)
    raise ValueError(f"{value!r} is not {kind}")
