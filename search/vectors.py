"""Stored vectors of one vector set, by row id: exact scoring of subsets, lookups, population statistics."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from indexer.store.tables import read_embeddings

POPULATION_SAMPLE = 4096  # vectors scored to estimate a query's score distribution over a collection


class StoredVectors:
    """Row ids (ascending) and their L2-normalised vectors; never joined to anything by position."""

    def __init__(self, row_ids: np.ndarray, matrix: np.ndarray):
        order = np.argsort(row_ids, kind="stable")
        self.row_ids = np.asarray(row_ids, dtype=np.int64)[order]
        self.matrix = np.ascontiguousarray(matrix[order], dtype=np.float32)

    @classmethod
    def load(cls, path: Path) -> "StoredVectors":
        row_ids, matrix = read_embeddings(path)
        return cls(row_ids, matrix)

    def __len__(self) -> int:
        return len(self.row_ids)

    def positions(self, row_ids: np.ndarray) -> np.ndarray:
        """Position of each row id, -1 where this set has no vector for it."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if not len(self.row_ids):
            return np.full(len(row_ids), -1, dtype=np.int64)
        found = np.minimum(np.searchsorted(self.row_ids, row_ids), len(self.row_ids) - 1)
        return np.where(self.row_ids[found] == row_ids, found, -1)

    def vector(self, row_id: int) -> np.ndarray | None:
        position = self.positions(np.array([row_id]))[0]
        return None if position < 0 else self.matrix[position]

    def subset(self, row_ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, vectors) of the given ids that have a vector here; all of them for None."""
        if row_ids is None:
            return self.row_ids, self.matrix
        positions = self.positions(row_ids)
        positions = np.unique(positions[positions >= 0])
        return self.row_ids[positions], self.matrix[positions]

    def sample(self, count: int = POPULATION_SAMPLE) -> np.ndarray:
        """A fixed, evenly spread sample of the vectors (all of them when there are few)."""
        if len(self) <= count:
            return self.matrix
        return self.matrix[np.linspace(0, len(self) - 1, count).astype(np.int64)]
