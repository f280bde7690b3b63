"""Reading tables: each text format as rows, `(line, {column: value})`, or `(line, why the row cannot be used)`.

Texts are read as text in every format: UTF-8 (with or without a byte-order mark) unless another encoding
is named. A corpus that does not decode is refused with the file and line; where only a few lines are bad
(at most 1%), those rows are left to be skipped with their line numbers.

A new table format is a reader here: its suffix in TEXT_FORMATS and its rows in `read_rows`; typing,
skipped rows, planning and identity then apply to it as to the others.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ...errors import CorpusEncodingError, InvalidInputError, option

TEXT_FORMATS = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_ENCODING = "utf-8"
BAD_LINE_SHARE = 0.01  # more undecodable lines than this and the corpus is in another encoding
_UNDECODED = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" leaves for a bad byte

Row = tuple[int, "dict[str, Any] | str"]
DELIMITERS = {",": ",", ";": ";", "\t": "\t", "tab": "\t", "|": "|"}  # as --delimiter names them -> the character
SNIFF_LINES = 100  # lines of a CSV file its delimiter is told from


@dataclass(frozen=True)
class Dialect:
    """How a CSV or TSV table was split into cells and its numbers read: as given, or as the file showed."""

    delimiter: str = ","
    decimal: str = "."
    sniffed: bool = False  # the delimiter was told from the file, not given
    inferred: bool = False  # the decimal mark was told from the file's numbers, not given

    def describe(self, suffix: str) -> str | None:
        """"delimiter ';' (sniffed), decimal ',' (inferred)"; None for what a plain file of its kind is."""
        if self.delimiter == ("\t" if suffix == ".tsv" else ",") and self.decimal == ".":
            return None
        shown = "tab" if self.delimiter == "\t" else repr(self.delimiter)
        parts = [f"delimiter {shown}" + (" (sniffed)" if self.sniffed else "")]
        if self.decimal != ".":
            parts.append(f"decimal {self.decimal!r}" + (" (inferred from its numbers)" if self.inferred else ""))
        return ", ".join(parts)


def check_delimiter(text: str) -> str:
    """`--delimiter` as the character it names."""
    if text not in DELIMITERS:
        raise InvalidInputError(f"unknown delimiter {text!r} in {option('delimiter')}; use , ; | or tab")
    return DELIMITERS[text]


def table_delimiter(path: Path, suffix: str, encoding: str, given: str | None) -> tuple[str | None, bool]:
    """(the delimiter a CSV or TSV table is read with, whether it was sniffed); (None, False) for other formats.
    A CSV file's is the one of , ; tab | that splits its header into the most columns its first rows agree
    with (Excel writes ';' where the decimal mark is a comma)."""
    if suffix not in (".csv", ".tsv"):
        return None, False
    if given or suffix == ".tsv":
        return given or "\t", False
    with open_text(path, encoding) as handle:
        sample = [line for _, line in zip(range(SNIFF_LINES), handle)]
    best = max(DELIMITERS.values(), key=lambda d: _splits(sample, d))
    return (best if _splits(sample, best)[0] else ","), True  # one column: nothing to tell


def _splits(sample: list[str], delimiter: str) -> tuple[bool, float, int]:
    """How well `delimiter` splits a sample: (into columns at all, the share of rows with the header's number
    of fields, that number); the first delimiter of the best wins ties, the comma first."""
    rows = [r for r in csv.reader(sample, delimiter=delimiter) if r and r != [""]]
    if not rows:
        return False, 0.0, 0
    width = len(rows[0])
    agree = sum(len(r) == width for r in rows[1:]) / max(len(rows) - 1, 1)
    return width > 1, agree, width


def check_corpus(path: Path, encoding: str = DEFAULT_ENCODING) -> str:
    """The corpus's format, once the file and encoding are known to be usable."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise InvalidInputError(f"text corpus {path} {what}; check the path")
    suffix = path.suffix.lower()
    if suffix not in TEXT_FORMATS:
        raise InvalidInputError(
            f"{path.name}: unsupported text corpus type {suffix or '(none)'}; use {', '.join(TEXT_FORMATS)}"
        )
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidInputError(f"unknown encoding {encoding!r}; use e.g. utf-8, latin-1, cp1252 or gb18030") from None
    return suffix


def read_rows(path: Path, suffix: str, encoding: str, delimiter: str | None = None) -> Iterator[Row]:
    """The rows of a checked corpus, in file order; blank lines are not rows. `delimiter`: a CSV or TSV
    table's (table_delimiter)."""
    if suffix in (".csv", ".tsv"):
        return _delimited_rows(path, encoding, delimiter or ("\t" if suffix == ".tsv" else ","))
    return {".txt": _txt_rows, ".jsonl": _jsonl_rows, ".parquet": _parquet_rows}[suffix](path, encoding)


def open_text(path: Path, encoding: str):
    # utf-8-sig reads files with and without a byte-order mark; bad bytes become markers we can find.
    name = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    return open(path, encoding=name, errors="surrogateescape", newline="")


def check_decodes(path: Path, encoding: str) -> None:
    """Refuse a corpus in another encoding; a few bad lines are left to be skipped row by row."""
    bad, total = [], 0
    with open_text(path, encoding) as handle:
        for number, line in enumerate(handle, start=1):
            total = number
            if _UNDECODED.search(line):
                bad.append(number)
    if bad and len(bad) > total * BAD_LINE_SHARE:
        more = f" (and {len(bad) - 1} more of its {total} lines)" if len(bad) > 1 else ""
        raise CorpusEncodingError(
            f"{path.name} is not {encoding}: line {bad[0]} cannot be decoded{more}; "
            f"name the file's encoding, e.g. {option('encoding', 'latin-1')}"
        )


def parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise InvalidInputError(f"cannot read {path.name}: {first_line}; check the file's format") from None


def _not_decoded(encoding: str) -> str:
    return f"not valid {encoding}; name the file's encoding with {option('encoding')}"


def _txt_rows(path: Path, encoding: str) -> Iterator[Row]:
    with open_text(path, encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines separate texts; they are not rows
            yield number, (_not_decoded(encoding) if _UNDECODED.search(line) else {DEFAULT_TEXT_COLUMN: line})


def _delimited_rows(path: Path, encoding: str, delimiter: str) -> Iterator[Row]:
    with open_text(path, encoding) as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        _check_quotes_close(path, lines, 1)
        header = [h.strip() for h in header]
        ended = reader.line_num
        while True:
            lines.taken.clear()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InvalidInputError(f"cannot read {path.name} near line {reader.line_num}: {exc}; "
                                        "check the file's quoting") from None
            line, ended = ended + 1, reader.line_num
            _check_quotes_close(path, lines, line)
            if not fields or fields == [""]:
                continue  # a blank line
            if any(_UNDECODED.search(f) for f in fields):
                yield line, _not_decoded(encoding)
            elif ended > line and _merged_rows(lines.taken, delimiter, len(header)):
                yield line, (f"a quote opened on line {line + _first_odd(lines.taken)} closes only on line {ended}, "
                             f"so lines {line}-{ended} read as one row: a stray quote? fix the quoting")
            elif len(fields) != len(header):
                yield line, f"has {len(fields)} fields where the header has {len(header)}"
            else:
                yield line, dict(zip(header, fields))


class _Lines:
    """The lines a CSV reader takes, kept for the row it is reading: a row that ran into the end of the file
    took every line after its opening quote."""

    def __init__(self, handle):
        self.handle, self.taken, self.at_end = handle, [], False

    def __iter__(self):
        return self

    def __next__(self) -> str:
        try:
            line = next(self.handle)
        except StopIteration:
            self.at_end = True
            raise
        self.taken.append(line)
        return line


def _merged_rows(taken: list[str], delimiter: str, columns: int) -> bool:
    """Whether a row read over several lines is rows merged by a stray quote, not a field holding newlines: its
    quoting is not valid CSV (a quote closing amid a field), or every line inside it reads as a row of its own."""
    try:
        for _ in csv.reader(io.StringIO("".join(taken)), delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return True
    inside = taken[1:-1]
    return columns > 1 and bool(inside) and all(len(next(csv.reader([text], delimiter=delimiter), [])) == columns
                                                 for text in inside)


def _first_odd(taken: list[str]) -> int:
    """The index of the first line holding an odd number of quotes: where a field's quote opened."""
    return next((number for number, text in enumerate(taken) if text.count('"') % 2), 0)


def _check_quotes_close(path: Path, lines: _Lines, first_line: int) -> None:
    """Refuse a row whose quote never closes: the reader, asked for more within a quoted field at the end of the
    file, ends the row there, and the rest of the file would be one field of it, without a word."""
    if not lines.at_end:
        return
    opened, odd = 0, False
    for number, text in enumerate(lines.taken):
        quotes = text.count('"') % 2
        if quotes and not odd:
            opened = number
        odd ^= bool(quotes)
    where = first_line + opened
    rest = f"lines {where}-{first_line + len(lines.taken) - 1}" if len(lines.taken) - opened > 1 else f"line {where}"
    raise InvalidInputError(f"{path.name} line {where}: a quote opens there and is never closed, so {rest} would "
                            "read as one field; close the quote (a quote inside a quoted field is written twice: "
                            '""), then run again')


def _jsonl_rows(path: Path, encoding: str) -> Iterator[Row]:
    with open_text(path, encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if _UNDECODED.search(line):
                yield number, _not_decoded(encoding)
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                yield number, f"not valid JSON ({exc.args[0].split(':')[0]})"
                continue
            yield number, (value if isinstance(value, dict) else "not a JSON object")


def _parquet_rows(path: Path, encoding: str) -> Iterator[Row]:
    number = 0
    for batch in parquet_file(path).iter_batches():
        for row in batch.to_pylist():
            number += 1
            try:
                yield number, {k: _decode_cell(v, encoding) for k, v in row.items()}
            except UnicodeDecodeError:
                yield number, _not_decoded(encoding)


def _decode_cell(value: Any, encoding: str) -> Any:
    return value.decode(encoding) if isinstance(value, bytes) else value
