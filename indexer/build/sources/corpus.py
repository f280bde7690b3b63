"""Reading a text corpus into records: a first pass learns its columns (and checks its text, image and id
columns), a second converts row by row, holding nothing but the current row.

Where only a few rows are bad (at most 1% of lines), those rows are skipped and reported with their line
numbers, as are rows whose text is empty. Every record carries its corpus and line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Iterator

from ...errors import EmptyCorpusError, InvalidInputError, TextColumnError, option
from . import parquet
from .columns import ColumnInfo, ColumnTypes, ColumnTyping, infer_decimal
from .formats import (DEFAULT_ENCODING, DEFAULT_TEXT_COLUMN, SNIFF_LINES, Dialect, Row, check_corpus, check_decodes,
                      parquet_file, read_rows, table_delimiter)
from .keys import KeyCheck, key_text
from .photos import NO_PHOTO, resolve_photo
from .records import Corpus, SkippedRow, TextBatch, TextRecord, batch_of

STREAM_ROWS = 65_536  # rows per batch when a corpus is streamed


@dataclass
class PreparedCorpus:
    """A corpus checked and ready to stream: whatever can fail before its rows are used has been tried."""

    path: Path
    text_column: str
    encoding: str
    columns: ColumnTypes | None  # learnt by a first pass; None: a plain Parquet file, read as columns
    rows: int  # rows of the file (usable or not): for progress
    typing: ColumnTyping = field(default_factory=ColumnTyping)
    _parquet_nulls: dict[str, int] = field(default_factory=dict)  # a plain Parquet file: counted as it streams
    id_column: str | None = None
    dialect: Dialect | None = None  # a CSV or TSV table: how its cells were split and its numbers read

    def batches(self, rows: int | None = None) -> Iterator[TextBatch]:
        rows = rows or STREAM_ROWS
        if self.columns is None:
            self._parquet_nulls.clear()
            return parquet.batches(self.path, self.text_column, rows, self.typing, self._parquet_nulls, self.id_column)
        records = _records(self.path, self.text_column, self.encoding, self.columns, id_column=self.id_column,
                           dialect=self.dialect)
        return _record_batches(records, str(self.path), rows)

    def column_info(self) -> list[ColumnInfo]:
        """Its metadata columns as typed; for a plain Parquet file, complete once its batches are read."""
        if self.columns is not None:
            return self.columns.infos()
        return parquet.column_infos(self.path, self.text_column, self._parquet_nulls)


def prepare_corpus(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
                   typing: ColumnTyping | None = None, id_column: str | None = None,
                   delimiter: str | None = None) -> PreparedCorpus:
    """Check a corpus (it exists, decodes, has the text column, its keys are unique) and learn its columns'
    types, keeping no rows.

    A type set in `typing` is checked here, on every cell: a cell it cannot convert is refused now.
    `delimiter`: a CSV or TSV table's; None: a CSV file's is sniffed (formats.table_delimiter).
    """
    path = Path(os.path.abspath(path))
    typing = typing or ColumnTyping()
    suffix = check_corpus(path, encoding)
    column = text_column or DEFAULT_TEXT_COLUMN
    if suffix == ".parquet" and not typing.column_types and parquet.is_plain(path, column):
        parquet.check_text_column(path, column)
        if id_column:
            parquet.check_keys(path, id_column)
        return PreparedCorpus(path, column, encoding, None, parquet_file(path).metadata.num_rows, typing,
                              id_column=id_column)
    columns, dialect = _scanned(path, suffix, encoding, column, None, typing, id_column, delimiter)
    return PreparedCorpus(path, column, encoding, columns, columns.rows, columns.typing, id_column=id_column,
                          dialect=dialect)


def stream_corpus(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
                  rows: int | None = None, typing: ColumnTyping | None = None,
                  id_column: str | None = None, delimiter: str | None = None) -> Iterator[TextBatch]:
    """The texts of one corpus in batches: the same rows as `read_corpus`, holding one batch at a time.

    Plain Parquet files (text, number and boolean columns) are read as columns; other formats row by
    row, in two passes (the first learns each column's type: CSV needs every row for that).
    """
    return prepare_corpus(path, text_column, encoding, typing, id_column, delimiter).batches(rows)


def read_texts(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
               typing: ColumnTyping | None = None, delimiter: str | None = None) -> list[TextRecord]:
    """The texts of one corpus (rows that cannot be used are left out; see read_corpus)."""
    return read_corpus(path, text_column, encoding, typing=typing, delimiter=delimiter).records


def read_corpus(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
                image_column: str | None = None, typing: ColumnTyping | None = None,
                id_column: str | None = None, delimiter: str | None = None) -> Corpus:
    """Texts of one corpus, the rows skipped with their reasons, and its columns as typed.

    In tables every column but the text column is kept as metadata, typed. With an
    image column, each row links its photo (relative to the table's folder, or
    absolute): the record's `image`; an empty (or missing-marker) cell means the row has no photo.
    With an id column, each row's key (its cell, as text) is the record's `key`: keys must be
    present and unique (KeyColumnError names the lines otherwise). A CSV file's delimiter is sniffed unless
    given; a decimal mark not set in `typing` is "." but for a ';'-separated table whose numbers are written
    "12,5" (Excel's export where the comma is the decimal mark), where it is ",": `Corpus.dialect` says which.
    """
    path = Path(os.path.abspath(path))
    text_column = text_column or DEFAULT_TEXT_COLUMN
    columns, dialect = _scanned(path, check_corpus(path, encoding), encoding, text_column, image_column,
                                typing or ColumnTyping(), id_column, delimiter)
    records, skipped = [], []
    for item in _records(path, text_column, encoding, columns, image_column, id_column, dialect):
        (records if isinstance(item, TextRecord) else skipped).append(item)
    skipped.sort(key=lambda s: s.line)
    return Corpus(records, skipped, columns.infos(), dialect)


def empty_corpus_error(path: str | Path) -> EmptyCorpusError:
    """A corpus with no rows is refused as one without its text column is: indexing it would add nothing,
    and an empty file named by mistake (an export that failed) would otherwise pass unnoticed."""
    return EmptyCorpusError(f"text corpus {path} holds no rows (it is empty, or a header alone); put rows in "
                            "it, or leave it out of this run")


def unusable_corpus_error(path: Path, first: SkippedRow, rows: int, delimiter: str | None = None) -> EmptyCorpusError:
    """A corpus every row of which is skipped is refused as an empty one is, whether or not the index holds it
    already: a run would add nothing or, on a table it holds, drop every item of it for a broken export."""
    which = f"all {rows} skipped; the first, line" if rows > 1 else "its one row skipped, line"
    other = ""
    if delimiter and "fields where the header has" in first.reason:
        other = (f"; if its cells are not separated by {_shown(delimiter)!r}, name the delimiter with "
                 f"{option('delimiter')}")
    return EmptyCorpusError(f"text corpus {path} holds no row that can be indexed ({which} {first.line}: "
                            f"{first.reason}); fix the file, or leave it out of this run{other}")


def _scanned(path: Path, suffix: str, encoding: str, text_column: str, image_column: str | None,
             typing: ColumnTyping, id_column: str | None = None,
             delimiter: str | None = None) -> tuple[ColumnTypes, Dialect | None]:
    """The first pass over a checked corpus: its columns and each one's type, and for a CSV or TSV table how
    its cells are split and its numbers read."""
    if suffix != ".parquet":
        check_decodes(path, encoding)
    delimiter, sniffed = table_delimiter(path, suffix, encoding, delimiter)
    inferred = delimiter == ";" and typing.decimal is None and _decimal_comma(path, suffix, encoding, delimiter)
    typing = replace(typing, decimal=typing.decimal or ("," if inferred else "."))
    columns = _scan_columns(path, read_rows(path, suffix, encoding, delimiter), text_column, image_column, typing,
                            id_column, delimiter)
    return columns, Dialect(delimiter, typing.decimal, sniffed, inferred) if delimiter else None


def _decimal_comma(path: Path, suffix: str, encoding: str, delimiter: str) -> bool:
    """Whether a ';'-separated table's first rows write their numbers with a decimal comma, and none with a point."""
    cells = [cell for _, row in islice(read_rows(path, suffix, encoding, delimiter), SNIFF_LINES)
             if isinstance(row, dict) for cell in row.values()]
    return infer_decimal(cells) == ","


def _scan_columns(path: Path, rows: Iterator[Row], text_column: str, image_column: str | None,
                  typing: ColumnTyping, id_column: str | None = None, delimiter: str | None = None) -> ColumnTypes:
    """First pass: the columns, their types, and a clear error for a missing text, image or id column, a
    column whose type is set but that the corpus lacks, or keys missing or repeated."""
    if text_column in typing.column_types:
        raise InvalidInputError(f"{text_column} is the text column of {path.name}, always read as text; "
                                f"leave it out of {option('column_types')}")
    columns = ColumnTypes(path.suffix.lower() in (".csv", ".tsv"), typing, path.name)
    keys = KeyCheck(path, id_column) if id_column else None
    usable, first_skipped = False, None
    for line, row in rows:
        columns.rows += 1
        if isinstance(row, str) or not _has_text(row, text_column):
            first_skipped = first_skipped or SkippedRow(str(path), line, row if isinstance(row, str) else "empty text")
        if not isinstance(row, str):
            usable = True
            columns.see(line, row, _has_text(row, text_column))
            if keys is not None:
                keys.see(line, row.get(id_column), _has_text(row, text_column))
    for name, flag in ((text_column, "text_column"), (image_column, "image_column"), (id_column, "id_column")):
        if usable and name is not None and name not in columns.names:
            raise TextColumnError(f"{path.name} has no column {name!r}; its columns are {', '.join(columns.names)} "
                                  f"(choose one with {option(flag)}){_delimiter_hint(list(columns.names))}")
    unknown = [name for name in typing.column_types if name not in columns.names]
    if usable and unknown:
        raise InvalidInputError(f"{path.name} has no column {unknown[0]!r} (named in {option('column_types')}); "
                                f"its columns are {', '.join(columns.names)}")
    if columns.rows and not columns.items:
        raise unusable_corpus_error(path, first_skipped, columns.rows, delimiter)
    columns.finish(text_column)
    if keys is not None:
        keys.check()
    return columns


def _delimiter_hint(names: list[str]) -> str:
    """A header read as one column that another delimiter would split: say which to name."""
    split = [_shown(d) for d in (",", ";", "\t", "|") if len(names) == 1 and d in names[0]]
    return f"; if its cells are separated by {split[0]!r}, name it with {option('delimiter', split[0])}" \
        if split else ""


def _shown(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else delimiter


def _has_text(row: dict[str, Any], text_column: str) -> bool:
    """Whether the row becomes an item (as `_records` decides): its text is not empty."""
    text = row.get(text_column)
    return text is not None and bool((text if isinstance(text, str) else str(text)).strip())


def _records(path: Path, text_column: str, encoding: str, columns: ColumnTypes, image_column: str | None = None,
             id_column: str | None = None, dialect: Dialect | None = None) -> Iterator[TextRecord | SkippedRow]:
    """The corpus's records and skipped rows in line order: the second pass over the file.

    The first pass (`_scanned`) learnt the columns and each one's type (a CSV column is a number only
    if every cell is); this one converts row by row: nothing but the current row is held.
    """
    source = str(path)
    for line, row in read_rows(path, path.suffix.lower(), encoding, dialect.delimiter if dialect else None):
        if isinstance(row, str):
            yield SkippedRow(source, line, row)
            continue
        text = row.get(text_column)
        text = "" if text is None else (text if isinstance(text, str) else str(text)).strip()
        if not text:
            yield SkippedRow(source, line, "empty text")
            continue
        photo = resolve_photo(path, row.get(image_column), columns.typing) if image_column else NO_PHOTO
        key = key_text(row.get(id_column)) if id_column else None
        yield TextRecord(text, source, line, columns.typed(row), photo.path, key, photo.skipped)


def _record_batches(records: Iterator[TextRecord | SkippedRow], source: str, rows: int) -> Iterator[TextBatch]:
    chunk: list[TextRecord] = []
    skipped: list[SkippedRow] = []
    for item in records:
        if isinstance(item, SkippedRow):
            skipped.append(item)
            continue
        chunk.append(item)
        if len(chunk) == rows:
            yield batch_of(source, chunk, skipped)
            chunk, skipped = [], []
    if chunk or skipped:
        yield batch_of(source, chunk, skipped)
