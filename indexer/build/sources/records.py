"""What reading a corpus gives: its records (rows that become items), the rows skipped with their reasons,
and, when streamed, batches of records as columns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .columns import ColumnInfo
from .formats import Dialect

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


@dataclass(frozen=True)
class TextRecord:
    text: str
    source: str  # the corpus file, absolute
    line: int  # 1-based line of the file (row number for Parquet)
    metadata: dict[str, Any] = field(default_factory=dict)
    image: str | None = None  # with an image column: the row's photo, absolute (the row is a product)
    key: str | None = None  # with an id column: the row's key, as text (the row's identity across runs)
    photo_skipped: str | None = None  # why `image` is not read (photos.resolve_photo): the row's photo failure
    photo_file: str | None = None  # where `image` is a URL: its local copy, read in its place (photo_urls.py)


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
    dialect: Dialect | None = None  # a CSV or TSV table: how its cells were split and its numbers read


@dataclass
class TextBatch:
    """Usable rows of a corpus, a batch at a time, as columns."""

    source: str
    texts: pa.Array  # stripped, never empty
    lines: np.ndarray  # int64, as TextRecord.line
    metadata: pa.Array | None  # a struct per row, or None where the corpus has no other columns
    skipped: list[SkippedRow]
    keys: pa.Array | None = None  # with an id column: each row's key, as text


def batch_of(source: str, records: list[TextRecord], skipped: list[SkippedRow]) -> TextBatch:
    import numpy as np
    import pyarrow as pa

    from ...store.tables import metadata_array

    metadata = [r.metadata or None for r in records]
    keyed = bool(records) and records[0].key is not None
    return TextBatch(source, pa.array([r.text for r in records], pa.string()),
                     np.array([r.line for r in records], np.int64),
                     metadata_array(metadata) if any(metadata) else None, skipped,
                     pa.array([r.key for r in records], pa.string()) if keyed else None)
