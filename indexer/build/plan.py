"""Planning an incremental run: what to keep, reuse, encode and drop, given the last commit.

Images, a batch of paths at a time against the stored images' arrays: a file
whose path, size and mtime are unchanged is kept without being read. Otherwise
its content hash decides: the same content elsewhere in the index (a rename or
move) or in the resume journal reuses that vector; only new content is encoded.
A photo's row id follows its path: an edited photo keeps it (a like saved by row
id still finds it), a moved one takes over its vanished path's. Whatever the
folders no longer hold is removed. Files that failed before are
retried only when they changed, or when asked to. Texts are planned by
indexer/build/plan_texts.py, products by indexer/build/plan_products.py.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from .decode import content_hash, new_hasher
from ..store.journal import Journal
from ..store.tables import Failure, ItemRow
from .stored import StoredState

HASH_BLOCK = 1 << 20


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


@dataclass
class PlannedImages:
    """One batch of image paths planned: rows to write whose vectors are known, and paths to encode."""

    rows: list[ItemRow] = field(default_factory=list)  # new or changed rows (a changed one keeps its row id)
    vectors: list[np.ndarray] = field(default_factory=list)
    to_encode: list[str] = field(default_factory=list)
    kept_ids: dict[str, int] = field(default_factory=dict)  # a path to encode that keeps its stored row id
    carried_failures: list[Failure] = field(default_factory=list)
    kept: int = 0  # rows left as stored
    reused: int = 0
    resumed: int = 0

    def write(self, row: ItemRow, vector: np.ndarray) -> None:
        self.rows.append(row)
        self.vectors.append(vector)

    def encode(self, path: str, row_id: int | None) -> None:
        self.to_encode.append(path)
        if row_id is not None:
            self.kept_ids[path] = row_id


class ImagePlanner:
    """Plans image paths batch by batch against the stored images of the synced folders.

    An unchanged file (path, size, mtime) is kept without being read. Otherwise its content hash
    decides: the same content stored anywhere (a touched, renamed or copied file) or in the resume
    journal reuses that vector; only new content is encoded. A stored path keeps its row id whatever
    its content now (its old copy is replaced); a file that moved takes over the row of its vanished
    path. Stored images of the synced folders no path claimed are removed at the end.
    """

    def __init__(self, state: StoredState, journal: Journal, ids: RowIds, retry_failed: bool = False):
        self._state, self._images, self._journal, self._ids = state, state.images, journal, ids
        scope = state.images_in_scope
        self._in_scope = np.ones(len(self._images), bool) if scope is None else scope
        self._claimed = np.zeros(len(self._images), bool)
        self._failed = {} if retry_failed else {f.path: f for f in state.failures if f.modality == "image"}
        self.replaced: list[int] = []  # row ids rewritten under the same id: their stored copies are deleted

    def plan(self, paths: list[str]) -> PlannedImages:
        plan = PlannedImages()
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:
                continue  # vanished since the scan: as if never seen
            self._plan_one(plan, path, stat)
        return plan

    def unclaimed(self) -> np.ndarray:
        return self._images.row_ids[self._in_scope & ~self._claimed]

    def _plan_one(self, plan: PlannedImages, path: str, stat: os.stat_result) -> None:
        images = self._images
        old = images.at_path(path)
        old = old if old >= 0 and self._in_scope[old] and not self._claimed[old] else -1
        if old >= 0 and images.sizes[old] == stat.st_size and images.mtimes[old] == stat.st_mtime:
            self._claimed[old] = True
            plan.kept += 1
            return
        failure = self._failed.get(path)
        if failure and (failure.size, failure.mtime) == (stat.st_size, stat.st_mtime):
            plan.carried_failures.append(failure)
            return
        kept = self._claim(old) if old >= 0 else None  # changed in place: the path keeps its row id
        entry = self._journal.by_path.get(path)
        if entry and (entry.size, entry.mtime) == (stat.st_size, stat.st_mtime):
            plan.write(_row_from_journal(self._id(kept), entry), entry.vector)
            plan.resumed += 1
            return
        if not len(images) and not self._journal.by_hash:
            plan.encode(path, kept)  # nothing stored to match: the decoder hashes it as it reads it, once
            return
        digest = file_hash(path)
        source = old if old >= 0 and images.hashes[old].decode() == digest else self._holder(digest)
        if source >= 0:
            # Same content: a touched file keeps its row; a moved one takes over the row of the vanished path.
            if kept is None and self._moved(source):
                kept = self._claim(source)
            plan.write(_moved_row(images.row(source), self._id(kept), path, stat),
                       self._state.vector("image", int(images.row_ids[source])))
            plan.reused += 1
            return
        entry = self._journal.by_hash.get(("image", digest))
        if entry is not None:
            plan.write(_moved_row(_row_from_journal(0, entry), self._id(kept), path, stat), entry.vector)
            plan.resumed += 1
            return
        plan.encode(path, kept)

    def _claim(self, position: int) -> int:
        """The stored row at `position` is rewritten under its own row id: its stored copy is deleted."""
        row_id = int(self._images.row_ids[position])
        self._claimed[position] = True
        self.replaced.append(row_id)
        return row_id

    def _id(self, kept: int | None) -> int:
        return self._ids.take() if kept is None else kept

    def _holder(self, digest: str) -> int:
        """A stored image with this content: one of the synced folders' first, then any; -1 if none."""
        found = self._images.with_hash(digest)
        scoped = [p for p in found if self._in_scope[p]]
        return (scoped or found or [-1])[-1]

    def _moved(self, source: int) -> bool:
        return bool(self._in_scope[source]) and not self._claimed[source] \
            and not os.path.exists(self._images.paths[source])


def _row_from_journal(row_id: int, entry) -> ItemRow:
    return ItemRow(row_id=row_id, modality="image", path=entry.path, content_hash=entry.content_hash,
                   size=entry.size, mtime=entry.mtime, width=entry.width, height=entry.height)


def _moved_row(source: ItemRow, row_id: int, path: str, stat: os.stat_result) -> ItemRow:
    return ItemRow(row_id=row_id, modality="image", path=path, content_hash=source.content_hash,
                   size=stat.st_size, mtime=stat.st_mtime, width=source.width, height=source.height)
