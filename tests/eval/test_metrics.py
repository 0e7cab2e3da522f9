"""Metrics and bootstrap statistics: hand-computed cases, and scikit-learn as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    brier_score_loss,
    label_ranking_average_precision_score,
    ndcg_score,
    roc_auc_score,
)
from sklearn.metrics import log_loss as sk_log_loss

from promptrec import metrics as M
from promptrec.eval.rankers import top_items, uncalibrated_probabilities
from promptrec.stats import bootstrap_means, mean_ci, paired_difference

# ------------------------------------------------------------------ ranking, by hand


def test_single_target_by_hand():
    ranked = ["a", "b", "c", "d"]
    assert M.ndcg_at_k(ranked, "c", 3) == pytest.approx(1 / math.log2(4))  # 0.5
    assert M.ndcg_at_k(ranked, "c", 2) == 0.0
    assert M.ndcg_at_k(ranked, "a", 10) == 1.0
    assert M.recall_at_k(ranked, "c", 3) == 1.0
    assert M.recall_at_k(ranked, "c", 2) == 0.0
    assert M.hit_rate_at_k(ranked, "c", 3) == 1.0
    assert M.precision_at_k(ranked, "c", 3) == pytest.approx(1 / 3)
    assert M.f1_at_k(ranked, "c", 3) == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))  # 0.5
    assert M.reciprocal_rank(ranked, "c") == pytest.approx(1 / 3)
    assert M.reciprocal_rank(ranked, "c", k=2) == 0.0
    assert M.reciprocal_rank(ranked, "zzz") == 0.0


def test_several_relevant_by_hand():
    ranked = ["a", "b", "c", "d", "e"]
    relevant = {"a", "d", "q"}
    dcg = 1 / math.log2(2) + 1 / math.log2(5)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert M.ndcg_at_k(ranked, relevant, 5) == pytest.approx(dcg / idcg)
    assert M.recall_at_k(ranked, relevant, 5) == pytest.approx(2 / 3)
    assert M.precision_at_k(ranked, relevant, 5) == pytest.approx(2 / 5)
    assert M.f1_at_k(ranked, relevant, 5) == pytest.approx(2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3))
    # k = 2: one relevant item ideal-able... the ideal list holds min(|rel|, k) = 2 relevant items
    assert M.ndcg_at_k(ranked, relevant, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_repeats_short_lists_and_empty_relevant():
    # a repeated target counts once, at its first position
    assert M.precision_at_k(["c", "c", "x"], "c", 3) == pytest.approx(1 / 3)
    assert M.ndcg_at_k(["c", "c", "x"], "c", 3) == 1.0
    assert M.recall_at_k(["x", "c", "c"], {"c", "y"}, 3) == 0.5
    # a short list is padded with misses; precision divides by k
    assert M.precision_at_k(["a"], "a", 10) == pytest.approx(0.1)
    assert M.ndcg_at_k([], "a", 10) == 0.0
    assert M.recall_at_k(["a"], set(), 5) == 0.0
    with pytest.raises(ValueError):
        M.ndcg_at_k(["a"], "a", 0)


# ------------------------------------------------------------------ ranking, against scikit-learn


@pytest.mark.parametrize("seed", range(5))
def test_ndcg_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 40
    y = (rng.random(n) < 0.15).astype(int)
    y[rng.integers(n)] = 1  # at least one relevant item
    scores = rng.permutation(n).astype(float)  # no ties: one ranking
    items = [f"i{j}" for j in range(n)]
    ranked = [items[j] for j in np.argsort(-scores)]
    relevant = {items[j] for j in np.flatnonzero(y)}
    for k in (1, 5, 10, 40):
        assert M.ndcg_at_k(ranked, relevant, k) == pytest.approx(ndcg_score([y], [scores], k=k))


@pytest.mark.parametrize("seed", range(3))
def test_mrr_matches_sklearn_with_one_relevant_item(seed):
    rng = np.random.default_rng(seed)
    n, users = 30, 25
    y = np.zeros((users, n), dtype=int)
    y[np.arange(users), rng.integers(0, n, users)] = 1
    scores = np.stack([rng.permutation(n) for _ in range(users)]).astype(float)
    items = [f"i{j}" for j in range(n)]
    rr = [
        M.reciprocal_rank([items[j] for j in np.argsort(-scores[u])], items[int(np.flatnonzero(y[u])[0])])
        for u in range(users)
    ]
    assert np.mean(rr) == pytest.approx(label_ranking_average_precision_score(y, scores))


# ------------------------------------------------------------------ probabilities


def test_auc_logloss_brier_match_sklearn():
    rng = np.random.default_rng(7)
    y = (rng.random(500) < 0.2).astype(int)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1).round(2)  # rounded: many ties
    assert M.roc_auc(y, p) == pytest.approx(roc_auc_score(y, p))
    assert M.log_loss(y, p) == pytest.approx(sk_log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    assert M.brier_score(y, p) == pytest.approx(brier_score_loss(y, p))


def test_probability_metrics_by_hand():
    y = [0, 1, 1, 0]
    p = [0.1, 0.9, 0.8, 0.3]
    assert M.roc_auc(y, p) == 1.0
    assert M.roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert math.isnan(M.roc_auc([1, 1], [0.2, 0.3]))
    assert M.brier_score(y, p) == pytest.approx((0.01 + 0.01 + 0.04 + 0.09) / 4)
    assert M.log_loss([1], [0.5]) == pytest.approx(math.log(2))
    # 2 bins: [0, .5) holds .1, .3 (mean .2, observed 0); [.5, 1] holds .9, .8 (mean .85, observed 1)
    assert M.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.2 + 0.5 * 0.15)
    assert M.expected_calibration_error([1, 0], [1.0, 0.0], n_bins=10) == 0.0
    with pytest.raises(ValueError):
        M.brier_score([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        M.expected_calibration_error([0], [1.5])


@pytest.mark.parametrize("n_bins", [5, 10])
def test_reliability_curve_matches_sklearn(n_bins):
    rng = np.random.default_rng(3)
    p = rng.random(300)
    p[:20] = np.linspace(0, 1, 20)  # include the bin edges
    y = (rng.random(300) < p).astype(int)
    curve = M.reliability_curve(y, p, n_bins)
    counts = np.array(curve["count"])
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
    np.testing.assert_allclose(np.array(curve["observed"])[counts > 0], prob_true)
    np.testing.assert_allclose(np.array(curve["mean_predicted"])[counts > 0], prob_pred)
    assert counts.sum() == 300
    # ECE is the count-weighted gap of the same bins
    nonempty = counts > 0
    gap = np.abs(np.array(curve["observed"]) - np.array(curve["mean_predicted"]))[nonempty]
    assert M.expected_calibration_error(y, p, n_bins) == pytest.approx((gap * counts[nonempty]).sum() / 300)


def test_uncalibrated_probabilities_per_strategy():
    letters = uncalibrated_probabilities(np.log([0.5, 0.3, 0.2]), "letters")
    np.testing.assert_allclose(letters, [0.5, 0.3, 0.2])
    yesno = uncalibrated_probabilities([0.0, math.log(3)], "yesno")  # log-odds
    np.testing.assert_allclose(yesno, [0.5, 0.75])
    assert uncalibrated_probabilities([1.0, 2.0, 3.0], "likelihood").sum() == pytest.approx(1.0)


# ------------------------------------------------------------------ health, cost, top-k


def test_list_health_and_latency():
    health = M.list_health(["a", "b", "a", "z", "h"], allowed={"a", "b", "h"}, history={"h"})
    assert health == {"invented": 1, "repeated": 1, "history": 1}
    lat = M.latency_summary([0.1] * 19 + [2.0])
    assert lat["latency_p50_s"] == pytest.approx(0.1)
    assert lat["latency_p95_s"] == pytest.approx(np.percentile([0.1] * 19 + [2.0], 95))
    assert lat["users_per_s"] == pytest.approx(20 / 3.9)


def test_top_items_excludes_history_and_breaks_ties_by_position():
    ids = ["1", "2", "3", "4", "5"]
    scores = np.array([0.5, 0.9, 0.5, 0.9, 0.1])
    assert top_items(scores, [], 3, ids) == ["2", "4", "1"]
    assert top_items(scores, [1], 3, ids) == ["4", "1", "3"]
    assert top_items(scores, [0, 1, 2, 3, 4], 3, ids) == []


# ------------------------------------------------------------------ bootstrap


def test_bootstrap_is_seeded_and_vectorised():
    rng = np.random.default_rng(0)
    v = rng.random(200)
    a = bootstrap_means(v, 300, seed=1)
    np.testing.assert_array_equal(a, bootstrap_means(v, 300, seed=1))
    assert not np.array_equal(a, bootstrap_means(v, 300, seed=2))
    both = bootstrap_means(np.stack([v, 2 * v], axis=1), 300, seed=1)  # same draws per column
    np.testing.assert_allclose(both[:, 0], a)
    np.testing.assert_allclose(both[:, 1], 2 * a)
    ci = mean_ci(v, 1000, 0.95, seed=0)
    assert ci.low < v.mean() < ci.high and ci.n == 200
    # the interval shrinks like 1/sqrt(n): the standard error of a mean of U(0,1)
    assert ci.high - ci.low == pytest.approx(2 * 1.96 * math.sqrt(1 / 12 / 200), rel=0.25)


def test_paired_difference():
    rng = np.random.default_rng(4)
    a = rng.random(300)
    same = paired_difference(a, a, 500, seed=0)
    assert same.diff == 0 and same.low == 0 and same.high == 0 and same.p_value == 1.0
    shifted = paired_difference(a, a + 0.1, 500, seed=0)
    assert shifted.diff == pytest.approx(0.1) and shifted.low == pytest.approx(0.1)
    # a permutation test counts the observed split too: the smallest two-sided p is 2 / (500 + 1)
    assert shifted.p_value == pytest.approx(2 / 501)
    # exact for few users: 2^4 = 16 swaps, of which only all-unswapped and all-swapped are as extreme
    assert paired_difference([0.0] * 4, [1.0] * 4, 1000, seed=0).p_value == pytest.approx(2 / 16)
    noisy = paired_difference(a, a + rng.normal(0.0, 0.5, 300), 1000, seed=0)
    assert noisy.low < noisy.diff < noisy.high and noisy.p_value > 0.01
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])
