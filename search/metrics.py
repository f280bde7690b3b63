"""Retrieval metrics over score matrices, computed exactly.

Ties are broken against the relevant item (pessimistic): a model that gives
every item the same score earns nothing from the tie. Rows are queries,
columns are candidates; `relevant[q, c]` says whether candidate c answers q.
"""
from __future__ import annotations

import numpy as np


def rank_relevance(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Relevance of each query's candidates in ranked order (best first, ties pessimistic)."""
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    # lexsort's last key is primary: score descending, then irrelevant before relevant.
    order = np.array([np.lexsort((r, -s)) for s, r in zip(scores, relevant)]).reshape(scores.shape)
    return np.take_along_axis(relevant, order, axis=1)


def precision_at_k(ranked: np.ndarray, k: int) -> np.ndarray:
    """Share of the top k that is relevant; with fewer than k relevant items the best is n/k."""
    return ranked[:, :k].sum(axis=1) / k


def recall_at_k(ranked: np.ndarray, k: int) -> np.ndarray:
    """Share of the relevant items found in the top k (queries with none are not defined: NaN)."""
    total = ranked.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, ranked[:, :k].sum(axis=1) / total, np.nan)


def hit_at_k(ranked: np.ndarray, k: int) -> np.ndarray:
    """1 where at least one relevant item is in the top k (Recall@K of the CLIP paper, top-k accuracy)."""
    return ranked[:, :k].any(axis=1).astype(np.float64)


def average_precision(ranked: np.ndarray) -> np.ndarray:
    """Mean of the precision at the rank of each relevant item, over all relevant items."""
    hits = np.cumsum(ranked, axis=1)
    positions = np.arange(1, ranked.shape[1] + 1)
    total = ranked.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (hits / positions * ranked).sum(axis=1) / total, np.nan)


def ann_recall_at_k(approximate_scores: list[np.ndarray], exact_scores: np.ndarray, k: int,
                    tolerance: float = 1e-5) -> float:
    """Share of the exact top k an approximate index returned, averaged over queries.

    Tie-aware: a returned hit counts when its score reaches the exact k-th best
    score, so equally good neighbours are interchangeable (ids alone would not be).
    """
    found = []
    for approx, exact in zip(approximate_scores, exact_scores):
        depth = min(k, len(exact))
        if depth == 0:
            continue
        threshold = exact[depth - 1] - tolerance
        found.append(min(depth, int(np.sum(np.asarray(approx[:k]) >= threshold))) / depth)
    return float(np.mean(found)) if found else float("nan")
