"""Plain Parquet files (text, number and boolean columns), read as columns, a batch at a time, without the
row-by-row passes the other formats need: typed and checked as those are, column-wise."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from ...errors import TextColumnError, option
from .columns import ColumnInfo, ColumnTyping
from .formats import parquet_file
from .keys import KeyCheck, key_texts
from .records import SkippedRow, TextBatch


def is_plain(path: Path, text_column: str) -> bool:
    import pyarrow as pa

    schema = parquet_file(path).schema_arrow
    plain = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating,
             pa.types.is_boolean)
    text_is_text = text_column not in schema.names or pa.types.is_string(schema.field(text_column).type) \
        or pa.types.is_large_string(schema.field(text_column).type)
    return text_is_text and all(any(test(f.type) for test in plain) for f in schema)


def check_text_column(path: Path, column: str) -> None:
    parquet = parquet_file(path)
    names = parquet.schema_arrow.names
    if parquet.metadata.num_rows and column not in names:
        raise TextColumnError(f"{path.name} has no column {column!r}; its columns are {', '.join(names)} "
                              f"(choose one with {option('text_column')})")


def column_infos(path: Path, text_column: str, nulls: dict[str, int]) -> list[ColumnInfo]:
    """Its metadata columns as typed, with the nulls counted while its batches streamed."""
    schema = parquet_file(path).schema_arrow
    return [ColumnInfo(f.name, _arrow_kind(f.type), nulls.get(f.name, 0)) for f in schema if f.name != text_column]


def batches(path: Path, text_column: str, rows: int, typing: ColumnTyping,
            nulls: dict[str, int], id_column: str | None = None) -> Iterator[TextBatch]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    parquet = parquet_file(path)
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
        keys = key_texts(batch.column(id_column)).filter(usable) if id_column else None
        yield TextBatch(str(path), texts.filter(usable), lines[usable.to_numpy(zero_copy_only=False)], metadata,
                        [SkippedRow(str(path), int(line), "empty text") for line in empty], keys)


def check_keys(path: Path, column: str) -> None:
    """The checks of KeyCheck on a plain Parquet file, column-wise."""
    import numpy as np
    import pyarrow.compute as pc

    parquet = parquet_file(path)
    if column not in parquet.schema_arrow.names:
        raise TextColumnError(f"{path.name} has no column {column!r}; its columns are "
                              f"{', '.join(parquet.schema_arrow.names)} (choose one with {option('id_column')})")
    check = KeyCheck(path, column)
    keys = key_texts(parquet.read(columns=[column]).column(column).combine_chunks())
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
