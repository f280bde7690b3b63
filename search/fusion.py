"""Fusing a product's per-part scores (photo, description) into the one score it is ranked by.

Raw cosines are on different scales per part: a text query sits near 0.2-0.3 to
photos and much higher to texts, so a plain sum lets the description decide
alone. The methods, all weighted:
  zscore  each part standardised by the scores of its whole population (mean, sd)
  dbsf    Qdrant's distribution-based score fusion: mean +- 3 sd mapped to [0, 1]
  rrf     reciprocal rank fusion, sum of w / (60 + rank), as Elastic and LanceDB
  sum     the raw cosines
A product lacking a part is scored by the parts it has. The default was chosen by
measurement (bench/bench_fusion.py; README, "Products").
"""
from __future__ import annotations

import numpy as np

FUSIONS = ("zscore", "dbsf", "rrf", "sum")
DEFAULT_FUSION = "zscore"
RRF_K = 60


def fuse(scores: dict[str, np.ndarray], weights: dict[str, float], method: str = DEFAULT_FUSION,
         population: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    """One fused score per candidate. `scores[part]` holds NaN where a candidate lacks that part.

    `population[part]` is the (mean, sd) of the part's scores over the whole collection
    (by default the candidates' own). A part a product lacks counts as an average one
    (the population's mean), so a product is judged by the parts it has, on the same
    scale as the others; where it has no part with a weight, its own parts order it
    among its kind.
    """
    parts = list(scores)
    normalised, baselines = [], []
    for part in parts:
        stats = (population or {}).get(part) or _stats(scores[part])
        normalised.append(_normalise(np.asarray(scores[part], dtype=np.float64), method, stats))
        baselines.append(_normalise(np.array([stats[0]]), method, stats)[0] if method != "rrf" else 0.0)
    stacked = np.stack(normalised)
    present = ~np.isnan(stacked)
    w = np.array([float(weights.get(p, 0.0)) for p in parts])
    filled = np.where(present, stacked, np.array(baselines)[:, None])
    fused = (w[:, None] * filled).sum(axis=0) / max(w.sum(), 1e-12)
    unweighted = ~(present & (w[:, None] > 0)).any(axis=0)
    if unweighted.any():
        with np.errstate(invalid="ignore"):
            own = np.nanmean(np.where(present, stacked, np.nan)[:, unweighted], axis=0)
        fused[unweighted] += 1e-6 * np.nan_to_num(own)
    return fused


def _stats(values: np.ndarray) -> tuple[float, float]:
    present = np.asarray(values, dtype=np.float64)
    present = present[~np.isnan(present)]
    return (float(present.mean()), float(present.std())) if len(present) else (0.0, 1.0)


def _normalise(values: np.ndarray, method: str, stats: tuple[float, float]) -> np.ndarray:
    if method == "sum":
        return values
    if method == "rrf":
        ranks = np.full(len(values), np.nan)
        present = np.flatnonzero(~np.isnan(values))
        order = present[np.argsort(-values[present], kind="stable")]
        ranks[order] = 1.0 / (RRF_K + np.arange(1, len(order) + 1))
        return ranks
    mean, sd = stats
    sd = sd if sd > 1e-9 else 1.0
    if method == "zscore":
        return (values - mean) / sd
    if method == "dbsf":
        return np.clip((values - (mean - 3 * sd)) / (6 * sd), 0.0, 1.0)
    raise ValueError(f"unknown fusion {method!r}; use one of {', '.join(FUSIONS)}")
