"""Fusing a product's per-part scores (photo, description) into the one score it is ranked by.

Raw cosines are on different scales per part: a text query sits near 0.2-0.3 to
photos and much higher to texts, so a plain sum lets the description decide
alone. The methods, all weighted:
  zscore  each part standardised by the scores of its whole population (mean, sd)
  dbsf    Qdrant's distribution-based score fusion: mean - 3 sd -> 0 and mean + 3 sd -> 1, floored at 0
          (not capped at 1, as Qdrant does: capping tied a photo's nearest copies with the photo itself)
  rrf     reciprocal rank fusion, sum of w / (60 + rank), as Elastic and LanceDB
  sum     the raw cosines
A product lacking a part is scored by the parts it has.

Standardising divides by the spread of a part's scores for this query; a part that hardly
spreads (a random model's cross-modal scores, or a catalogue the model sees as all alike)
would have its noise stretched to the scale of a real signal. So the spread counts as at
least SPREAD_FLOOR (cosine), which leaves real spreads alone (0.06-0.15 for the offline
model) and damps flat ones (0.02 for a random CLIP's text-to-photo scores); measured on
bench/bench_fusion.py it also gained 0.002-0.01 mAP on text queries.

The weights depend on what the query is (DEFAULT_WEIGHTS, chosen by bench/bench_fusion.py;
docs/shop.md): a photo query is matched by photos (its cosine to a description is
cross-modal and noisy: weighing it in cost 0.05-0.10 mAP), a text query by both parts,
descriptions first. Whatever the fusion, a product whose photo or description is the query
itself (cosine >= IDENTICAL, in a part with a weight) ranks first: a shop's own photo finds its product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FUSIONS = ("zscore", "dbsf", "rrf", "sum")
DEFAULT_FUSION = "zscore"
RRF_K = 60
SPREAD_FLOOR = 0.05
# Query kind -> weights: "image" (a photo query, photos liked), "text" (a text query, texts liked), "mixed"
# (products liked, texts and photos together, or a bare vector).
DEFAULT_WEIGHTS = {"image": {"image": 1.0, "text": 0.0}, "text": {"image": 0.3, "text": 0.7},
                   "mixed": {"image": 0.5, "text": 0.5}}
# A stored vector this close to the query is the query's own content: float32 recomputation and float16
# storage differ from it by under 1e-6; two different Fashion-MNIST photos came as close as 0.99992.
IDENTICAL = 1 - 1e-5


@dataclass(frozen=True)
class PartStats:
    """The mean and spread of one part's scores for a query, over the whole collection."""

    mean: float
    sd: float


def default_weights(kind: str) -> dict[str, float]:
    """The weights a search of this query kind uses unless told otherwise."""
    return dict(DEFAULT_WEIGHTS.get(kind, DEFAULT_WEIGHTS["mixed"]))


def fuse(scores: dict[str, np.ndarray], weights: dict[str, float], method: str = DEFAULT_FUSION,
         population: dict[str, tuple[float, float]] | None = None,
         spread_floor: float = SPREAD_FLOOR) -> np.ndarray:
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
        mean, sd = (population or {}).get(part) or _stats(scores[part])
        stats = PartStats(mean, max(sd, spread_floor, 1e-9))
        normalised.append(_normalise(np.asarray(scores[part], dtype=np.float64), method, stats))
        baselines.append(_normalise(np.array([stats.mean]), method, stats)[0] if method != "rrf" else 0.0)
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


def identical_to_query(scores: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
    """Per candidate, whether one of its weighted parts is the query itself (`scores`: plain cosines to the
    query). A part weighted 0 is set aside, identical or not."""
    found = np.zeros(len(next(iter(scores.values()))), bool)
    for part, values in scores.items():
        if weights.get(part, 0.0) > 0:
            found |= np.nan_to_num(values, nan=-1.0) >= IDENTICAL
    return found


def _stats(values: np.ndarray) -> tuple[float, float]:
    present = np.asarray(values, dtype=np.float64)
    present = present[~np.isnan(present)]
    return (float(present.mean()), float(present.std())) if len(present) else (0.0, 1.0)


def _normalise(values: np.ndarray, method: str, stats: PartStats) -> np.ndarray:
    if method == "sum":
        return values
    if method == "rrf":
        ranks = np.full(len(values), np.nan)
        present = np.flatnonzero(~np.isnan(values))
        order = present[np.argsort(-values[present], kind="stable")]
        ranks[order] = 1.0 / (RRF_K + np.arange(1, len(order) + 1))
        return ranks
    if method == "zscore":
        return (values - stats.mean) / stats.sd
    if method == "dbsf":
        return np.maximum((values - (stats.mean - 3 * stats.sd)) / (6 * stats.sd), 0.0)
    raise ValueError(f"unknown fusion {method!r}; use one of {', '.join(FUSIONS)}")
