"""The resume journal: vectors encoded by an unfinished run, committed in small atomic chunks.

A run appends a chunk file every few hundred items (write to a temp name, fsync,
rename). If the run dies, the next run finds the chunks and reuses their vectors
instead of encoding again. A successful commit of the index clears the journal.
Chunks from a different model are discarded.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..models.base import ModelIdentity

JOURNAL_DIR = ".journal"


@dataclass(frozen=True)
class JournalEntry:
    modality: str
    path: str | None
    content_hash: str
    size: int | None
    mtime: float | None
    width: int | None
    height: int | None
    vector: np.ndarray


class Journal:
    def __init__(self, root: Path, identity: ModelIdentity):
        self.folder = root / JOURNAL_DIR
        self._key = repr(identity.compatibility_key())
        self.by_path: dict[str, JournalEntry] = {}
        self.by_hash: dict[tuple[str, str], JournalEntry] = {}
        self._next_chunk = 0

    @staticmethod
    def has_saved_work(root: Path) -> bool:
        return any((root / JOURNAL_DIR).glob("chunk-*.parquet"))

    def open(self) -> "Journal":
        """Load what earlier unfinished runs of the same model left; drop anything else."""
        key_file = self.folder / "model.key"
        if self.folder.is_dir() and (not key_file.is_file() or key_file.read_text() != self._key):
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file.write_text(self._key)
        for chunk in sorted(self.folder.glob("chunk-*.parquet")):
            self._load_chunk(chunk)
            self._next_chunk = max(self._next_chunk, int(chunk.stem.split("-")[1]) + 1)
        return self

    def __len__(self) -> int:
        return len(self.by_hash)

    def append(self, entries: list[JournalEntry]) -> None:
        if not entries:
            return
        table = _entries_table(entries)
        final = self.folder / f"chunk-{self._next_chunk:08d}.parquet"
        tmp = final.with_name(f".{final.name}.tmp")
        # Vectors neither compress nor repeat: snappy and dictionary encoding only cost time (6x here).
        pq.write_table(table, tmp, compression="none", use_dictionary=False)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        self._next_chunk += 1  # not remembered: a run plans before it encodes, and a big run would hold every vector

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _load_chunk(self, chunk: Path) -> None:
        try:
            table = pq.read_table(chunk)
        except (OSError, pa.ArrowInvalid):
            chunk.unlink(missing_ok=True)  # torn by a crash before its rename: never visible whole
            return
        embedding = table.column("embedding").combine_chunks()
        vectors = embedding.values.to_numpy(zero_copy_only=False).reshape(len(table), -1)
        for row, vector in zip(table.drop_columns(["embedding"]).to_pylist(), vectors):
            self._remember(JournalEntry(vector=np.array(vector, np.float32), **row))

    def _remember(self, entry: JournalEntry) -> None:
        self.by_hash[(entry.modality, entry.content_hash)] = entry
        if entry.path is not None:
            self.by_path[entry.path] = entry


def _entries_table(entries: list[JournalEntry]) -> pa.Table:
    vectors = np.stack([e.vector for e in entries]).astype(np.float32)
    columns = {name: [getattr(e, name) for e in entries]
               for name in ("modality", "path", "content_hash", "size", "mtime", "width", "height")}
    table = pa.table(columns, schema=pa.schema([
        ("modality", pa.string()), ("path", pa.string()), ("content_hash", pa.string()), ("size", pa.int64()),
        ("mtime", pa.float64()), ("width", pa.int32()), ("height", pa.int32())]))
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
