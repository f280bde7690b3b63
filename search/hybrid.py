"""Hybrid search: a text query's vector ranking and its word ranking (BM25) fused into one.

A shopper's query is sometimes a code (SHO-004, XR-220), sometimes a name or two (Vantrel, size 42), sometimes a
sentence ("a red running shoe"). Words find codes and names no model has seen; vectors find what a sentence
means. How much each counts depends on that kind of query, so the word weight is chosen per kind, by
measurement (bench/bench_hybrid.py; the figures are in docs/search.md, "Words and vectors").

Two fusions are offered: `relative` (each ranking's scores scaled to [0, 1] over the candidates, then a
weighted sum: a strong word match counts more than a weak one) and `rrf` (reciprocal rank fusion: ranks only,
60 + rank). A query that is exactly a key of the index's id column (or holds one as a code) puts that item
first whatever the fusion says.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..indexer.errors import InvalidInputError, option

MODES = ("hybrid", "vector", "lexical")
FUSIONS = ("relative", "rrf")
DEFAULT_FUSION = "relative"  # measured against rrf by bench_hybrid (WORD_WEIGHTS below)
RRF_K = 60  # the constant of Cormack et al. (2009), which every engine offering RRF uses
# Candidates taken from each ranking (2k where k is larger). Each vector candidate's exact score is read from the
# memory-mapped vectors, which cost most of a hybrid search at 1M rows; on bench_hybrid's catalogue (MRR@10 per
# kind, defaults) depth 30 scores as 100 for identifiers, model numbers, brands, sizes and misspellings, and
# descriptive queries 0.946 against 0.952 (vectors alone: 0.935); depth 20 loses sizes (0.995).
DEPTH = 30
# The word weight per kind of query, chosen by bench/bench_hybrid.py (2,000 products, made-up brands, model
# numbers, SKUs and sizes; bench/results/hybrid.txt, docs/search.md "Words and vectors"): per kind, the weight with
# the best mean MRR@10 over its queries' kinds while its descriptive queries stay within 0.01 of vectors alone.
# code: model numbers are first 91% of the time at 0.5, 99% at 0.6, 100% from 0.7 to 0.9 (0.7: the middle of
# what scores 1.000). words (brands, sizes, a class named): 0.985-0.986 from 0.7 to 0.9 against 0.979 at 0.5, the
# descriptive ones 0.063 above vectors at every weight. sentence: 0.975 from 0.5 to 0.7, where the descriptive
# ones are 0.010, 0.010 and 0.009 below vectors (0.7 taken); 0.3, 0.4, 0.8 and 0.9 lose them more than 0.01.
# Relative fusion beats rrf for every kind (rrf at its best: code 0.941, words 0.968, sentence 0.934).
WORD_WEIGHTS = {"code": 0.7, "words": 0.8, "sentence": 0.7}
# unread: a query in a language the index's model does not read, of a catalogue written in it (query_kind): the
# texts' vectors are of words the model cannot read; the query's words, as typed, are what the shop wrote. (An
# English catalogue searched in Chinese ranks by the kind of the query, as its English twin would.) On
# bench/bench_chinese_catalog.py's 240 Chinese queries of a Chinese catalogue, relative fusion, product first:
# 54.6% at 0.5, 95.4% at 0.7, 99.6% at 0.8, 100% at 0.9 (words alone: 99.6%).
WORD_WEIGHTS["unread"] = 0.9
_CODE = re.compile(r"(?=\S*\d)(?=\S*[^\W\d_])\S+|\S*\d\S*[-_/]\S*")  # letters and digits together, or a joined number


@dataclass(frozen=True)
class WordQuery:
    """What a search asks of the words: the terms of each way the query is said (as typed or heard, then its
    translation), the text whose codes may be keys, the mode and the weight."""

    said: tuple[tuple[str, ...], ...]
    text: str | None
    mode: str
    weight: float
    fusion: str = DEFAULT_FUSION

    @property
    def terms(self) -> tuple[str, ...]:
        """Every term of every way it is said: what a hybrid search ranks by."""
        return tuple(dict.fromkeys(t for terms in self.said for t in terms))


def query_kind(text: str, terms: int, unread: bool = False) -> str:
    """unread: in a language the model does not read, as are many of the index's texts (a Chinese query of a
    Chinese catalogue on an English model); code: it holds a code (letters with digits: SHO-004, XR220); words:
    one to three terms; sentence: more."""
    if unread:
        return "unread"
    if _CODE.search(text):
        return "code"
    return "words" if terms <= 3 else "sentence"


def check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise InvalidInputError(f"unknown {option('mode')} {mode!r}; use one of {', '.join(MODES)}")


def check_word_weight(weight: float | None) -> None:
    if weight is not None and (isinstance(weight, bool) or not isinstance(weight, (int, float))
                               or not 0.0 <= weight <= 1.0):
        raise InvalidInputError(f"{option('word_weight')} must be a number from 0 (vectors alone) to 1 (words "
                                f"alone), e.g. 0.5 (got {weight!r})")


def fuse_words(vector: np.ndarray, words: np.ndarray, weight: float, method: str = DEFAULT_FUSION) -> np.ndarray:
    """One score per candidate from its vector score (nan: it has none) and its BM25 score (0: no word)."""
    vector = np.asarray(vector, np.float64)
    words = np.asarray(words, np.float64)
    if method == "rrf":
        return (1.0 - weight) * _reciprocal_ranks(vector) + weight * _reciprocal_ranks(np.where(words > 0, words, np.nan))
    have = ~np.isnan(vector)
    scaled = np.zeros(len(vector))
    if have.any():
        low, high = vector[have].min(), vector[have].max()
        scaled[have] = (vector[have] - low) / (high - low) if high > low else 1.0
    top = words.max() if len(words) else 0.0
    return (1.0 - weight) * scaled + weight * (words / top if top > 0 else words)


def _reciprocal_ranks(scores: np.ndarray) -> np.ndarray:
    """1 / (RRF_K + rank) by score, best rank 1; 0 where there is no score (nan)."""
    have = ~np.isnan(scores)
    ranks = np.zeros(len(scores))
    order = np.argsort(-scores[have], kind="stable")
    ranks[np.flatnonzero(have)[order]] = np.arange(1, have.sum() + 1)
    return np.where(have, 1.0 / (RRF_K + ranks), 0.0)
