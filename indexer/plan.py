"""Planning an incremental run: what to keep, reuse, encode and drop, given the last commit.

Images: a file whose path, size and mtime are unchanged is kept without being
read. Otherwise its content hash decides: the same content elsewhere in the
index (a rename or move) or in the resume journal reuses that vector; only new
content is encoded. Whatever the folders no longer hold is removed. Files that
failed before are retried only when they changed, or when asked to. Texts are
planned by indexer/plan_texts.py, products by indexer/plan_products.py.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from .decode import content_hash, new_hasher
from .store.journal import Journal
from .store.tables import Failure, ItemRow
from .stored import StoredState

HASH_BLOCK = 1 << 20


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


def text_hashes(texts: list[str]) -> list[str]:
    """`text_hash` of each text, without a call per text: hashing is most of planning a re-run of a big corpus."""
    blake2b = hashlib.blake2b  # new_hasher's hash, inlined
    return [blake2b(text.encode("utf-8"), digest_size=16).hexdigest() for text in texts]


class RowIds:
    def __init__(self, next_row_id: int):
        self.next = next_row_id

    def take(self) -> int:
        self.next += 1
        return self.next - 1

    def take_many(self, count: int) -> np.ndarray:
        self.next += count
        return np.arange(self.next - count, self.next, dtype=np.int64)


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


def _row_from_journal(row_id: int, entry) -> ItemRow:
    return ItemRow(row_id=row_id, modality="image", path=entry.path, content_hash=entry.content_hash,
                   size=entry.size, mtime=entry.mtime, width=entry.width, height=entry.height)


def _moved_row(source: ItemRow, row_id: int, path: str, stat: os.stat_result) -> ItemRow:
    return ItemRow(row_id=row_id, modality="image", path=path, content_hash=source.content_hash,
                   size=stat.st_size, mtime=stat.st_mtime, width=source.width, height=source.height)
