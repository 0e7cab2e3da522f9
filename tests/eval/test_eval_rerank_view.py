"""The rerank view and the paired permutation test on small inputs checked by hand
(microsoft/recommenders-style: the expected numbers are written out, not recomputed)."""

from __future__ import annotations

import math

import pytest

from promptrec.eval.rerank_view import rerank_view
from promptrec.stats import paired_difference, paired_permutation_p

L3, L4 = math.log2(3), math.log2(4)  # NDCG of a single target at rank 2 is 1/log2(3), at rank 3 1/log2(4)

# Four users, four candidates each (base = retrieval order), one target each:
#   a: target at rank 3 in the base order, 1 after the rerank     NDCG .5 -> 1      RR 1/3 -> 1
#   b: rank 1 -> rank 2                                            NDCG 1 -> 1/L3    RR 1 -> 1/2
#   c: rank 2 -> rank 2                                            NDCG 1/L3 both    RR 1/2 both
#   d: target not among the candidates                             0 in both orders
ROWS = [
    {"user_id": "a", "target": "x", "candidates": ["p", "q", "x", "r"], "ranked": ["x", "p", "q", "r"],
     "ranked_raw": ["p", "q", "x", "r"]},
    {"user_id": "b", "target": "y", "candidates": ["y", "p", "q", "r"], "ranked": ["p", "y", "q", "r"],
     "ranked_raw": ["y", "p", "q", "r"]},
    {"user_id": "c", "target": "z", "candidates": ["p", "z", "q", "r"], "ranked": ["q", "z", "p", "r"],
     "ranked_raw": ["p", "z", "q", "r"]},
    {"user_id": "d", "target": "w", "candidates": ["p", "q", "r", "s"], "ranked": ["s", "r", "q", "p"],
     "ranked_raw": ["p", "q", "r", "s"]},
]


def test_rerank_view_numbers_by_hand():
    view = rerank_view(ROWS, ["ndcg@10", "mrr@10"], resamples=500, seed=0)
    assert (view.users, view.hits, view.n_candidates, view.candidate_recall) == (4, 3, 4, 0.75)
    ndcg, mrr = view.metrics
    assert ndcg.metric == "ndcg@10" and mrr.metric == "mrr@10"
    # conditional: the three users with the target among the candidates
    assert ndcg.base == pytest.approx((1 / L4 + 1 + 1 / L3) / 3)
    assert ndcg.reranked == pytest.approx((1 + 1 / L3 + 1 / L3) / 3)
    assert ndcg.diff == pytest.approx((1 - 1 / L4 + 1 / L3 - 1) / 3)
    assert mrr.base == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert mrr.reranked == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)
    # every user: the miss adds a zero to both sides, so overall = candidate recall x conditional
    for m in (ndcg, mrr):
        assert m.overall_base == pytest.approx(0.75 * m.base)
        assert m.overall_reranked == pytest.approx(0.75 * m.reranked)
        assert m.low <= m.diff <= m.high and m.overall_low <= m.overall_high
        assert m.detectable == pytest.approx((m.high - m.low) / 2)
        assert m.overall_detectable == pytest.approx((m.overall_high - m.overall_low) / 2)
    # one user gains, one loses: exact permutation test over the 2**2 sign flips of the two
    # non-zero differences: every flip is at least as extreme, so p = 1
    assert ndcg.p_value == 1.0 and mrr.p_value == 1.0


def test_rerank_view_of_the_llm_order_and_of_an_unchanged_order():
    view = rerank_view(ROWS, ["ndcg@10"], field="ranked_raw", resamples=200)
    (m,) = view.metrics
    assert m.base == m.reranked and m.diff == 0 and m.low == m.high == 0 and m.detectable == 0 and m.p_value == 1.0


def test_rerank_view_with_no_hit_and_bad_rows():
    miss = [ROWS[3]]
    (m,) = rerank_view(miss, ["ndcg@10"], resamples=50).metrics
    assert math.isnan(m.base) and m.overall_base == 0 and m.overall_reranked == 0
    with pytest.raises(ValueError, match="lack 'candidates'"):
        rerank_view([{"user_id": "u", "target": "x", "ranked": ["x"]}])
    with pytest.raises(ValueError, match="no rows"):
        rerank_view([])


def test_paired_permutation_test_exact_by_hand():
    # all three users +1: of the 2**3 sign flips only all-plus and all-minus are as extreme
    assert paired_permutation_p([0, 0, 0], [1, 1, 1]) == pytest.approx(2 / 8)
    # differences +1 +1 +1 -1: sums 4, 2 (x4), 0 (x6), -2 (x4), -4 over 16 flips; |sum| >= 2 in 10
    assert paired_permutation_p([0, 0, 0, 1], [1, 1, 1, 0]) == pytest.approx(10 / 16)
    # equal users change nothing; no difference at all gives 1
    assert paired_permutation_p([0, 0, 0, 5, 5], [1, 1, 1, 5, 5]) == pytest.approx(2 / 8)
    assert paired_permutation_p([1, 2], [1, 2]) == 1.0
    assert paired_permutation_p([1, 2], [1, 3]) == 1.0  # one differing user: both flips as extreme
    # the paired difference reports this p, and B - A with its interval
    d = paired_difference([0, 0, 0, 1], [1, 1, 1, 0], 400, seed=0)
    assert d.p_value == pytest.approx(10 / 16) and d.diff == pytest.approx(0.5)
    assert d.low <= 0.5 <= d.high and d.half_width == pytest.approx((d.high - d.low) / 2)
    with pytest.raises(ValueError, match="differ in length"):
        paired_permutation_p([1], [1, 2])
