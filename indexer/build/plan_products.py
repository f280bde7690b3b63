"""Planning products: table rows that link a photo, one item holding two vectors.

A product keeps its row id while its corpus holds it. In a table with an id column,
it is the row with the same key, wherever its line moved; an edited photo or
description keeps the row id. Without one, it is the row with the same description
and photo, or failing that with the same photo or the same description (one part
edited); a row whose description and photo both changed is a new product, with a
new row id (row ids are never given to another product). Lines are only for
messages: a table exported again in another order changes nothing. Each part is
planned on its own: an unchanged photo (path, size, mtime) keeps its vector unread; a
photo or description whose content is stored anywhere in the index, or in the
resume journal, reuses that vector; only what is new is encoded. A photo that
cannot be read leaves a product with its text alone, and a failure. A photo named by
URL is planned by its local copy (sources/photo_urls.py: rewritten only when the
URL's photo changed) and named by its URL.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .plan import RowIds, file_hash, text_hash
from .sources import TextRecord
from ..store.journal import Journal
from ..store.tables import Failure, ItemRow
from .stored import StoredState, hash_array


@dataclass
class ProductPlan:
    rows: list[ItemRow] = field(default_factory=list)  # photo fields filled once the photo is known good
    photo_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    text_vectors: dict[int, np.ndarray] = field(default_factory=dict)
    photos_to_encode: dict[str, list[ItemRow]] = field(default_factory=dict)  # photo path -> products awaiting it
    files: dict[str, str] = field(default_factory=dict)  # a photo URL -> its local copy, the file read
    texts_to_encode: dict[str, list[ItemRow]] = field(default_factory=dict)  # text -> products awaiting it
    carried_failures: list[Failure] = field(default_factory=list)
    new_failures: list[Failure] = field(default_factory=list)
    reused: int = 0
    resumed: int = 0
    removed_ids: list[int] = field(default_factory=list)
    lines: dict[int, int] = field(default_factory=dict)  # row id -> its line this run, for failure messages


class _Matcher:
    """Old products of one run's corpora: by (corpus, key) in a keyed table; else by (corpus, text, photo),
    then by (corpus, photo), then by (corpus, text)."""

    def __init__(self, rows: list[ItemRow]):
        self.by_key: dict[tuple, ItemRow] = {}
        self.by_content: dict[tuple, list[ItemRow]] = {}
        self.by_photo: dict[tuple, list[ItemRow]] = {}
        self.by_text: dict[tuple, list[ItemRow]] = {}
        for row in sorted(rows, key=lambda r: r.row_id):
            if row.key is not None:
                self.by_key[(row.source, row.key)] = row
            self.by_content.setdefault((row.source, row.content_hash, row.path), []).append(row)
            if row.path is not None:
                self.by_photo.setdefault((row.source, row.path), []).append(row)
            self.by_text.setdefault((row.source, row.content_hash), []).append(row)
        self.taken: set[int] = set()

    def take(self, record: TextRecord, digest: str) -> ItemRow | None:
        if record.key is not None:
            old = self.by_key.get((record.source, record.key))
            if old is not None or self.by_key:  # a keyed table: the key alone decides
                return self._claimed(old)
        for candidates in (self.by_content.get((record.source, digest, record.image)),
                           self.by_photo.get((record.source, record.image)) if record.image else None,
                           self.by_text.get((record.source, digest))):
            old = next((r for r in candidates or () if r.row_id not in self.taken and
                        (r.key is None or record.key is not None)), None)
            if old is not None:
                return self._claimed(old)
        return None

    def _claimed(self, old: ItemRow | None) -> ItemRow | None:
        if old is None or old.row_id in self.taken:
            return None
        self.taken.add(old.row_id)
        return old


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
                      text=record.text, source=record.source, content_hash=digest, key=record.key,
                      metadata=record.metadata or None)
        plan.rows.append(row)
        plan.lines[row.row_id] = record.line
        _plan_text(plan, row, old, text_sources, journal)
        if record.photo_skipped is not None:
            plan.new_failures.append(Failure(record.image, "image", record.photo_skipped, line=record.line,
                                             source=record.source))
        elif record.image is not None:
            if record.photo_file is not None:
                plan.files[record.image] = record.photo_file
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
    path, file = row.path, plan.files.get(row.path, row.path)
    try:
        stat = os.stat(file)
    except OSError as exc:
        plan.new_failures.append(Failure(path, "image", f"unreadable: {exc.strerror or exc}",
                                         line=plan.lines[row.row_id], source=row.source))
        return
    if old is not None and old.path == path and (old.size, old.mtime) == (stat.st_size, stat.st_mtime) \
            and known.state.has_vector("product-image", old.row_id):
        _photo_known(plan, row, old.image_hash, stat, old, known.state.vector("product-image", old.row_id))
        plan.reused += 1
        return
    failure = known.failed.get((row.source, path))
    if failure is not None and (failure.size, failure.mtime) == (stat.st_size, stat.st_mtime):
        plan.carried_failures.append(Failure(path, "image", failure.reason, failure.size, failure.mtime,
                                             plan.lines[row.row_id], row.source))
        return
    entry = journal.by_path.get(file)
    if entry is not None and (entry.size, entry.mtime) == (stat.st_size, stat.st_mtime):
        _photo_known(plan, row, entry.content_hash, stat, entry, entry.vector)
        plan.resumed += 1
        return
    digest = file_hash(file)
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
