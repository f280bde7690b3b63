"""The items of an open index, by row id: what a search needs is held, the rest is read when a hit needs it.

Opening keeps each segment's items file open and reads only its row ids and modalities; a hit's
row is read with its Parquet row group (8,192 rows, about 4 ms), and recently read groups are kept
as Arrow tables, up to KEPT_ROWS rows (a million-item index stays whole in memory once searched).
So opening a large index costs little and memory grows with what is searched. The open files
survive later commits collecting their segments, like the memory-mapped vectors.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..indexer.store import SegmentReader, concat_items

KEPT_ROWS = 2_097_152  # item rows kept in memory, as Arrow row groups (about 300 MB of short texts)


class _SegmentItems:
    def __init__(self, segment: SegmentReader):
        # An Arrow file, not a Python one: buffers read through a Python file are released on Arrow's IO threads,
        # which need the GIL for it; one still alive as the interpreter exits aborted the process ("terminate
        # called without an active exception", exit 134, in about 1 run of 30 after a correct answer).
        self.file = pq.ParquetFile(pa.OSFile(str(segment.folder / "items.parquet")))
        self.deleted = segment.deleted()
        heads = self.file.read(columns=["row_id", "modality"])
        self.row_ids = heads.column("row_id").to_numpy()
        self.modality = heads.column("modality").combine_chunks()
        self.live = ~np.isin(self.row_ids, self.deleted) if len(self.deleted) else np.ones(len(self.row_ids), bool)
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.metadata.num_row_groups)]
        self.group_starts = np.cumsum([0] + sizes)

    def metadata_fields(self) -> list[str]:
        schema = self.file.schema_arrow
        if "metadata" not in schema.names:
            return []
        return [f.name for f in schema.field("metadata").type]

    def columns(self, names: list[str], modality: str) -> pa.Table:
        """The live rows of one modality, with `names` (those this file has)."""
        table = self.file.read(columns=[n for n in names if n in self.file.schema_arrow.names])
        keep = self.live & (pc.equal(self.modality, modality).to_numpy(zero_copy_only=False))
        return table.filter(pa.array(keep))


class ItemStore:
    def __init__(self, segments: list[SegmentReader]):
        self._segments = [_SegmentItems(s) for s in segments]
        ids, where, offsets = [], [], []
        for number, segment in enumerate(self._segments):
            live = np.flatnonzero(segment.live)
            ids.append(segment.row_ids[live])
            where.append(np.full(len(live), number, np.int32))
            offsets.append(live)
        all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(all_ids, kind="stable")
        self.row_ids = all_ids[order].astype(np.int64)  # ascending
        self._segment = np.concatenate(where)[order] if ids else np.zeros(0, np.int32)
        self._offset = np.concatenate(offsets)[order] if ids else np.zeros(0, np.int64)
        self._groups: OrderedDict[tuple[int, int], list[tuple[str, pa.Array]]] = OrderedDict()
        self._kept_rows = 0
        self._lock = threading.Lock()  # a service reads items from many threads
        self._keys: dict[tuple[str, str], list[int]] | None = None  # (key, corpus) -> row ids, built when asked
        fields: dict[str, None] = {}
        for segment in self._segments:
            fields.update(dict.fromkeys(segment.metadata_fields()))
        self._metadata_fields = list(fields)

    def __len__(self) -> int:
        return len(self.row_ids)

    def ids_of(self, modality: str) -> np.ndarray:
        """Live row ids of one kind of item, ascending."""
        found = []
        for segment in self._segments:
            mask = segment.live & pc.equal(segment.modality, modality).to_numpy(zero_copy_only=False)
            found.append(segment.row_ids[mask])
        return np.sort(np.concatenate(found)) if found else np.zeros(0, np.int64)

    def rows(self, row_ids: list[int]) -> list[dict[str, Any]]:
        """Each row id's item as a dict; KeyError for one the index does not hold."""
        positions = np.searchsorted(self.row_ids, np.asarray(row_ids, dtype=np.int64))
        out = []
        with self._lock:
            for row_id, position in zip(row_ids, positions.tolist()):
                if position >= len(self.row_ids) or self.row_ids[position] != row_id:
                    raise KeyError(f"row id {row_id} is not in this index")
                out.append(self._row(int(self._segment[position]), int(self._offset[position])))
        return out

    def with_key(self, key: str, sources: list[str]) -> list[int]:
        """Live row ids whose key is `key` in one of the corpora `sources` (a table's id column)."""
        if self._keys is None:
            found: dict[tuple[str, str], list[int]] = {}
            for segment in self._segments:
                if "key" not in segment.file.schema_arrow.names:
                    continue
                table = segment.file.read(columns=["row_id", "key", "source"]).filter(pa.array(segment.live))
                table = table.filter(pc.is_valid(table.column("key")))
                for row_id, value, source in zip(*(table.column(n).to_pylist() for n in ("row_id", "key", "source"))):
                    found.setdefault((value, source), []).append(row_id)
            with self._lock:
                self._keys = found
        return sorted(i for source in sources for i in self._keys.get((key, source), []))

    def table(self, modality: str, names: list[str]) -> pa.Table:
        """Columns `names` of every live item of one kind, across segments (types unified)."""
        return concat_items([s.columns(names, modality) for s in self._segments])

    def _row(self, segment: int, offset: int) -> dict[str, Any]:
        starts = self._segments[segment].group_starts
        group = int(np.searchsorted(starts, offset, side="right") - 1)
        key = (segment, group)
        if key not in self._groups:
            table = self._segments[segment].file.read_row_group(group)
            self._groups[key] = [(name, table.column(name).combine_chunks()) for name in table.column_names]
            self._kept_rows += len(table)
            while self._kept_rows > KEPT_ROWS and len(self._groups) > 1:
                self._kept_rows -= len(self._groups.popitem(last=False)[1][0][1])
        self._groups.move_to_end(key)
        row = offset - int(starts[group])
        return self._completed({name: column[row].as_py() for name, column in self._groups[key]})  # 6x a slice

    def _completed(self, row: dict[str, Any]) -> dict[str, Any]:
        """Every segment's metadata fields, None where this row's corpus has no such column."""
        metadata = row.get("metadata")
        if metadata is not None and len(metadata) != len(self._metadata_fields):
            row["metadata"] = {name: metadata.get(name) for name in self._metadata_fields}
        elif "metadata" not in row and self._metadata_fields:
            row["metadata"] = None
        return row

    def sample_texts(self, limit: int = 2_000) -> list[str]:
        """Up to `limit` texts (plain texts and product descriptions) from the first segments: a sample of how
        the index's texts are written."""
        found: list[str] = []
        for segment in self._segments:
            if "text" not in segment.file.schema_arrow.names:
                continue
            for modality in ("text", "product"):
                texts = segment.columns(["text"], modality).column("text").to_pylist()
                found += [t for t in texts if t]
            if len(found) >= limit:
                break
        return found[:limit]
