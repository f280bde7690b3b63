"""Segments: immutable slices of an index (items, their vectors, per-set ANN indexes) plus deletion records.

A commit adds at most one segment (the items it added or changed) and records the
row ids it removed or replaced as a new deletion file of the segment that held
them; nothing already written is rewritten. Vectors are raw .npy files, memory-
mapped by readers, keyed by a row-id array of their own (never by position in the
items table). A flat set needs no FAISS file: the vectors are its index.

A format-2 index (one generation folder holding everything as Parquet) is read as
one legacy segment; the next commit rewrites it as a real one.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..errors import InvalidInputError, option
from .manifest import VECTOR_SETS, SegmentRef, SegmentSet
from .tables import read_embeddings, read_items, write_items
from .words import WORDS_FOLDER, SegmentWords, write_words

SEGMENTS_DIR = "segments"
SEGMENT_PREFIX = "seg-"
VECTOR_DTYPES = ("float32", "float16")


def check_vector_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in VECTOR_DTYPES:
        raise InvalidInputError(f"unknown vector storage {dtype!r} for {option('vectors')}; use one of {', '.join(VECTOR_DTYPES)}")


def segment_folder(root: Path, ref: SegmentRef) -> Path:
    return root / ref.name if ref.legacy else root / SEGMENTS_DIR / ref.name


def ids_file(vector_set: str) -> str:
    return f"{vector_set}.ids.npy"


def vectors_file(vector_set: str) -> str:
    return f"{vector_set}.vectors.npy"


def write_segment(folder: Path, name: str, items: pa.Table, vectors: dict[str, tuple[np.ndarray, np.ndarray]],
                  dtype: str, index_type: str, memory_budget: int | None = None,
                  index_size: int | None = None, ann_add=None, words: dict | None = None) -> SegmentRef:
    """Write items and their vectors (by set: row ids, matrix) into `folder`; returns its manifest record.

    Rows are stored by row id. With a memory budget for the whole index (of `index_size` items), a
    large segment's IVF codes take its share of the budget. `ann_add` fills IVF lists elsewhere (ann.VectorAdder).
    With `words` (store.words.words_setting), the rows' word index is written beside them.
    """
    from . import ann

    items = items.take(pc.sort_indices(items.column("row_id")))
    write_items(folder / "items.parquet", items)
    sets = {}
    for vector_set in VECTOR_SETS:
        row_ids, matrix = vectors.get(vector_set, (np.zeros(0, np.int64), None))
        if not len(row_ids):
            continue
        order = np.argsort(row_ids, kind="stable")
        if np.any(order != np.arange(len(order))):
            row_ids, matrix = row_ids[order], matrix[order]
        _save_npy(folder / ids_file(vector_set), row_ids.astype(np.int64, copy=False))
        _save_npy(folder / vectors_file(vector_set), matrix.astype(dtype, copy=False))
        share = None if memory_budget is None else memory_budget * len(row_ids) // max(index_size or len(items), 1)
        spec = ann.choose_ann(len(row_ids), index_type, matrix.shape[1], share)
        if spec.kind != "flat":  # a flat set is searched straight from its vectors
            built = ann.VectorIndex.build(np.asarray(matrix, np.float32), row_ids, spec, ann_add)
            built.save(folder / f"{vector_set}.faiss")
            spec = built.spec
        sets[vector_set] = SegmentSet(len(row_ids), spec, dtype)
    if words is not None:
        write_words(folder / WORDS_FOLDER, items, words.get("columns"))
    return SegmentRef(name, len(items), sets, words=WORDS_FOLDER if words is not None else None)


def add_words(root: Path, ref: SegmentRef, generation: str, words: dict) -> tuple[SegmentRef, int]:
    """A written segment's word index, added (or replaced) as of `generation` beside its rows: its folder is
    new, so readers of earlier commits keep theirs. Returns the segment's new record and the bytes written."""
    folder = segment_folder(root, ref)
    name = f"{WORDS_FOLDER}-{generation}"
    write_words(folder / name, read_items(folder / "items.parquet"), words.get("columns"))
    fsync_dir(folder)  # tantivy syncs its own files; the new folder's entry is the segment's
    return replace(ref, words=name), sum(p.stat().st_size for p in (folder / name).iterdir() if p.is_file())


def write_deletions(folder: Path, generation: str, deleted: np.ndarray) -> str:
    """The segment's whole deletion list as of `generation`, in a new file (readers may hold the old one)."""
    name = f"deleted-{generation}.npy"
    _save_npy(folder / name, np.unique(np.asarray(deleted, dtype=np.int64)))
    return name


def fsync_dir(folder: Path) -> None:
    """A folder's entries (a new file or subfolder in it) made durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


class SegmentReader:
    """Reads one segment as a given manifest sees it (its deletion file included)."""

    def __init__(self, root: Path, ref: SegmentRef):
        self.ref = ref
        self.folder = segment_folder(root, ref)

    def deleted(self) -> np.ndarray:
        if self.ref.deleted is None:
            return np.zeros(0, np.int64)
        return np.load(self.folder / self.ref.deleted)

    def item_columns(self) -> list[str]:
        return pq.read_schema(self.folder / "items.parquet").names

    def items(self, columns: list[str] | None = None) -> pa.Table:
        """The live rows of this segment (only `columns`, which must include row_id, if given).

        A column this segment's format lacks reads as nulls.
        """
        present = None if columns is None else [c for c in columns if c in self.item_columns()]
        table = read_items(self.folder / "items.parquet", present)
        for name in [c for c in columns or [] if c not in table.column_names]:
            table = table.append_column(name, pa.nulls(len(table), pa.string() if name != "line" else pa.int64()))
        deleted = self.deleted()
        if len(deleted):
            keep = ~np.isin(table.column("row_id").to_numpy(), deleted)
            table = table.filter(pa.array(keep))
        return table

    def vectors(self, vector_set: str) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, vectors) of one set, deleted rows included; vectors are memory-mapped where stored raw."""
        if self.ref.legacy:
            return read_embeddings(self.folder / f"embeddings-{vector_set}.parquet")
        if vector_set not in self.ref.sets:
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        row_ids = np.load(self.folder / ids_file(vector_set))
        matrix = np.load(self.folder / vectors_file(vector_set), mmap_mode="r")
        return row_ids, matrix

    def words(self) -> SegmentWords | None:
        """The segment's word index, its deleted rows skipped; None where it was written before words."""
        if self.ref.words is None:
            return None
        return SegmentWords(self.folder / self.ref.words, self.deleted())

    def ann(self, vector_set: str):
        """The set's FAISS index, or None where the vectors are searched exactly."""
        from . import ann

        spec = self.ref.sets[vector_set].ann
        if spec.kind == "flat":
            return None
        return ann.VectorIndex.load(self.folder / f"{vector_set}.faiss", spec)

