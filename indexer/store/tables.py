"""Parquet files of an index: items (one row per item), failures, and embeddings keyed by row id."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import PYTHON, Wording, render

ITEM_FIELDS = [
    pa.field("row_id", pa.int64(), nullable=False),
    pa.field("modality", pa.string(), nullable=False),
    pa.field("path", pa.string()),
    pa.field("text", pa.string()),
    pa.field("source", pa.string()),
    pa.field("line", pa.int64()),
    pa.field("content_hash", pa.string()),
    pa.field("size", pa.int64()),
    pa.field("mtime", pa.float64()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("image_hash", pa.string()),  # products: the photo's content hash (content_hash is the text's)
    pa.field("key", pa.string()),  # a table's id column, as text: the row's identity across runs
]
ITEMS_ROW_GROUP = 8192  # a search reads a hit's item with its row group: small groups, little read
FAILURE_SCHEMA = pa.schema([
    pa.field("path", pa.string()),
    pa.field("modality", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("size", pa.int64()),
    pa.field("mtime", pa.float64()),
    pa.field("line", pa.int64()),
    pa.field("source", pa.string()),
])


@dataclass
class ItemRow:
    row_id: int
    modality: str
    path: str | None = None
    text: str | None = None
    source: str | None = None  # images: None; texts: the corpus file
    line: int | None = None  # only in indexes written before lines were left out of rows (a move rewrote them)
    content_hash: str | None = None
    size: int | None = None
    mtime: float | None = None
    width: int | None = None
    height: int | None = None
    image_hash: str | None = None
    key: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Failure:
    path: str
    modality: str
    reason: str
    size: int | None = None  # the file as it failed: a later run retries it only once it changes
    mtime: float | None = None
    line: int | None = None  # a row of a text corpus: its line
    source: str | None = None  # the corpus that owns it (a text row, a product's photo); None: an image folder's file

    def where(self) -> str:
        """Where to look: a file; a table's row as file:line; a product's photo with the row that names it."""
        if self.line is None:
            return self.path
        if self.modality == "image" and self.source:  # the line is the table's, not the photo's
            return f"{self.path} (the photo of {self.source}:{self.line})"
        return f"{self.path}:{self.line}"

    def worded(self, wording: Wording = PYTHON) -> Failure:
        """This failure with its reason in a caller's terms: a reason keeps option names as placeholders
        (`raise the limit (max_pixels)` from Python, `(--max-pixels)` on the command line)."""
        return replace(self, reason=render(self.reason, wording))


def items_table(rows: list[ItemRow]) -> pa.Table:
    columns = {f.name: [getattr(r, f.name) for r in rows] for f in ITEM_FIELDS}
    table = pa.Table.from_pydict(columns, schema=pa.schema(ITEM_FIELDS))
    metadata = [r.metadata for r in rows]
    if any(metadata):
        # User columns travel as one struct column: typed, and never clash with ours.
        table = table.append_column("metadata", metadata_array(metadata))
    return table


def text_items(row_ids: np.ndarray, texts: pa.Array, source: str, hashes: np.ndarray,
               metadata: pa.Array | None, keys: pa.Array | None = None) -> pa.Table:
    """Items of text rows, column by column (`hashes`: an 'S32' array of hex content hashes)."""
    n = len(row_ids)
    nulls = {f.name: pa.nulls(n, f.type) for f in ITEM_FIELDS}
    columns = {**nulls, "row_id": pa.array(row_ids, pa.int64()), "modality": pa.array(["text"] * n, pa.string()),
               "text": texts, "source": pa.array([source] * n, pa.string()),
               "content_hash": pa.array(hashes.astype(str), pa.string()),
               "size": pc.binary_length(texts).cast(pa.int64())}
    if keys is not None:
        columns["key"] = keys
    table = pa.Table.from_pydict(columns, schema=pa.schema(ITEM_FIELDS))
    if metadata is not None and metadata.type.num_fields:
        table = table.append_column("metadata", metadata)
    return table


def write_items(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, row_group_size=ITEMS_ROW_GROUP)


def metadata_array(metadata: list[dict[str, Any] | None]) -> pa.Array:
    """One struct column for every corpus's columns; a name typed differently by two corpora becomes text."""
    try:
        return pa.array(metadata)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    kinds: dict[str, set[type]] = {}
    for row in metadata:
        for key, value in (row or {}).items():
            if value is not None:
                kinds.setdefault(key, set()).add(type(value))
    as_text = {k for k, types in kinds.items() if len(types) > 1 and not types <= {int, float}}
    as_float = {k for k, types in kinds.items() if types == {int, float}}

    def unified(row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {k: (None if v is None else str(v) if k in as_text else float(v) if k in as_float else v)
                for k, v in row.items()}

    return pa.array([unified(row) for row in metadata])


def read_items(path: Path, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(path, columns=columns)


def concat_items(tables: list[pa.Table]) -> pa.Table:
    """Items of several segments as one table; metadata types unify as `metadata_array` would unify them."""
    if not tables:
        return pa.table({f.name: pa.array([], f.type) for f in ITEM_FIELDS}, schema=pa.schema(ITEM_FIELDS))
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column typed differently by two segments' corpora
        plain = pa.concat_tables([t.drop_columns(["metadata"]) if "metadata" in t.column_names else t
                                  for t in tables], promote_options="permissive")
        metadata = [row for t in tables for row in (t.column("metadata").to_pylist() if "metadata" in t.column_names
                                                    else [None] * len(t))]
        return plain.append_column("metadata", metadata_array(metadata))


def item_rows(table: pa.Table) -> list[ItemRow]:
    """ItemRows of an items table, built column-wise (a dict per row costs three times as much)."""
    names = [f.name for f in ITEM_FIELDS] + ["metadata"]
    columns = [table.column(n).to_pylist() if n in table.column_names else [None] * len(table) for n in names]
    rows = [ItemRow(*values) for values in zip(*columns)]
    if any(r.line is None and r.modality == "text" for r in rows):  # format 1: possibly "path:line" sources
        rows = [_upgraded(r) for r in rows]
    return rows


def _upgraded(row: ItemRow) -> ItemRow:
    """Format 1 kept a text's corpus and line together as "path:line"."""
    if row.modality == "text" and row.line is None and row.source and ":" in row.source:
        path, _, line = row.source.rpartition(":")
        if line.isdigit():
            row.source, row.line = path, int(line)
    return row


def write_failures(path: Path, failures: list[Failure]) -> None:
    table = pa.Table.from_pylist([f.__dict__ for f in failures], schema=FAILURE_SCHEMA)
    pq.write_table(table, path)


def read_failures(path: Path) -> list[Failure]:
    fields = set(FAILURE_SCHEMA.names)
    return [Failure(**{k: v for k, v in row.items() if k in fields}) for row in pq.read_table(path).to_pylist()]


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.exists():  # a vector set this index (or its format) never had
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    table = pq.read_table(path)
    ids = table.column("row_id").to_numpy()
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    vectors = column.values.to_numpy(zero_copy_only=False).reshape(-1, dim) if len(column) else np.zeros((0, dim), np.float32)
    return ids, np.ascontiguousarray(vectors, dtype=np.float32)
