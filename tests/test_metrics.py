"""Metric code on hand-made cases with known answers, ties and short classes included."""
from __future__ import annotations

import numpy as np
import pytest

from xmodal.search.metrics import (ann_recall_at_k, average_precision, hit_at_k, precision_at_k, rank_relevance,
                            recall_at_k)


def test_ranking_orders_by_score_and_breaks_ties_against_relevant():
    scores = np.array([[0.9, 0.5, 0.5, 0.1]])
    relevant = np.array([[False, True, False, False]])
    # candidates 1 and 2 tie: the irrelevant one (2) goes first.
    assert rank_relevance(scores, relevant).tolist() == [[False, False, True, False]]


def test_constant_scores_earn_nothing_from_ties():
    ranked = rank_relevance(np.zeros((1, 5)), np.array([[True, False, False, False, False]]))
    assert hit_at_k(ranked, 4).tolist() == [0.0]
    assert hit_at_k(ranked, 5).tolist() == [1.0]


def test_precision_recall_and_ap_by_hand():
    # Ranked relevance: R N R N N  (2 relevant items of 5)
    ranked = rank_relevance(np.array([[5, 4, 3, 2, 1]]), np.array([[1, 0, 1, 0, 0]], bool))
    assert precision_at_k(ranked, 1).tolist() == [1.0]
    assert precision_at_k(ranked, 3).tolist() == [pytest.approx(2 / 3)]
    assert recall_at_k(ranked, 1).tolist() == [0.5]
    assert recall_at_k(ranked, 3).tolist() == [1.0]
    assert average_precision(ranked).tolist() == [pytest.approx((1 / 1 + 2 / 3) / 2)]


def test_class_with_fewer_items_than_k():
    # One relevant item, found first, k=10 over 4 candidates.
    ranked = rank_relevance(np.array([[0.9, 0.2, 0.1, 0.0]]), np.array([[1, 0, 0, 0]], bool))
    assert precision_at_k(ranked, 10).tolist() == [0.1]
    assert recall_at_k(ranked, 10).tolist() == [1.0]
    assert average_precision(ranked).tolist() == [1.0]


def test_several_queries_at_once_and_no_relevant_items():
    scores = np.array([[0.1, 0.9], [0.3, 0.2]])
    relevant = np.array([[True, False], [False, False]])
    ranked = rank_relevance(scores, relevant)
    assert hit_at_k(ranked, 1).tolist() == [0.0, 0.0]
    assert recall_at_k(ranked, 2)[0] == 1.0 and np.isnan(recall_at_k(ranked, 2)[1])
    assert average_precision(ranked)[0] == 0.5 and np.isnan(average_precision(ranked)[1])


def test_ann_recall_is_tie_aware():
    exact = np.array([[0.9, 0.8, 0.7], [0.5, 0.5, 0.5]])
    approx = [np.array([0.9, 0.8, 0.1]), np.array([0.5, 0.5, 0.5])]  # 2nd: other ids, equal scores
    assert ann_recall_at_k(approx, exact, 3) == pytest.approx((2 / 3 + 1) / 2)
    assert ann_recall_at_k(approx, exact, 1) == pytest.approx(1.0)
    assert ann_recall_at_k([np.array([0.2])], np.array([[0.9]]), 1) == 0.0
