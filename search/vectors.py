"""Stored vectors of one vector set across an index's segments: search, lookups by row id, statistics.

Each segment contributes a part: its row ids, its vectors (memory-mapped, float32
or float16) and, where it is large, a FAISS index; rows its deletion record names
are skipped. A search asks every part for its k best and keeps the k best of all;
equal scores rank by row id, so the answer is the same however the rows are split.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..indexer.store import SearchResult, VectorIndex

from .placement import SearchPlacement
from .scan import Scan, make_scan

POPULATION_SAMPLE = 4096  # vectors scored to estimate a query's score distribution over a collection
SCORE_CHUNK = 65_536  # rows scored at once by an exact scan: bounds the memory of a batch of queries
WIDENED_UP_TO = 131_072  # float16 parts up to this many rows keep a float32 copy: converting per query costs more
SHORTLIST_MARGIN = 64  # rows a device scan returns beyond k, so rounding rarely sends a query back to the CPU


@dataclass
class VectorPart:
    """One segment's vectors of one set. `row_ids` ascending; `live` False for deleted rows."""

    row_ids: np.ndarray
    matrix: np.ndarray  # float32 or float16; may be a read-only memory map
    live: np.ndarray | None = None  # None: every row is live
    ann: VectorIndex | None = None  # None: searched exactly
    scan: Scan | None = None  # the vectors on a GPU: searched exactly there, whatever the ANN
    _excluded: np.ndarray | None = field(default=None, repr=False)
    _widened: np.ndarray | None = field(default=None, repr=False)

    def scorable(self) -> np.ndarray:
        """The vectors as float32 where that is cheap to hold (small float16 parts), else as stored."""
        if self.matrix.dtype == np.float32 or len(self.row_ids) > WIDENED_UP_TO:
            return self.matrix
        if self._widened is None:
            self._widened = np.asarray(self.matrix, dtype=np.float32)
        return self._widened

    def exact(self, queries: np.ndarray, k: int, positions: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, the candidates at least as good as its k-th best here (ties kept), as (ids, scores).

        `positions`: the rows to consider (a filter); None: every live row. Wide selections are scored
        in contiguous blocks of the memory map and masked, narrow ones gathered.
        """
        if self.scan is not None and (positions is None or self.scan.filters):
            return self._shortlisted(queries, k, positions)
        return self._scanned(queries, k, positions)

    def _shortlisted(self, queries: np.ndarray, k: int,
                     positions: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The device's shortlist re-scored from the stored vectors; a query whose shortlist cannot be shown
        to hold its k best (rounded scores too close to call) is scanned on the CPU instead."""
        admitted = None
        if positions is not None:
            admitted = np.zeros(len(self.row_ids), bool)
            admitted[positions] = True
        count = max(2 * k, k + SHORTLIST_MARGIN)
        rows, rounded = self.scan.shortlist(queries, count, admitted)
        found = []
        for q, query in enumerate(queries):
            seen = np.isfinite(rounded[q])
            candidates = rows[q][seen]
            order = np.argsort(candidates)  # memory maps read fastest in file order
            scores = np.empty(len(candidates), np.float32)
            scores[order] = np.asarray(self.matrix[candidates[order]], dtype=np.float32) @ query
            keep = _at_least_kth(scores, k)
            every_admitted_row = seen.sum() < count
            margin = 2 * self.scan.error_bound * float(np.linalg.norm(query))
            complete = every_admitted_row or scores[keep].min() > rounded[q][seen].min() + margin
            if complete:
                found.append((self.row_ids[candidates[keep]], scores[keep]))
            else:
                found.extend(self._scanned(queries[q:q + 1], k, positions))
        return found

    def _scanned(self, queries: np.ndarray, k: int,
                 positions: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
        admitted = self.live
        if positions is not None and len(positions) > len(self.row_ids) // 4:
            admitted = np.zeros(len(self.row_ids), bool)
            admitted[positions] = True  # positions hold live rows only
            positions = None
        found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(queries))]
        if positions is not None:
            blocks = ((positions[s:s + SCORE_CHUNK], None) for s in range(0, len(positions), SCORE_CHUNK))
        else:
            blocks = ((slice(s, s + SCORE_CHUNK), admitted) for s in range(0, len(self.row_ids), SCORE_CHUNK))
        matrix = self.scorable()
        for rows, mask in blocks:
            ids = self.row_ids[rows]
            scores = queries @ np.asarray(matrix[rows], dtype=np.float32).T
            if mask is not None:
                scores[:, ~mask[rows]] = -np.inf
            for q, row in enumerate(scores):
                keep = _at_least_kth(row, k)
                keep = keep[np.isfinite(row[keep])]
                found[q].append((ids[keep], row[keep]))
        return [_joined(parts) for parts in found]

    def excluded(self) -> np.ndarray | None:
        """Row ids of the deleted rows (computed once: every query of an ANN part passes them on)."""
        if self.live is None:
            return None
        if self._excluded is None:
            self._excluded = self.row_ids[~self.live]
        return self._excluded


class StoredVectors:
    """Row ids (ascending) and their L2-normalised vectors; never joined to anything by position."""

    def __init__(self, parts: list[VectorPart]):
        self.parts = [p for p in parts if len(p.row_ids)]
        ids, part_of, offset = [], [], []
        for number, part in enumerate(self.parts):
            live = np.arange(len(part.row_ids)) if part.live is None else np.flatnonzero(part.live)
            ids.append(part.row_ids[live])
            part_of.append(np.full(len(live), number, np.int32))
            offset.append(live)
        ids_all = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        order = np.argsort(ids_all, kind="stable")
        self.row_ids = ids_all[order].astype(np.int64)
        self._part = np.concatenate(part_of)[order] if ids else np.zeros(0, np.int32)
        self._offset = np.concatenate(offset)[order] if ids else np.zeros(0, np.int64)
        self.dim = self.parts[0].matrix.shape[1] if self.parts else 0

    @classmethod
    def of(cls, row_ids: np.ndarray, matrix: np.ndarray) -> "StoredVectors":
        """One in-memory part (tests, evaluation)."""
        order = np.argsort(row_ids, kind="stable")
        return cls([VectorPart(np.asarray(row_ids, np.int64)[order], np.asarray(matrix, np.float32)[order])])

    def __len__(self) -> int:
        return len(self.row_ids)

    def place(self, placement: SearchPlacement) -> int:
        """Put every part's vectors on the placement's device, as long as they fit; the others are searched
        as before. Returns how many parts were placed."""
        placed = 0
        for part in self.parts if placement.on_gpu else []:
            if part.scan is None:
                try:
                    part.scan = make_scan(part.matrix, part.live, placement.engine, placement.device)
                except (MemoryError, RuntimeError) as exc:
                    if "out of memory" not in str(exc).lower() and not isinstance(exc, MemoryError):
                        raise
                    break
            placed += 1
        return placed

    # ---- lookups ------------------------------------------------------------------------------------------

    def positions(self, row_ids: np.ndarray) -> np.ndarray:
        """Position of each row id among `self.row_ids`, -1 where this set has no vector for it."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if not len(self.row_ids):
            return np.full(len(row_ids), -1, dtype=np.int64)
        found = np.minimum(np.searchsorted(self.row_ids, row_ids), len(self.row_ids) - 1)
        return np.where(self.row_ids[found] == row_ids, found, -1)

    def take(self, positions: np.ndarray) -> np.ndarray:
        """float32 vectors at `positions` (of `self.row_ids`), in that order."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim), np.float32)
        parts = self._part[positions]
        for number in np.unique(parts):
            mine = parts == number
            offsets = self._offset[positions[mine]]
            order = np.argsort(offsets)  # memory maps read fastest in file order
            rows = np.empty((len(offsets), self.dim), np.float32)
            rows[order] = self.parts[number].matrix[offsets[order]]
            out[mine] = rows
        return out

    def vector(self, row_id: int) -> np.ndarray | None:
        position = self.positions(np.array([row_id]))[0]
        return None if position < 0 else self.take(np.array([position]))[0]

    def subset(self, row_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, vectors) of the given ids that have a vector here; all of them for None."""
        if row_ids is None:
            return self.row_ids, self.take(np.arange(len(self.row_ids)))
        positions = self.positions(row_ids)
        positions = np.unique(positions[positions >= 0])
        return self.row_ids[positions], self.take(positions)

    def chunks(self, size: int = 1024):
        """(row ids, vectors) in blocks of `size`, every vector once."""
        for start in range(0, len(self.row_ids), size):
            positions = np.arange(start, min(start + size, len(self.row_ids)))
            yield self.row_ids[positions], self.take(positions)

    def sample(self, count: int = POPULATION_SAMPLE) -> np.ndarray:
        """A fixed, evenly spread sample of the vectors (all of them when there are few)."""
        if len(self) <= count:
            return self.take(np.arange(len(self)))
        return self.take(np.linspace(0, len(self) - 1, count).astype(np.int64))

    # ---- search -------------------------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[SearchResult]:
        """The k best per query over every part, among `allowed` row ids if given; ties by row id."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        found: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(queries))]
        admitted = None
        if allowed is not None:
            admitted = self.positions(allowed)
            admitted = admitted[admitted >= 0]
        for number, part in enumerate(self.parts):
            positions = None if admitted is None else np.sort(self._offset[admitted[self._part[admitted] == number]])
            if positions is not None and not len(positions):
                continue
            for q, (ids, scores) in enumerate(_search_part(part, queries, k, positions)):
                found[q].append((ids, scores))
        results = []
        for parts, query in zip(found, queries):
            ids, _ = _joined(parts)
            scores = self._settled_scores(ids, query)
            order = np.lexsort((ids, -scores))[:k]
            results.append(SearchResult(scores[order].astype(np.float32), ids[order]))
        return results

    def _settled_scores(self, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
        """The candidates scored again, each row on its own and in float64. A matrix product rounds a row's
        score by where the row falls in BLAS's blocks, so one vector stored twice could score a unit in the
        last place apart and its copies rank by position instead of by row id."""
        vectors = self.take(self.positions(ids)).astype(np.float64)
        return (vectors * query.astype(np.float64)).sum(axis=1)


def _search_part(part: VectorPart, queries: np.ndarray, k: int,
                 positions: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """The k best of one part (ties at the edge kept), among the rows at `positions` if given."""
    if part.ann is None or part.scan is not None:
        return part.exact(queries, k, positions)
    subset = None if positions is None else part.row_ids[positions]
    rerank = int(part.ann.spec.params.get("rerank", 1))
    results = part.ann.search(queries, k * rerank, subset, excluded=part.excluded() if subset is None else None)
    if rerank == 1:
        return [(r.row_ids, r.scores) for r in results]
    rescored = []  # compressed codes rank candidates roughly; the stored vectors score them exactly
    for result, query in zip(results, queries):
        rows = np.searchsorted(part.row_ids, result.row_ids)
        order = np.argsort(rows)  # memory maps read fastest in file order
        scores = np.empty(len(rows), np.float32)
        scores[order] = np.asarray(part.matrix[rows[order]], dtype=np.float32) @ query
        rescored.append((result.row_ids, scores))
    return rescored


TIE_SLACK = 1e-5  # float32 scores this close to the k-th best may be its tie, rounded apart: kept for settling


def _at_least_kth(scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of the scores at least the k-th best, or within TIE_SLACK of it (all when there are few)."""
    if len(scores) <= k:
        return np.arange(len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    return np.flatnonzero(scores >= kth - TIE_SLACK)


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return (np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.float32))
