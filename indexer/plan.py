"""Planning an incremental run: what to keep, reuse, encode and drop, given the last commit.

Images: a file whose path, size and mtime are unchanged is kept without being
read. Otherwise its content hash decides: the same content elsewhere in the
index (a rename or move) or in the resume journal reuses that vector; only new
content is encoded. Texts are matched by content. Whatever the sources no
longer hold is removed. Files that failed before are retried only when they
changed, or when asked to.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .decode import content_hash, new_hasher
from .sources import TextRecord
from .store.journal import Journal
from .store.tables import Failure, ItemRow

HASH_BLOCK = 1 << 20


@dataclass
class StoredState:
    """The last committed index: rows, vectors by vector set and row id, and failures.

    A run's planner sees the rows and failures of the sources it syncs; `reusable`
    holds every stored row, whose vectors may be reused by content.
    """

    rows: list[ItemRow] = field(default_factory=list)
    vectors: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    next_row_id: int = 0
    reusable: list[ItemRow] = field(default_factory=list)
    segments: dict[str, np.ndarray] = field(default_factory=dict)  # live row ids by segment name

    def vector(self, vector_set: str, row_id: int) -> np.ndarray:
        return self.vectors[vector_set][row_id]


@dataclass
class Planned:
    """Rows whose vectors are already known, and the work still to encode."""

    rows: list[ItemRow] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    to_encode: list = field(default_factory=list)  # image paths, or TextRecords
    carried_failures: list[Failure] = field(default_factory=list)
    reused: int = 0
    resumed: int = 0
    removed_ids: list[int] = field(default_factory=list)

    def keep(self, row: ItemRow, vector: np.ndarray, reused: bool = True) -> None:
        self.rows.append(row)
        self.vectors.append(vector)
        self.reused += reused


def file_hash(path: str) -> str:
    digest = new_hasher()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def text_hash(text: str) -> str:
    return content_hash(text.encode("utf-8"))


class RowIds:
    def __init__(self, next_row_id: int):
        self.next = next_row_id

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def plan_images(paths: list[str], state: StoredState, journal: Journal, ids: RowIds,
                retry_failed: bool = False) -> Planned:
    """`state` holds the items of the sources this run syncs; `state.reusable` any item's vector by content."""
    plan = Planned()
    previous = [r for r in state.rows if r.modality == "image"]
    by_path = {r.path: r for r in previous}
    by_hash = {**{r.content_hash: r for r in state.reusable if r.modality == "image"},
               **{r.content_hash: r for r in previous}}
    in_scope = {r.row_id for r in previous}
    failed = {f.path: f for f in state.failures if f.modality == "image"}
    present = set(paths)
    used_ids: set[int] = set()
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue  # vanished since the scan: as if never seen
        old = by_path.get(path)
        if old and old.size == stat.st_size and old.mtime == stat.st_mtime:
            plan.keep(old, state.vector("image", old.row_id))
            used_ids.add(old.row_id)
            continue
        failure = failed.get(path)
        if failure and not retry_failed and (failure.size, failure.mtime) == (stat.st_size, stat.st_mtime):
            plan.carried_failures.append(failure)
            continue
        entry = journal.by_path.get(path)
        if entry and (entry.size, entry.mtime) == (stat.st_size, stat.st_mtime):
            plan.keep(_row_from_journal(ids.take(), entry), entry.vector, reused=False)
            plan.resumed += 1
            continue
        digest = file_hash(path)
        source = old if old and old.content_hash == digest else by_hash.get(digest)
        if source is not None:
            # Same content: a touched file keeps its row; a moved one takes over the row of the vanished path.
            moved = source.row_id in in_scope and source.path not in present and source.row_id not in used_ids
            row_id = source.row_id if (source.path == path or moved) else ids.take()
            used_ids.add(row_id)
            plan.keep(_moved_row(source, row_id, path, stat), state.vector("image", source.row_id))
            continue
        entry = journal.by_hash.get(("image", digest))
        if entry is not None:
            plan.keep(_moved_row(_row_from_journal(0, entry), ids.take(), path, stat), entry.vector, reused=False)
            plan.resumed += 1
            continue
        plan.to_encode.append(path)
    plan.removed_ids = [r.row_id for r in previous if r.row_id not in used_ids]
    return plan


def plan_texts(records: list[TextRecord], state: StoredState, journal: Journal, ids: RowIds) -> Planned:
    """A text keeps its row while its corpus holds the same text; its vector is reused from any corpus."""
    plan = Planned()
    pool: dict[tuple[str | None, str], list[ItemRow]] = {}
    for row in (r for r in state.rows if r.modality == "text"):
        pool.setdefault((row.source, row.content_hash), []).append(row)
    elsewhere = _LazyIndex(lambda: {r.content_hash: r.row_id for r in state.reusable if r.modality == "text"})
    for record in records:
        digest = text_hash(record.text)
        same = pool.get((record.source, digest))
        if same:
            old = same.pop(0)
            unchanged = old.line == record.line and old.metadata == (record.metadata or None)
            plan.keep(old if unchanged else _text_row(old.row_id, record, digest), state.vector("text", old.row_id))
        elif digest in elsewhere:
            plan.keep(_text_row(ids.take(), record, digest), state.vector("text", elsewhere[digest]))
        elif ("text", digest) in journal.by_hash:
            plan.keep(_text_row(ids.take(), record, digest), journal.by_hash[("text", digest)].vector, reused=False)
            plan.resumed += 1
        else:
            plan.to_encode.append(record)
    plan.removed_ids = [r.row_id for rows in pool.values() for r in rows]
    return plan


class _LazyIndex:
    """A dictionary built on first use: a re-run that matches every text in its own corpus never builds it."""

    def __init__(self, build):
        self._build, self._built = build, None

    def _get(self) -> dict:
        if self._built is None:
            self._built = self._build()
        return self._built

    def __contains__(self, key) -> bool:
        return key in self._get()

    def __getitem__(self, key):
        return self._get()[key]


def _text_row(row_id: int, record: TextRecord, digest: str) -> ItemRow:
    size = len(record.text.encode("utf-8"))
    return ItemRow(row_id=row_id, modality="text", text=record.text, source=record.source, line=record.line,
                   content_hash=digest, size=size, metadata=record.metadata or None)


def _row_from_journal(row_id: int, entry) -> ItemRow:
    return ItemRow(row_id=row_id, modality="image", path=entry.path, content_hash=entry.content_hash,
                   size=entry.size, mtime=entry.mtime, width=entry.width, height=entry.height)


def _moved_row(source: ItemRow, row_id: int, path: str, stat: os.stat_result) -> ItemRow:
    return ItemRow(row_id=row_id, modality="image", path=path, content_hash=source.content_hash,
                   size=stat.st_size, mtime=stat.st_mtime, width=source.width, height=source.height)
