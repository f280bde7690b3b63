"""The resume journal: vectors encoded by an unfinished run, committed in small atomic chunks.

A run appends a chunk file every few hundred items (write to a temp name, fsync,
rename). If the run dies, the next run finds the chunks and reuses their vectors
instead of encoding again. A successful commit of the index clears the journal.
Chunks from a different model are discarded. On Ray the workers write their own
chunks into the same folder (worker_chunk_name), which every node must reach.
"""
from __future__ import annotations

import os
import shutil
import uuid
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
        self.folder = self.folder_of(root)
        self._key = repr(identity.compatibility_key())
        self.by_path: dict[str, JournalEntry] = {}
        self.by_hash: dict[tuple[str, str], JournalEntry] = {}
        self._next_chunk = 0

    @staticmethod
    def folder_of(root: Path) -> Path:
        return root / JOURNAL_DIR

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
            number = chunk.stem.split("-")[1]
            if number.isdigit():  # the driver's numbering; workers' chunks are named apart
                self._next_chunk = max(self._next_chunk, int(number) + 1)
        return self

    def __len__(self) -> int:
        return len(self.by_hash)

    def append(self, entries: list[JournalEntry]) -> None:
        if not entries:
            return
        write_chunk(self.folder / f"chunk-{self._next_chunk:08d}.parquet", entries)
        self._next_chunk += 1  # not remembered: a run plans before it encodes, and a big run would hold every vector

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _load_chunk(self, chunk: Path) -> None:
        try:
            rows, vectors = read_chunk(chunk)
        except (OSError, pa.ArrowInvalid):
            chunk.unlink(missing_ok=True)  # torn by a crash before its rename: never visible whole
            return
        for row, vector in zip(rows, vectors):
            self._remember(JournalEntry(vector=np.array(vector, np.float32), **row))

    def _remember(self, entry: JournalEntry) -> None:
        self.by_hash[(entry.modality, entry.content_hash)] = entry
        if entry.path is not None:
            self.by_path[entry.path] = entry


def worker_chunk_name(run: str, first_position: int) -> str:
    """A chunk written by a Ray worker: named by the run and the batch, so a retried batch rewrites its own
    chunk instead of adding a second copy."""
    return f"chunk-ray-{run}-{first_position:012d}.parquet"


def write_chunk(path: Path, entries: list[JournalEntry]) -> None:
    """Publish `entries` as one chunk file, whole or not at all."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")  # a retried batch may overlap its first try
    # Vectors neither compress nor repeat: snappy and dictionary encoding only cost time (6x here).
    pq.write_table(_entries_table(entries), tmp, compression="none", use_dictionary=False)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_chunk(path: Path) -> tuple[list[dict], np.ndarray]:
    """A chunk's entries (without vectors) and their vectors, in the order written."""
    table = pq.read_table(path)
    embedding = table.column("embedding").combine_chunks()
    vectors = embedding.values.to_numpy(zero_copy_only=False).reshape(len(table), -1)
    return table.drop_columns(["embedding"]).to_pylist(), vectors


def _entries_table(entries: list[JournalEntry]) -> pa.Table:
    vectors = np.stack([e.vector for e in entries]).astype(np.float32)
    columns = {name: [getattr(e, name) for e in entries]
               for name in ("modality", "path", "content_hash", "size", "mtime", "width", "height")}
    table = pa.table(columns, schema=pa.schema([
        ("modality", pa.string()), ("path", pa.string()), ("content_hash", pa.string()), ("size", pa.int64()),
        ("mtime", pa.float64()), ("width", pa.int32()), ("height", pa.int32())]))
    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    return table.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]))
