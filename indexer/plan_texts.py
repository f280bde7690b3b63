"""Planning a corpus's texts by joins on arrays, batch by batch: memory follows the batch, not the corpus.

A text keeps its row while its corpus holds the same text: a text claims the stored
row of its corpus with the same content at the same line, or else the first
unclaimed one with the same content (a text that moved, or a repeated text). A
claimed row whose line and metadata are the same is kept as it is (nothing
written); otherwise it is rewritten under its row id with its vector. An unclaimed text reuses the vector of the same text anywhere in
the index, or in the resume journal; only the rest is encoded. Stored rows no text
claimed are removed when the corpus ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .plan import RowIds, text_hashes
from .sources import TextBatch
from .store.journal import Journal
from .store.tables import text_items
from .stored import StoredState, hash_array, hash_keys, search_sorted


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
    def __init__(self, source: str, state: StoredState, journal: Journal, ids: RowIds, dim: int):
        stored = state.texts.of_source(source)
        keys = hash_keys(stored.hashes)
        order = np.lexsort((stored.lines, keys))
        self._keys, self._hashes = keys[order], stored.hashes[order]
        self._row_ids, self._lines = stored.row_ids[order], stored.lines[order]
        self._claimed = np.zeros(len(order), bool)
        starts = np.r_[True, self._keys[1:] != self._keys[:-1]] if len(order) else np.zeros(0, bool)
        self._group = np.cumsum(starts) - 1  # each stored row's hash group
        self._group_start = np.flatnonzero(starts)
        self._group_end = np.r_[self._group_start[1:], len(order)].astype(np.int64)
        self._next_free = self._group_start.copy()
        self._line_span = int(max(self._lines.max(initial=0), 0)) + 2
        self._pairs = self._group * self._line_span + self._lines + 1  # ascending: by group, then line
        self._source, self._state, self._journal, self._ids, self._dim = source, state, journal, ids, dim
        self._metadata: pa.Array | None | bool = False  # read on first need
        self.replaced: list[np.ndarray] = []  # row ids rewritten with changes: their stored copies are deleted

    def plan(self, batch: TextBatch) -> PlannedTexts:
        hashes = hash_array(text_hashes(batch.texts.to_pylist()))
        positions = self._claim(hashes, batch.lines)
        matched = positions >= 0
        unchanged = np.zeros(len(hashes), bool)
        unchanged[matched] = self._unchanged(positions[matched], batch, matched)
        rewrite = matched & ~unchanged
        row_ids = np.full(len(hashes), -1, np.int64)
        row_ids[rewrite] = self._row_ids[positions[rewrite]]
        self.replaced.append(row_ids[rewrite])
        vectors = np.zeros((len(hashes), self._dim), np.float32)
        vectors[rewrite] = self._state.vectors.take("text", row_ids[rewrite], self._dim)
        new = np.flatnonzero(~matched)
        elsewhere = self._state.text_row_by_hash(hashes[new])
        reused = new[elsewhere >= 0]
        vectors[reused] = self._state.vectors.take("text", elsewhere[elsewhere >= 0], self._dim)
        resumed = [i for i in new[elsewhere < 0] if ("text", hashes[i].decode()) in self._journal.by_hash] \
            if self._journal.by_hash else []
        for i in resumed:
            vectors[i] = self._journal.by_hash[("text", hashes[i].decode())].vector
        known = np.zeros(len(hashes), bool)
        known[rewrite], known[reused], known[resumed] = True, True, True
        row_ids[~matched] = self._ids.take_many(int(np.count_nonzero(~matched)))
        encode = ~matched & ~known
        return PlannedTexts(self._items(batch, row_ids, hashes, known), vectors[known],
                            self._items(batch, row_ids, hashes, encode), int(np.count_nonzero(unchanged)),
                            int(len(reused) + np.count_nonzero(rewrite)), len(resumed))

    def unclaimed(self) -> np.ndarray:
        """Stored rows of the corpus no text claimed: removed."""
        return self._row_ids[~self._claimed]

    def _claim(self, hashes: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """Per text, the stored position it claims, or -1.

        First each text claims the stored row with its content at its own line; the others then claim
        the first unclaimed stored row with their content (a text that moved, or one more copy of it).
        """
        found = np.full(len(hashes), -1, np.int64)
        if not len(self._keys):
            return found
        at = np.minimum(search_sorted(self._keys, hash_keys(hashes)), len(self._keys) - 1)
        known = self._hashes[at] == hashes
        group = np.where(known, self._group[at], -1)
        in_span = known & (lines + 1 < self._line_span) & (lines >= 0)
        wanted = np.where(in_span, group * self._line_span + lines + 1, -1)
        exact = np.minimum(search_sorted(self._pairs, wanted), len(self._pairs) - 1)
        hit = in_span & (self._pairs[exact] == wanted) & ~self._claimed[exact]
        hit[hit] &= _first_of_each(exact[hit])
        found[hit] = exact[hit]
        self._claimed[exact[hit]] = True
        rest = np.flatnonzero(known & ~hit)
        single = self._group_end[group[rest]] - self._group_start[group[rest]] == 1
        lone, position = rest[single], self._group_start[group[rest[single]]]
        free = ~self._claimed[position] & _first_of_each(position)  # a moved text whose content is stored once
        found[lone[free]] = position[free]
        self._claimed[position[free]] = True
        for i in rest[~single].tolist():  # repeated contents: few, taken one by one
            g = int(group[i])
            position, end = int(self._next_free[g]), int(self._group_end[g])
            while position < end and self._claimed[position]:
                position += 1
            self._next_free[g] = position
            if position < end:
                self._claimed[position] = True
                found[i] = position
        return found

    def _unchanged(self, positions: np.ndarray, batch: TextBatch, matched: np.ndarray) -> np.ndarray:
        same = self._lines[positions] == batch.lines[matched]
        given = batch.metadata.filter(pa.array(matched)) if batch.metadata is not None else None
        if self._metadata is False:
            self._metadata = self._state.text_metadata(self._source, self._row_ids)
        stored = self._metadata.take(pa.array(positions)) if self._metadata is not None else None
        return same & same_metadata(stored, given, len(positions))

    def _items(self, batch: TextBatch, row_ids: np.ndarray, hashes: np.ndarray, mask: np.ndarray) -> pa.Table:
        chosen = pa.array(mask)
        metadata = batch.metadata.filter(chosen) if batch.metadata is not None else None
        return text_items(row_ids[mask], batch.texts.filter(chosen), self._source, batch.lines[mask], hashes[mask],
                          metadata)


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
