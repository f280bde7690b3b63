"""New segments of a commit, written as rows arrive: a run's memory holds one segment, not the index.

Rows reach the writer batch by batch (the text planner streams corpora) or all at
once (images, products, rows moved by compaction). Once a segment holds
SEGMENT_ROWS rows it is written, published under its final name (readers cannot see
it until a manifest names it) and dropped from memory; the next rows start another.
"""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..store import IndexDir
from ..store.manifest import SegmentRef
from ..store.segments import write_segment
from ..store.ann import VectorAdder
from ..store.tables import concat_items
from .encode_files import Timer

SEGMENT_ROWS = 1 << 20  # rows per segment: 2 GB of float32 512-d vectors while it is built, 1M-row ANN indexes


class FreshSegments:
    """Accumulates rows and vectors, and writes a segment each SEGMENT_ROWS rows."""

    def __init__(self, index_dir: IndexDir, generation: str, dim: int, settings: dict, expected_size: int,
                 segment_rows: int | None = None, timer: Timer | None = None, ann_add: VectorAdder | None = None):
        self._dir, self._generation, self._dim = index_dir, generation, dim
        self._settings, self._expected_size = settings, expected_size
        self._cap = segment_rows or SEGMENT_ROWS
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._ids: dict[str, list[np.ndarray]] = {}
        self._matrices: dict[str, np.ndarray] = {}  # per set, a buffer of `cap` rows filled from the top
        self._filled: dict[str, int] = {}
        self.written: list[SegmentRef] = []
        self.timer = timer  # a run's Timer: the time spent writing segments counts as "write"
        self.ann_add = ann_add  # where IVF lists are filled (on Ray, for one); None: here
        self.bytes_written = 0
        self.modality_counts: dict[str, int] = {}

    @property
    def pending(self) -> int:
        return self._rows

    def add(self, items: pa.Table, vectors: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Rows (an items table) and their vectors by set (row ids, float32 matrix); split at the cap."""
        start = 0
        while start < len(items):
            room = self._cap - self._rows
            part = items.slice(start, room)
            ids = part.column("row_id").to_numpy()
            self._take(part, {s: _rows_of(ids, *vectors[s]) for s in vectors})
            start += len(part)
            if self._rows >= self._cap:
                self._flush()

    def _take(self, items: pa.Table, vectors: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        self._tables.append(items)
        self._rows += len(items)
        for modality, count in zip(*np.unique(items.column("modality").to_numpy(zero_copy_only=False),
                                               return_counts=True)):
            self.modality_counts[modality] = self.modality_counts.get(modality, 0) + int(count)
        for vector_set, (ids, matrix) in vectors.items():
            if not len(ids):
                continue
            if vector_set not in self._matrices:  # untouched pages of np.empty cost no memory
                self._matrices[vector_set] = np.empty((self._cap, self._dim), np.float32)
                self._filled[vector_set] = 0
            at = self._filled[vector_set]
            self._matrices[vector_set][at:at + len(ids)] = matrix
            self._filled[vector_set] = at + len(ids)
            self._ids.setdefault(vector_set, []).append(ids)

    def finish(self) -> list[SegmentRef]:
        if self._rows:
            self._flush()
        return self.written

    def _flush(self) -> None:
        with self.timer.stage("write") if self.timer else nullcontext():
            self._write()

    def _write(self) -> None:
        name, staging = self._dir.new_segment_staging(self._generation, len(self.written))
        vectors = {s: (np.concatenate(self._ids[s]), self._matrices[s][:self._filled[s]]) for s in self._ids}
        ref = write_segment(staging, name, concat_items(self._tables), vectors,
                            self._settings.get("vectors", "float32"), self._settings.get("index_type", "auto"),
                            self._settings.get("memory_budget"), max(self._expected_size, self._rows), self.ann_add,
                            self._settings.get("words"))
        self.bytes_written += folder_size(staging)
        self._dir.publish_segment(staging, name)
        self.written.append(ref)
        self._tables, self._rows, self._ids, self._matrices, self._filled = [], 0, {}, {}, {}


def _rows_of(part_ids: np.ndarray, ids: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of the rows `part_ids` among (ids, matrix): a slice of a table may split a set."""
    if len(ids) == len(part_ids) and np.array_equal(ids, part_ids):
        return ids, matrix
    keep = np.flatnonzero(np.isin(ids, part_ids))
    return ids[keep], matrix[keep]


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())  # a segment's words are a folder

