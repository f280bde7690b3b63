"""Planning products: table rows that link a photo, one item holding two vectors.

A product keeps its row id while its corpus holds it: the same description and
photo, or failing that the same line (an edited row). Each part is planned on
its own: an unchanged photo (path, size, mtime) keeps its vector unread; a
photo or description whose content is stored anywhere in the index, or in the
resume journal, reuses that vector; only what is new is encoded. A photo that
cannot be read leaves a product with its text alone, and a failure.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .plan import RowIds, file_hash, text_hash
from .sources import TextRecord
from .store.journal import Journal
from .store.tables import Failure, ItemRow
from .stored import StoredState, hash_array


@dataclass
class ProductPlan:
    rows: list[ItemRow] = field(default_factory=list)  # photo fields filled once the photo is known good
    photo_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    text_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    photos_to_encode: dict[str, list[ItemRow]] = field(default_factory=dict)  # photo path -> products awaiting it
    texts_to_encode: dict[str, list[ItemRow]] = field(default_factory=dict)  # text -> products awaiting it
    carried_failures: list[Failure] = field(default_factory=list)
    new_failures: list[Failure] = field(default_factory=list)
    reused: int = 0
    resumed: int = 0
    removed_ids: list[int] = field(default_factory=list)


class _Matcher:
    """Old products of one run's corpora: by (corpus, text, photo), then by (corpus, line)."""

    def __init__(self, rows: list[ItemRow]):
        self.by_content = {(r.source, r.content_hash, r.path): r for r in rows}
        self.by_line = {(r.source, r.line): r for r in rows}
        self.taken: set[int] = set()

    def take(self, record: TextRecord, digest: str) -> ItemRow | None:
        for old in (self.by_content.get((record.source, digest, record.image)),
                    self.by_line.get((record.source, record.line))):
            if old is not None and old.row_id not in self.taken:
                self.taken.add(old.row_id)
                return old
        return None


def plan_products(records: list[TextRecord], state: StoredState, journal: Journal, ids: RowIds,
                  retry_failed: bool = False) -> ProductPlan:
    plan = ProductPlan()
    previous = [r for r in state.rows if r.modality == "product"]
    if not records and not previous:
        return plan  # no tables of products: skip indexing every stored vector by content
    matcher = _Matcher(previous)
    text_sources = _TextVectors(state)
    photo_sources = _PhotoVectors(state, retry_failed)
    for record in records:
        digest = text_hash(record.text)
        old = matcher.take(record, digest)
        row = ItemRow(row_id=old.row_id if old else ids.take(), modality="product", path=record.image,
                      text=record.text, source=record.source, line=record.line, content_hash=digest,
                      metadata=record.metadata or None)
        plan.rows.append(row)
        _plan_text(plan, row, old, text_sources, journal)
        if record.image is not None:
            _plan_photo(plan, row, old, photo_sources, journal)
    plan.removed_ids = [r.row_id for r in previous if r.row_id not in matcher.taken]
    return plan


class _TextVectors:
    """Vectors of descriptions by content: from stored products, or from any stored text."""

    def __init__(self, state: StoredState):
        self.state = state
        self._products: dict[str, np.ndarray] = {}
        for row in state.reusable:
            if row.modality == "product" and state.has_vector("product-text", row.row_id):
                self._products.setdefault(row.content_hash, state.vector("product-text", row.row_id))

    def get(self, digest: str) -> np.ndarray | None:
        if digest in self._products:
            return self._products[digest]
        row_id = int(self.state.text_row_by_hash(hash_array([digest]))[0])
        return self.state.vector("text", row_id) if row_id >= 0 else None


class _PhotoVectors:
    """Vectors of photos by content: from stored products, or from any stored image."""

    def __init__(self, state: StoredState, retry_failed: bool):
        self.state = state
        self._products: dict[str, tuple[ItemRow, np.ndarray]] = {}  # photo content -> (a row with it, vector)
        for row in state.reusable:
            if row.modality == "product" and state.has_vector("product-image", row.row_id):
                self._products.setdefault(row.image_hash, (row, state.vector("product-image", row.row_id)))
        self.failed = {} if retry_failed else {
            (f.source, f.path): f for f in state.failures if f.modality == "image" and f.source}

    def get(self, digest: str) -> tuple[ItemRow, np.ndarray] | None:
        found = self.state.images.with_hash(digest)
        if found:
            row = self.state.images.row(found[0])
            return row, self.state.vector("image", row.row_id)
        return self._products.get(digest)


def _plan_text(plan: ProductPlan, row: ItemRow, old: ItemRow | None, known: _TextVectors, journal: Journal) -> None:
    vector = None
    if old is not None and old.content_hash == row.content_hash and known.state.has_vector("product-text", old.row_id):
        vector = known.state.vector("product-text", old.row_id)
    if vector is None:
        vector = known.get(row.content_hash)
    if vector is not None:
        plan.text_vectors[row.row_id] = vector
        plan.reused += 1
    elif ("text", row.content_hash) in journal.by_hash:
        plan.text_vectors[row.row_id] = journal.by_hash[("text", row.content_hash)].vector
        plan.resumed += 1
    else:
        plan.texts_to_encode.setdefault(row.text, []).append(row)


def _plan_photo(plan: ProductPlan, row: ItemRow, old: ItemRow | None, known: _PhotoVectors,
                journal: Journal) -> None:
    path = row.path
    try:
        stat = os.stat(path)
    except OSError as exc:
        plan.new_failures.append(Failure(path, "image", f"unreadable: {exc.strerror or exc}", line=row.line,
                                         source=row.source))
        return
    if old is not None and old.path == path and (old.size, old.mtime) == (stat.st_size, stat.st_mtime) \
            and known.state.has_vector("product-image", old.row_id):
        _photo_known(plan, row, old.image_hash, stat, old, known.state.vector("product-image", old.row_id))
        plan.reused += 1
        return
    failure = known.failed.get((row.source, path))
    if failure is not None and (failure.size, failure.mtime) == (stat.st_size, stat.st_mtime):
        plan.carried_failures.append(Failure(path, "image", failure.reason, failure.size, failure.mtime, row.line,
                                             row.source))
        return
    entry = journal.by_path.get(path)
    if entry is not None and (entry.size, entry.mtime) == (stat.st_size, stat.st_mtime):
        _photo_known(plan, row, entry.content_hash, stat, entry, entry.vector)
        plan.resumed += 1
        return
    digest = file_hash(path)
    held = known.get(digest)
    if held is not None:  # the same photo under another name, or also in an image folder
        holder, vector = held
        _photo_known(plan, row, digest, stat, holder, vector)
        plan.reused += 1
        return
    entry = journal.by_hash.get(("image", digest))
    if entry is not None:
        _photo_known(plan, row, digest, stat, entry, entry.vector)
        plan.resumed += 1
        return
    plan.photos_to_encode.setdefault(path, []).append(row)


def _photo_known(plan: ProductPlan, row: ItemRow, digest: str | None, stat: os.stat_result, source,
                 vector: np.ndarray) -> None:
    row.image_hash, row.size, row.mtime = digest, stat.st_size, stat.st_mtime
    row.width, row.height = source.width, source.height
    plan.photo_vectors[row.row_id] = vector
