"""Reading sources: image files under folders, and text corpora (txt, csv, tsv, jsonl, parquet).

Texts are read as text in every format: UTF-8 (with or without a byte-order
mark) unless another encoding is named. A corpus that does not decode is
refused with the file and line; where only a few rows are bad (at most 1% of
lines), those rows are skipped and reported with their line numbers, as are
rows whose text is empty. Every record carries its corpus and line.

Table cells that are empty or a missing marker (NA, N/A, null, None, -, nan by
default, matched ignoring case and surrounding spaces) are nulls, in every format,
so one "N/A" does not make a column of prices text. A column's type is inferred
from its other cells unless set (`ColumnTyping.column_types`); what a read found
of each column (`ColumnInfo`) is reported and recorded with the source.
"""
from __future__ import annotations

import codecs
import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import (CorpusEncodingError, EmptyCorpusError, InvalidInputError, KeyColumnError, NoImagesError,
                     TextColumnError, option)
from ..imaging import supported_extensions

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

TEXT_FORMATS = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
DEFAULT_TEXT_COLUMN = "text"
DEFAULT_ENCODING = "utf-8"
BAD_LINE_SHARE = 0.01  # more undecodable lines than this and the corpus is in another encoding
_UNDECODED = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" leaves for a bad byte
_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")  # no leading zeros: "01234" is an identifier, not a number
_FLOAT = re.compile(r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
# A type set by the user converts what it can read: leading zeros are fine there ("01234" as an int is 1234).
_WHOLE = re.compile(r"[+-]?[0-9]+")
_CODE = re.compile(r"0[0-9]+")  # digits with a leading zero: a zip code, a phone number, an article number
_DECIMAL = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUTH = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
DEFAULT_NA_VALUES = ("NA", "N/A", "null", "None", "-", "nan")  # cells that mean missing; an empty cell always does
COLUMN_TYPES = {"int": "int", "float": "float", "bool": "bool", "str": "text", "text": "text"}  # name -> type


@dataclass(frozen=True)
class ColumnTyping:
    """How a table's cells become typed values: the markers that mean missing (matched ignoring case and
    surrounding spaces; an empty cell always means missing), and columns whose type is set, not inferred."""

    na_values: tuple[str, ...] = DEFAULT_NA_VALUES
    column_types: dict[str, str] = field(default_factory=dict)  # column -> int | float | bool | text

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
    """`--na-values` as given: comma-separated markers; "" leaves only empty cells missing."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


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

    def to_record(self) -> dict[str, Any]:
        """As the manifest records it with its source (Source.columns)."""
        return {k: v for k, v in self.__dict__.items() if v is not None and v is not False}


@dataclass(frozen=True)
class TextRecord:
    text: str
    source: str  # the corpus file, absolute
    line: int  # 1-based line of the file (row number for Parquet)
    metadata: dict[str, Any] = field(default_factory=dict)
    image: str | None = None  # with an image column: the row's photo, absolute (the row is a product)
    key: str | None = None  # with an id column: the row's key, as text (the row's identity across runs)


@dataclass(frozen=True)
class SkippedRow:
    source: str
    line: int
    reason: str


@dataclass
class Corpus:
    records: list[TextRecord]
    skipped: list[SkippedRow]
    columns: list[ColumnInfo] = field(default_factory=list)  # its metadata columns, as typed


@dataclass
class TextBatch:
    """Usable rows of a corpus, a batch at a time, as columns."""

    source: str
    texts: pa.Array  # stripped, never empty
    lines: np.ndarray  # int64, as TextRecord.line
    metadata: pa.Array | None  # a struct per row, or None where the corpus has no other columns
    skipped: list[SkippedRow]
    keys: pa.Array | None = None  # with an id column: each row's key, as text


STREAM_ROWS = 65_536  # rows per batch when a corpus is streamed


@dataclass
class PreparedCorpus:
    """A corpus checked and ready to stream: whatever can fail before its rows are used has been tried."""

    path: Path
    text_column: str
    encoding: str
    columns: _ColumnTypes | None  # learnt by a first pass; None: a plain Parquet file, read as columns
    rows: int  # rows of the file (usable or not): for progress
    typing: ColumnTyping = field(default_factory=ColumnTyping)
    _parquet_nulls: dict[str, int] = field(default_factory=dict)  # a plain Parquet file: counted as it streams
    id_column: str | None = None

    def batches(self, rows: int | None = None) -> Iterator[TextBatch]:
        rows = rows or STREAM_ROWS
        if self.columns is None:
            self._parquet_nulls.clear()
            return _parquet_batches(self.path, self.text_column, rows, self.typing, self._parquet_nulls, self.id_column)
        records = _records(self.path, self.text_column, self.encoding, self.columns, id_column=self.id_column)
        return _record_batches(records, str(self.path), rows)

    def column_info(self) -> list[ColumnInfo]:
        """Its metadata columns as typed; for a plain Parquet file, complete once its batches are read."""
        if self.columns is not None:
            return self.columns.infos()
        schema = _parquet_file(self.path).schema_arrow
        return [ColumnInfo(f.name, _arrow_kind(f.type), self._parquet_nulls.get(f.name, 0))
                for f in schema if f.name != self.text_column]


def prepare_corpus(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
                   typing: ColumnTyping | None = None, id_column: str | None = None) -> PreparedCorpus:
    """Check a corpus (it exists, decodes, has the text column, its keys are unique) and learn its columns'
    types, keeping no rows.

    A type set in `typing` is checked here, on every cell: a cell it cannot convert is refused now.
    """
    path = Path(os.path.abspath(path))
    typing = typing or ColumnTyping()
    suffix = check_corpus(path, encoding)
    column = text_column or DEFAULT_TEXT_COLUMN
    if suffix == ".parquet" and not typing.column_types and _plain_parquet(path, column):
        _check_text_column(path, column)
        if id_column:
            _check_parquet_keys(path, id_column)
        return PreparedCorpus(path, column, encoding, None, _parquet_file(path).metadata.num_rows, typing,
                              id_column=id_column)
    columns = _scanned(path, suffix, encoding, column, None, typing, id_column)
    return PreparedCorpus(path, column, encoding, columns, columns.rows, typing, id_column=id_column)


def stream_corpus(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
                  rows: int | None = None, typing: ColumnTyping | None = None,
                  id_column: str | None = None) -> Iterator[TextBatch]:
    """The texts of one corpus in batches: the same rows as `read_corpus`, holding one batch at a time.

    Plain Parquet files (text, number and boolean columns) are read as columns; other formats row by
    row, in two passes (the first learns each column's type: CSV needs every row for that).
    """
    return prepare_corpus(path, text_column, encoding, typing, id_column).batches(rows)


def _record_batches(records: Iterator[TextRecord | SkippedRow], source: str, rows: int) -> Iterator[TextBatch]:
    chunk: list[TextRecord] = []
    skipped: list[SkippedRow] = []
    for item in records:
        if isinstance(item, SkippedRow):
            skipped.append(item)
            continue
        chunk.append(item)
        if len(chunk) == rows:
            yield _batch_of(source, chunk, skipped)
            chunk, skipped = [], []
    if chunk or skipped:
        yield _batch_of(source, chunk, skipped)


def _check_text_column(path: Path, column: str) -> None:
    parquet = _parquet_file(path)
    names = parquet.schema_arrow.names
    if parquet.metadata.num_rows and column not in names:
        raise TextColumnError(f"{path.name} has no column {column!r}; its columns are {', '.join(names)} "
                              f"(choose one with {option('text_column')})")


def _batch_of(source: str, records: list[TextRecord], skipped: list[SkippedRow]) -> TextBatch:
    import numpy as np
    import pyarrow as pa

    from ..store.tables import metadata_array

    metadata = [r.metadata or None for r in records]
    keyed = bool(records) and records[0].key is not None
    return TextBatch(source, pa.array([r.text for r in records], pa.string()),
                     np.array([r.line for r in records], np.int64),
                     metadata_array(metadata) if any(metadata) else None, skipped,
                     pa.array([r.key for r in records], pa.string()) if keyed else None)


def _parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise InvalidInputError(f"cannot read {path.name}: {first_line}; check the file's format") from None


def _plain_parquet(path: Path, text_column: str) -> bool:
    import pyarrow as pa

    schema = _parquet_file(path).schema_arrow
    plain = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
             pa.types.is_boolean)
    text_is_text = text_column not in schema.names or pa.types.is_string(schema.field(text_column).type) \
        or pa.types.is_large_string(schema.field(text_column).type)
    return text_is_text and all(any(test(f.type) for test in plain) for f in schema)


def _parquet_batches(path: Path, text_column: str, rows: int, typing: ColumnTyping,
                     nulls: dict[str, int], id_column: str | None = None) -> Iterator[TextBatch]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parquet = _parquet_file(path)
    names = parquet.schema_arrow.names
    others = [n for n in names if n != text_column]
    read = 0
    for batch in parquet.iter_batches(batch_size=rows):
        lines = np.arange(read + 1, read + 1 + len(batch), dtype=np.int64)
        read += len(batch)
        texts = pc.utf8_trim_whitespace(batch.column(text_column).cast(pa.string()))
        usable = pc.fill_null(pc.greater(pc.utf8_length(texts), 0), False)
        empty = lines[~usable.to_numpy(zero_copy_only=False)]
        metadata = None
        if others:
            metadata = pa.StructArray.from_arrays([_plain(batch.column(n), typing) for n in others],
                                                  others).filter(usable)
            for number, name in enumerate(others):
                nulls[name] = nulls.get(name, 0) + metadata.field(number).null_count
        keys = _key_texts(batch.column(id_column)).filter(usable) if id_column else None
        yield TextBatch(str(path), texts.filter(usable), lines[usable.to_numpy(zero_copy_only=False)], metadata,
                        [SkippedRow(str(path), int(line), "empty text") for line in empty], keys)


def _plain(column, typing: ColumnTyping):
    """A metadata column typed as read_corpus types it: int64, float64, bool or string; NaN and the
    missing markers are nulls."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for test, kind in ((pa.types.is_integer, pa.int64()), (pa.types.is_boolean, pa.bool_())):
        if test(column.type):
            return column.cast(kind)
    if pa.types.is_floating(column.type):
        column = column.cast(pa.float64())
        return pc.if_else(pc.fill_null(pc.is_nan(column), False), pa.scalar(None, pa.float64()), column)
    column = column.cast(pa.string())
    markers = pa.array(sorted(typing.markers | {""}), pa.string())
    missing = pc.fill_null(pc.is_in(pc.utf8_lower(pc.utf8_trim_whitespace(column)), value_set=markers), False)
    return pc.if_else(missing, pa.scalar(None, pa.string()), column)


def _arrow_kind(arrow_type) -> str:
    """A plain Parquet column's type, named as ColumnInfo names types."""
    import pyarrow as pa

    for test, kind in ((pa.types.is_integer, "int"), (pa.types.is_floating, "float"), (pa.types.is_boolean, "bool")):
        if test(arrow_type):
            return kind
    return "text"


def find_images(roots: list[str | Path]) -> list[str]:
    """Every supported image under `roots`, sorted; raises NoImagesError if there are none."""
    found = sorted({path for root in roots for path in list_images(root)})
    if not found:
        raise no_images_error(roots)
    return found


def list_images(root: str | Path) -> list[str]:
    """Every supported image under one folder, sorted; hidden entries skipped, symlink loops safe."""
    root = Path(root)
    if not root.exists():
        raise InvalidInputError(f"image folder {root} does not exist; check the path")
    if root.is_file():
        if root.suffix.lower() in TEXT_FORMATS:
            raise InvalidInputError(f"{root} is a text corpus, not an image folder; index it with "
                                    f"{option('texts', root)}")
        raise InvalidInputError(f"{root} is a file; give the folder that holds the images")
    return sorted(_walk_images(root, supported_extensions()))


def no_images_error(roots: list[str | Path]) -> NoImagesError:
    names = ", ".join(str(r) for r in roots)
    extensions = ", ".join(sorted(supported_extensions()))
    return NoImagesError(f"no images found in {names} (looked for {extensions}); point at a folder that holds images")


def empty_corpus_error(path: str | Path) -> EmptyCorpusError:
    """A corpus with no rows is refused as one without its text column is: indexing it would add nothing,
    and an empty file named by mistake (an export that failed) would otherwise pass unnoticed."""
    return EmptyCorpusError(f"text corpus {path} holds no rows (it is empty, or a header alone); put rows in "
                            "it, or leave it out of this run")


def _walk_images(root: Path, extensions: frozenset[str]) -> Iterator[str]:
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        key = (stat.st_dev, stat.st_ino)
        if key in seen_dirs:  # a symlink loop, or a second link to a folder already read
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in extensions:
                continue
            path = os.path.join(os.path.abspath(dirpath), name)
            if os.path.isfile(path):
                yield path


def read_texts(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
               typing: ColumnTyping | None = None) -> list[TextRecord]:
    """The texts of one corpus (rows that cannot be used are left out; see read_corpus)."""
    return read_corpus(path, text_column, encoding, typing=typing).records


def read_corpus(path: str | Path, text_column: str | None = None, encoding: str = DEFAULT_ENCODING,
                image_column: str | None = None, typing: ColumnTyping | None = None,
                id_column: str | None = None) -> Corpus:
    """Texts of one corpus, the rows skipped with their reasons, and its columns as typed.

    In tables every column but the text column is kept as metadata, typed. With an
    image column, each row links its photo (relative to the table's folder, or
    absolute): the record's `image`; an empty (or missing-marker) cell means the row has no photo.
    With an id column, each row's key (its cell, as text) is the record's `key`: keys must be
    present and unique (KeyColumnError names the lines otherwise).
    """
    path = Path(os.path.abspath(path))
    text_column = text_column or DEFAULT_TEXT_COLUMN
    columns = _scanned(path, check_corpus(path, encoding), encoding, text_column, image_column,
                       typing or ColumnTyping(), id_column)
    records, skipped = [], []
    for item in _records(path, text_column, encoding, columns, image_column, id_column):
        (records if isinstance(item, TextRecord) else skipped).append(item)
    skipped.sort(key=lambda s: s.line)
    return Corpus(records, skipped, columns.infos())


def _scanned(path: Path, suffix: str, encoding: str, text_column: str, image_column: str | None,
             typing: ColumnTyping, id_column: str | None = None) -> _ColumnTypes:
    """The first pass over a checked corpus: its columns and each one's type."""
    if suffix != ".parquet":
        _check_decodes(path, encoding)
    return _scan_columns(path, _rows(path, suffix, encoding), text_column, image_column, typing, id_column)


def _records(path: Path, text_column: str, encoding: str, columns: _ColumnTypes,
             image_column: str | None = None, id_column: str | None = None) -> Iterator[TextRecord | SkippedRow]:
    """The corpus's records and skipped rows in line order: the second pass over the file.

    The first pass (`_scanned`) learnt the columns and each one's type (a CSV column is a number only
    if every cell is); this one converts row by row: nothing but the current row is held.
    """
    suffix = path.suffix.lower()
    source = str(path)
    for line, row in _rows(path, suffix, encoding):
        if isinstance(row, str):
            yield SkippedRow(source, line, row)
            continue
        text = row.get(text_column)
        text = "" if text is None else (text if isinstance(text, str) else str(text)).strip()
        if not text:
            yield SkippedRow(source, line, "empty text")
            continue
        photo = _photo_path(path, row.get(image_column), columns.typing) if image_column else None
        key = key_text(row.get(id_column)) if id_column else None
        yield TextRecord(text, source, line, columns.typed(row), photo, key)


def _rows(path: Path, suffix: str, encoding: str) -> Iterator[Row]:
    if suffix == ".parquet":
        return _parquet_rows(path, encoding)
    return {".txt": _txt_rows, ".jsonl": _jsonl_rows}.get(suffix, _delimited_rows)(path, encoding)


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


# ---- rows of each format: (line, dict of column -> value) or (line, reason it cannot be used) -----------

Row = tuple[int, "dict[str, Any] | str"]


def _open_text(path: Path, encoding: str):
    # utf-8-sig reads files with and without a byte-order mark; bad bytes become markers we can find.
    name = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    return open(path, encoding=name, errors="surrogateescape", newline="")


def _check_decodes(path: Path, encoding: str) -> None:
    """Refuse a corpus in another encoding; a few bad lines are left to be skipped row by row."""
    bad, total = [], 0
    with _open_text(path, encoding) as handle:
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


def _not_decoded(encoding: str) -> str:
    return f"not valid {encoding}; name the file's encoding with {option('encoding')}"


def _txt_rows(path: Path, encoding: str) -> Iterator[Row]:
    with _open_text(path, encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue  # blank lines separate texts; they are not rows
            yield number, (_not_decoded(encoding) if _UNDECODED.search(line) else {DEFAULT_TEXT_COLUMN: line})


def _delimited_rows(path: Path, encoding: str) -> Iterator[Row]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with _open_text(path, encoding) as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        ended = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InvalidInputError(f"cannot read {path.name} near line {reader.line_num}: {exc}; "
                                        "check the file's quoting") from None
            line, ended = ended + 1, reader.line_num
            if not fields or fields == [""]:
                continue  # a blank line
            if any(_UNDECODED.search(f) for f in fields):
                yield line, _not_decoded(encoding)
            elif len(fields) != len(header):
                yield line, f"has {len(fields)} fields where the header has {len(header)}"
            else:
                yield line, dict(zip(header, fields))


def _jsonl_rows(path: Path, encoding: str) -> Iterator[Row]:
    with _open_text(path, encoding) as handle:
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
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise InvalidInputError(f"cannot read {path.name}: {first_line}; check the file's format") from None
    number = 0
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            number += 1
            try:
                yield number, {k: _decode_cell(v, encoding) for k, v in row.items()}
            except UnicodeDecodeError:
                yield number, _not_decoded(encoding)


def _decode_cell(value: Any, encoding: str) -> Any:
    return value.decode(encoding) if isinstance(value, bytes) else value


# ---- rows -> records ----------------------------------------------------------------------------------

def _photo_path(table: Path, cell: Any, typing: ColumnTyping) -> str | None:
    if typing.missing(cell) or not str(cell).strip():
        return None
    return os.path.normpath(os.path.join(table.parent, os.path.expanduser(str(cell).strip())))


@dataclass
class _Seen:
    """What the first pass saw of one column's present (not missing) values."""

    present: int = 0
    numbers: int = 0  # values that are numbers (ints or floats)
    ints: bool = True  # CSV: every value is a whole number (no leading zeros: "01234" is an identifier)
    floats: bool = True  # CSV: every value is a number
    bools: bool = True  # CSV: every value is true or false
    kinds: set[type] = field(default_factory=set)  # JSON and Parquet: the types of the values
    first_text: tuple[int, str] | None = None  # the first value that is not a number: (line, value)
    codes: bool = False  # some values are digits with leading zeros: codes, meant as text

    def add(self, line: int, value: Any, from_text: bool) -> None:
        self.present += 1
        if from_text:
            value = value.strip()
            number = bool(_FLOAT.fullmatch(value))
            if self.ints:
                self.ints = bool(_INT.fullmatch(value)) and abs(int(value)) < 2**63
            self.floats = self.floats and number
            if self.bools:
                self.bools = value.lower() in ("true", "false")
        else:
            self.kinds.add(type(value))
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
        self.numbers += number
        if not number and isinstance(value, str) and _CODE.fullmatch(value):
            self.codes = True
        if not number and self.first_text is None:
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            self.first_text = (line, shown)

    def kind(self, from_text: bool) -> str:
        if not self.present:
            return "empty"
        if from_text:
            return "int" if self.ints else "float" if self.floats else "bool" if self.bools else "text"
        for kind, allowed in (("bool", {bool}), ("int", {int}), ("float", {int, float})):
            if self.kinds <= allowed:
                return kind
        return "text"


class _ColumnTypes:
    """Each metadata column's one type for the whole corpus, as a database column would have, learnt a row
    at a time over the rows that become items. Missing values (empty cells, the missing markers, NaN) are
    nulls and do not count. CSV cells are numbers or booleans only if every present cell is; JSON and
    Parquet values keep their type, ints mixed with floats become floats, and anything else mixed becomes
    text. A type set in `typing.column_types` is the column's type, and every value must convert to it."""

    def __init__(self, from_text: bool, typing: ColumnTyping, file: str):
        self.from_text, self.typing, self.file = from_text, typing, file
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
            self._seen.setdefault(name, _Seen()).add(line, value, self.from_text)
            if name in self.typing.column_types:
                self._check_converts(name, value, line)

    def _check_converts(self, name: str, value: Any, line: int) -> None:
        kind = self.typing.column_types[name]
        value = value.strip() if self.from_text else value
        try:
            _set_type(value, kind)
        except ValueError:
            article = "an" if kind == "int" else "a"
            raise InvalidInputError(
                f"{self.file} line {line}: {name} holds {value!r}, which is not {article} {kind} "
                f"({option('column_types')} sets {name}={kind}); fix that line, or count it as missing "
                f"with {option('na_values')}") from None

    def finish(self, text_column: str) -> None:
        self.metadata = [c for c in self.names if c != text_column]
        self._kinds = {name: self.typing.column_types.get(name) or self._seen.get(name, _Seen()).kind(self.from_text)
                       for name in self.metadata}

    def infos(self) -> list[ColumnInfo]:
        found = []
        for name in self.metadata:
            seen, kind, chosen = self._seen.get(name, _Seen()), self._kinds[name], name in self.typing.column_types
            mostly_numbers = 2 * seen.numbers > seen.present and not seen.codes
            line, value = seen.first_text if kind == "text" and not chosen and mostly_numbers else (None, None)
            found.append(ColumnInfo(name, kind, self.items - seen.present, chosen, line, value))
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
            return _set_type(value, kind)
        if self.from_text:
            return int(value) if kind == "int" else float(value) if kind == "float" else \
                value.lower() == "true" if kind == "bool" else value
        if kind in ("bool", "int"):
            return value
        if kind == "float":
            return float(value)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _set_type(value: Any, kind: str) -> Any:
    """A present value as the type the user set; ValueError where it does not convert."""
    if kind == "text":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, str):
        cell = value.strip()
        if kind == "int" and _WHOLE.fullmatch(cell) and abs(int(cell)) < 2**63:
            return int(cell)
        if kind == "float" and _DECIMAL.fullmatch(cell):
            return float(cell)
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


def _scan_columns(path: Path, rows: Iterator[Row], text_column: str, image_column: str | None,
                  typing: ColumnTyping, id_column: str | None = None) -> _ColumnTypes:
    """First pass: the columns, their types, and a clear error for a missing text, image or id column, a
    column whose type is set but that the corpus lacks, or keys missing or repeated."""
    if text_column in typing.column_types:
        raise InvalidInputError(f"{text_column} is the text column of {path.name}, always read as text; "
                                f"leave it out of {option('column_types')}")
    columns = _ColumnTypes(path.suffix.lower() in (".csv", ".tsv"), typing, path.name)
    keys = _KeyCheck(path, id_column) if id_column else None
    usable = False
    for line, row in rows:
        columns.rows += 1
        if not isinstance(row, str):
            usable = True
            columns.see(line, row, _has_text(row, text_column))
            if keys is not None:
                keys.see(line, row.get(id_column), _has_text(row, text_column))
    for name, flag in ((text_column, "text_column"), (image_column, "image_column"), (id_column, "id_column")):
        if usable and name is not None and name not in columns.names:
            raise TextColumnError(f"{path.name} has no column {name!r}; its columns are {', '.join(columns.names)} "
                                  f"(choose one with {option(flag)})")
    unknown = [name for name in typing.column_types if name not in columns.names]
    if usable and unknown:
        raise InvalidInputError(f"{path.name} has no column {unknown[0]!r} (named in {option('column_types')}); "
                                f"its columns are {', '.join(columns.names)}")
    columns.finish(text_column)
    if keys is not None:
        keys.check()
    return columns


def _has_text(row: dict[str, Any], text_column: str) -> bool:
    """Whether the row becomes an item (as `_records` decides): its text is not empty."""
    text = row.get(text_column)
    return text is not None and bool((text if isinstance(text, str) else str(text)).strip())


# ---- keys: an id column names each row, whatever line it is on ------------------------------------------

def key_text(value: Any) -> str | None:
    """A key cell as text (a whole number written 42 or 42.0 is "42"); None where it is empty."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


class _KeyCheck:
    """Keys seen on the first pass: each row that will be indexed needs one, and no two the same."""

    def __init__(self, path: Path, column: str):
        self.path, self.column = path, column
        self.first_line: dict[str, int] = {}
        self.repeated: list[tuple[str, int, int]] = []  # (key, first line, repeating line)
        self.empty: list[int] = []

    def see(self, line: int, value: Any, indexed: bool) -> None:
        key = key_text(value)
        if key is None:
            if indexed:  # a row skipped for its empty text needs no key
                self.empty.append(line)
            return
        first = self.first_line.setdefault(key, line)
        if first != line:
            self.repeated.append((key, first, line))

    def check(self) -> None:
        fix = f"fix the table, or leave {option('id_column')} out"
        if self.empty:
            more = f" (and {len(self.empty) - 1} more)" if len(self.empty) > 1 else ""
            raise KeyColumnError(f"{self.path.name}: id column {self.column!r} is empty on line {self.empty[0]}{more}; "
                                 f"every row needs a key: {fix}")
        if self.repeated:
            key, first, again = self.repeated[0]
            more = f" (and {len(self.repeated) - 1} more repeats)" if len(self.repeated) > 1 else ""
            raise KeyColumnError(f"{self.path.name}: id column {self.column!r} repeats {key!r} on lines {first} and "
                                 f"{again}{more}; each row needs a key of its own: {fix}")


def _key_texts(column) -> pa.Array:
    """A Parquet key column as text, as key_text writes a cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(column.type):
        whole = pc.equal(column, pc.floor(column))
        column = pc.if_else(whole, column.cast(pa.int64(), safe=False).cast(pa.string()), column.cast(pa.string()))
    texts = pc.utf8_trim_whitespace(column.cast(pa.string()))
    return pc.if_else(pc.equal(pc.utf8_length(texts), 0), pa.scalar(None, pa.string()), texts)


def _check_parquet_keys(path: Path, column: str) -> None:
    """The checks of _KeyCheck on a plain Parquet file, column-wise."""
    import numpy as np
    import pyarrow.compute as pc

    parquet = _parquet_file(path)
    if column not in parquet.schema_arrow.names:
        raise TextColumnError(f"{path.name} has no column {column!r}; its columns are "
                              f"{', '.join(parquet.schema_arrow.names)} (choose one with {option('id_column')})")
    check = _KeyCheck(path, column)
    keys = _key_texts(parquet.read(columns=[column]).column(column).combine_chunks())
    lines = np.flatnonzero(pc.is_null(keys).to_numpy(zero_copy_only=False)) + 1
    check.empty = lines.tolist()
    if not len(lines):
        counts = pc.value_counts(keys)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
        if len(repeated):
            where = np.flatnonzero(pc.equal(keys, repeated[0]).to_numpy(zero_copy_only=False)) + 1
            check.repeated = [(repeated[0].as_py(), int(where[0]), int(where[1]))]
            check.repeated += [("", 0, 0)] * (len(repeated) - 1)
    check.check()
