"""Planning a corpus's texts by joins on arrays, batch by batch: memory follows the batch, not the corpus.

Which stored row a text is:
- In a table with an id column, the stored row with the same key, wherever its line moved. An
  edited text keeps its row id (its row is rewritten with a new vector); a key that is gone is
  removed, and a new key gets a new row id (row ids are never reused).
- Otherwise, a stored row of its corpus with the same content: a moved text keeps its row, an
  edited text is a new text with a new row id. Where a corpus repeats a text, each copy claims
  the stored copy with its metadata if one is unclaimed, else the first unclaimed one.
Line numbers are not part of a row's identity, nor of the row: a table exported again in
another order writes nothing. A claimed row whose text, key and metadata are the same is kept
as it is; otherwise it is rewritten under its row id. A text without a stored row reuses the
vector of the same text anywhere in the index, or in the resume journal; only the rest is
encoded. Stored rows no text claimed are removed when the corpus ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .plan import RowIds, text_hashes
from .sources import TextBatch
from ..store.journal import Journal
from ..store.tables import text_items
from .stored import StoredState, StoredTexts, hash_array, hash_keys, key_hashes, search_sorted


@dataclass
class PlannedTexts:
    """One batch planned: rows to write whose vectors are known, and rows still to encode."""

    known: pa.Table  # items: rewritten (same row id) and reused rows
    known_vectors: np.ndarray
    to_encode: pa.Table  # items whose vectors the encoder must give, in order
    kept: int  # rows left as stored
    reused: int
    resumed: int


class CorpusTextPlanner:
    def __init__(self, source: str, state: StoredState, journal: Journal, ids: RowIds, dim: int,
                 keyed: bool = False):
        stored = state.texts.of_source(source)
        self._row_ids, self._hashes, self._keys = stored.row_ids, stored.hashes, stored.keys
        self._claimed = np.zeros(len(stored), bool)
        self._by_key = _KeyIndex(stored) if keyed else None
        # Content claims: every stored row, or in a keyed table the rows stored before it had keys.
        self._by_content = _ContentIndex(stored, stored.keys.is_null().to_numpy(zero_copy_only=False)
                                         if keyed else np.ones(len(stored), bool))
        self._source, self._state, self._journal, self._ids, self._dim = source, state, journal, ids, dim
        self._metadata: pa.Array | None | bool = False  # read on first need
        self.replaced: list[np.ndarray] = []  # row ids rewritten with changes: their stored copies are deleted

    def plan(self, batch: TextBatch) -> PlannedTexts:
        hashes = hash_array(text_hashes(batch.texts.to_pylist()))
        positions = np.full(len(hashes), -1, np.int64)
        if self._by_key is not None and batch.keys is not None:
            positions = self._by_key.find(batch.keys, self._claimed)
        rest = np.flatnonzero(positions < 0)
        positions[rest] = self._by_content.claim(hashes[rest], self._claimed,
                                                 lambda i, position: self._same_row_metadata(batch, rest[i], position))
        self._claimed[positions[positions >= 0]] = True
        matched = positions >= 0
        same_text = np.zeros(len(hashes), bool)
        same_text[matched] = self._hashes[positions[matched]] == hashes[matched]
        unchanged = np.zeros(len(hashes), bool)
        unchanged[matched] = self._unchanged(positions[matched], batch, matched) & same_text[matched]
        row_ids = np.full(len(hashes), -1, np.int64)
        row_ids[matched] = self._row_ids[positions[matched]]
        row_ids[~matched] = self._ids.take_many(int(np.count_nonzero(~matched)))
        self.replaced.append(row_ids[matched & ~unchanged])
        kept_vector = matched & ~unchanged & same_text  # rewritten for its key or metadata: same vector
        vectors = np.zeros((len(hashes), self._dim), np.float32)
        vectors[kept_vector] = self._state.vectors.take("text", row_ids[kept_vector], self._dim)
        wanted = np.flatnonzero(~unchanged & ~kept_vector)  # new texts, and edited texts of a key
        elsewhere = self._state.text_row_by_hash(hashes[wanted])
        reused = wanted[elsewhere >= 0]
        vectors[reused] = self._state.vectors.take("text", elsewhere[elsewhere >= 0], self._dim)
        by_hash = self._journal.by_hash
        resumed = [i for i in wanted[elsewhere < 0] if ("text", hashes[i].decode()) in by_hash] if by_hash else []
        for i in resumed:
            vectors[i] = by_hash[("text", hashes[i].decode())].vector
        known = np.zeros(len(hashes), bool)
        known[kept_vector], known[reused], known[resumed] = True, True, True
        encode = ~unchanged & ~known
        return PlannedTexts(self._items(batch, row_ids, hashes, known), vectors[known],
                            self._items(batch, row_ids, hashes, encode), int(np.count_nonzero(unchanged)),
                            int(len(reused) + np.count_nonzero(kept_vector)), len(resumed))

    def unclaimed(self) -> np.ndarray:
        """Stored rows of the corpus no text claimed: removed."""
        return self._row_ids[~self._claimed]

    def _stored_metadata(self) -> pa.Array | None:
        if self._metadata is False:
            self._metadata = self._state.text_metadata(self._source, self._row_ids)
        return self._metadata

    def _same_row_metadata(self, batch: TextBatch, row: int, position: int) -> bool:
        """Whether one text of the batch has the metadata of one stored row (a repeated text's copies)."""
        stored = self._stored_metadata()
        given = batch.metadata[row].as_py() if batch.metadata is not None else None
        held = stored[position].as_py() if stored is not None else None
        return {k: v for k, v in (given or {}).items() if v is not None} == \
            {k: v for k, v in (held or {}).items() if v is not None}

    def _unchanged(self, positions: np.ndarray, batch: TextBatch, matched: np.ndarray) -> np.ndarray:
        """Whether each claimed row's key and metadata are as stored (its text is compared by the caller)."""
        chosen = pa.array(matched)
        given = batch.metadata.filter(chosen) if batch.metadata is not None else None
        metadata = self._stored_metadata()
        stored = metadata.take(pa.array(positions)) if metadata is not None else None
        keys = batch.keys.filter(chosen) if batch.keys is not None else pa.nulls(len(positions), pa.string())
        stored_keys = self._keys.take(pa.array(positions))
        same_key = pc.or_(pc.fill_null(pc.equal(stored_keys, keys), False),
                          pc.and_(pc.is_null(stored_keys), pc.is_null(keys)))
        return same_key.to_numpy(zero_copy_only=False) & same_metadata(stored, given, len(positions))

    def _items(self, batch: TextBatch, row_ids: np.ndarray, hashes: np.ndarray, mask: np.ndarray) -> pa.Table:
        chosen = pa.array(mask)
        metadata = batch.metadata.filter(chosen) if batch.metadata is not None else None
        keys = batch.keys.filter(chosen) if batch.keys is not None else None
        return text_items(row_ids[mask], batch.texts.filter(chosen), self._source, hashes[mask], metadata, keys)


class _KeyIndex:
    """The stored rows of a keyed table by key: 64-bit key hashes, sorted, confirmed against the key."""

    def __init__(self, stored: StoredTexts):
        present = np.flatnonzero(~stored.keys.is_null().to_numpy(zero_copy_only=False))
        hashed = key_hashes(stored.keys.take(pa.array(present)))
        order = np.argsort(hashed, kind="stable")
        self._hashes, self._positions, self._keys = hashed[order], present[order], stored.keys

    def find(self, keys: pa.Array, claimed: np.ndarray) -> np.ndarray:
        """Per key, the position of the stored row holding it (not yet claimed), or -1."""
        found = np.full(len(keys), -1, np.int64)
        if not len(self._hashes) or not len(keys):
            return found
        hashed = key_hashes(keys)
        at = np.minimum(search_sorted(self._hashes, hashed), len(self._hashes) - 1)
        candidate = self._positions[at]
        same = (self._hashes[at] == hashed) & ~claimed[candidate]
        same[same] &= pc.equal(self._keys.take(pa.array(candidate[same])),
                               keys.filter(pa.array(same))).to_numpy(zero_copy_only=False)
        found[same] = candidate[same]
        return found


class _ContentIndex:
    """Eligible stored rows by content, each content's rows in row-id order: a text claims the first one
    unclaimed."""

    def __init__(self, stored: StoredTexts, eligible: np.ndarray):
        rows = np.flatnonzero(eligible)
        keys = hash_keys(stored.hashes[rows])
        order = np.lexsort((stored.row_ids[rows], keys))
        self._rows, self._keys, self._hashes = rows[order], keys[order], stored.hashes[rows[order]]
        starts = np.r_[True, self._keys[1:] != self._keys[:-1]] if len(order) else np.zeros(0, bool)
        self._group_start = np.flatnonzero(starts)
        self._group = np.cumsum(starts) - 1
        self._group_end = np.r_[self._group_start[1:], len(order)].astype(np.int64)

    def claim(self, hashes: np.ndarray, claimed: np.ndarray, same_metadata) -> np.ndarray:
        """Per text, the stored position it claims (marked in `claimed`), or -1. A repeated content's copy
        takes the unclaimed stored copy that `same_metadata(text, position)` accepts, else the first one."""
        found = np.full(len(hashes), -1, np.int64)
        if not len(self._keys) or not len(hashes):
            return found
        at = np.minimum(search_sorted(self._keys, hash_keys(hashes)), len(self._keys) - 1)
        known = np.flatnonzero(self._hashes[at] == hashes)  # a shared 64-bit prefix is not a match
        group = self._group[at[known]]
        single = self._group_end[group] - self._group_start[group] == 1
        lone, position = known[single], self._rows[self._group_start[group[single]]]
        free = ~claimed[position] & _first_of_each(position)  # a text whose content is stored once
        found[lone[free]] = position[free]
        claimed[position[free]] = True
        for i, g in zip(known[~single].tolist(), group[~single].tolist()):  # repeated contents: one by one
            free = [int(p) for p in self._rows[self._group_start[g]:self._group_end[g]] if not claimed[p]]
            if free:
                position = next((p for p in free if same_metadata(i, p)), free[0])
                claimed[position] = True
                found[i] = position
        return found


def _first_of_each(values: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each value."""
    first = np.zeros(len(values), bool)
    first[np.unique(values, return_index=True)[1]] = True
    return first


def same_metadata(stored: pa.Array | None, given: pa.Array | None, n: int) -> np.ndarray:
    """Row by row, whether two struct columns hold equal values (a field one lacks counts as null; two
    nulls are equal). A value of another type is another value: "12" stored as text is not 12, so a
    column re-typed (a fixed cell, other missing markers) rewrites its rows; ints and floats compare as
    numbers."""
    fields = {f.name for a in (stored, given) if a is not None for f in a.type}
    same = np.ones(n, bool)
    for name in fields:
        left, right = _field(stored, name, n), _field(given, name, n)
        both_null = pc.and_(pc.is_null(left), pc.is_null(right)).to_numpy(zero_copy_only=False)
        try:
            if pa.types.is_null(left.type) and pa.types.is_null(right.type):
                continue  # a column with no values on either side (an export's empty column): nothing differs
            if pa.types.is_null(left.type):
                left = left.cast(right.type)
            elif pa.types.is_null(right.type):
                right = right.cast(left.type)
            elif left.type != right.type:
                if not (_is_number(left.type) and _is_number(right.type)):
                    same &= both_null
                    continue
                left, right = left.cast(pa.float64()), right.cast(pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return np.zeros(n, bool)
        equal = pc.fill_null(pc.equal(left, right), False).to_numpy(zero_copy_only=False)
        same &= equal | both_null
    return same


def _is_number(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)


def _field(struct: pa.Array | None, name: str, n: int) -> pa.Array:
    if struct is None or struct.type.get_field_index(name) < 0:
        return pa.nulls(n)
    values = struct.field(name)
    return pc.if_else(pc.is_null(struct), pa.nulls(n, values.type), values) if struct.null_count else values
