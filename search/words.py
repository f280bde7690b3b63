"""An index's words, searched as one: every segment's word index (indexer/store/words.py), BM25 scores made
comparable across segments, deleted rows and rows a filter refuses skipped.

BM25 weighs a term by how rare it is; each segment knows only its own rows, so a term common in one segment
and rare in another would score by its segment. Each term's score in a segment is scaled by the ratio of its
inverse document frequency over the whole index to that over the segment, so a row scores as if every
segment were one (the length normalisation stays the segment's, whose average differs little).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..indexer import words as analyser
from ..indexer.store import SegmentWords


# A term held by more than this share of the rows is left out of a ranking by any of the words when the query has
# a rarer one: "size" in "size 42", on 60% of a shop's rows, took 4.7 ms of tantivy's 1M-row search for the same
# top 100 that "42" alone gives in 0.5 ms (bench/bench_hybrid_speed.py prune). Its weight there is near zero.
COMMON = 0.5


class WordIndex:
    def __init__(self, segments: Sequence[SegmentWords | None]):
        self._segments = [s for s in segments if s is not None]
        self.missing = sum(s is None for s in segments)  # segments written before words: their rows have none

    @property
    def exists(self) -> bool:
        """Whether every segment has its words (an index with some is completed by its next run)."""
        return bool(self._segments) and not self.missing

    def search(self, terms: Sequence[str], k: int, admitted: np.ndarray | None = None,
               every: bool = False) -> list[tuple[int, float]]:
        """The k rows best matching `terms` by BM25 over the whole index, best first, equal scores by row id.
        `every`: rows holding each term the index knows (a term no row holds is not asked for)."""
        counts = {t: [s.document_frequency(t) for s in self._segments] for t in dict.fromkeys(terms)}
        known = [t for t, found in counts.items() if sum(found)]
        if not known or k <= 0:
            return []
        sizes = [s.count() for s in self._segments]
        rare = [t for t in known if sum(counts[t]) <= COMMON * sum(sizes)]
        if not every and rare:
            known = rare  # a common term adds little to the ranking and costs a score for most rows
        everywhere = {t: _idf(sum(counts[t]), sum(sizes)) for t in known}
        found: list[tuple[int, float]] = []
        for at, segment in enumerate(self._segments):
            weights = {t: everywhere[t] / _idf(counts[t][at], sizes[at]) for t in known if counts[t][at]}
            if len(weights) < len(known) and every:
                continue  # a term this segment lacks: none of its rows holds every term
            if weights:
                found += segment.search(list(weights), k, weights, admitted, every)
        return sorted(found, key=lambda hit: (-hit[1], hit[0]))[:k]

    def keyed(self, query: str, admitted: np.ndarray | None = None) -> list[int]:
        """The rows whose key (their table's id column) the query is, or names as one of its codes."""
        rows = []
        for term in analyser.key_terms(query):
            for segment in self._segments:
                rows += [row for row, _ in segment.search([term], 16, None, admitted)]
        return list(dict.fromkeys(rows))


def _idf(holding: int, rows: int) -> float:
    """BM25's inverse document frequency, as tantivy computes it."""
    return math.log(1.0 + (rows - holding + 0.5) / (holding + 0.5))
