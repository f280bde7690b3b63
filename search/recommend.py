"""Scoring stored vectors against liked and disliked examples, with Qdrant's strategies.

  average_vector  q = avg(liked) + (avg(liked) - avg(disliked)); cosine to q (plain search with one liked example)
  best_score      p = best cosine to a liked example, n = best to a disliked one;
                  s(p) if p > n else -s(n), with s(x) = 0.5 * (x / (1 + |x|) + 1)
  sum_scores      sum of cosines to the liked examples minus the sum to the disliked ones
(Qdrant: lib/segment/src/vector_storage/query/reco_query.rs; qdrant-client local/distances.py.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..indexer.errors import InvalidInputError, option

STRATEGIES = ("average_vector", "best_score", "sum_scores")
DEFAULT_STRATEGY = "average_vector"


def check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise InvalidInputError(f"unknown strategy {strategy!r}; use {option('strategy', 'average_vector')}, "
                                f"best_score or sum_scores")


@dataclass
class PartQuery:
    """What to score one vector set by: liked and disliked example vectors (unit length) and a strategy."""

    liked: np.ndarray  # (p, d)
    disliked: np.ndarray  # (n, d)
    strategy: str = DEFAULT_STRATEGY

    @property
    def single_vector(self) -> np.ndarray | None:
        """The one query vector a plain ANN search can use, when the strategy reduces to one."""
        if self.strategy == "average_vector" or (len(self.liked) == 1 and not len(self.disliked)):
            return self.average_vector()
        return None

    def average_vector(self) -> np.ndarray:
        liked = self.liked.mean(axis=0)
        q = 2 * liked - self.disliked.mean(axis=0) if len(self.disliked) else liked
        return (q / max(float(np.linalg.norm(q)), 1e-12)).astype(np.float32)

    def probes(self) -> np.ndarray:
        """Query vectors whose nearest neighbours hold the best candidates for this strategy."""
        single = self.single_vector
        return single[None, :] if single is not None else self.liked

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """Exact scores of `vectors` (n, d) by the strategy."""
        if self.strategy == "average_vector":
            return vectors @ self.average_vector()
        liked = vectors @ self.liked.T if len(self.liked) else np.zeros((len(vectors), 0), np.float32)
        disliked = vectors @ self.disliked.T if len(self.disliked) else np.zeros((len(vectors), 0), np.float32)
        if self.strategy == "sum_scores":
            return liked.sum(axis=1) - disliked.sum(axis=1)
        best_liked = liked.max(axis=1) if liked.shape[1] else np.full(len(vectors), -np.inf, np.float32)
        best_disliked = disliked.max(axis=1) if disliked.shape[1] else np.full(len(vectors), -np.inf, np.float32)
        return np.where(best_liked > best_disliked, _squash(best_liked), -_squash(best_disliked)).astype(np.float32)


def _squash(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), 0.5 * (x / (1.0 + np.abs(x)) + 1.0), x)
