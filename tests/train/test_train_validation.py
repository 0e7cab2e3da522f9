"""The train wing's one validation evaluator, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from promptrec.train.validation import score_lists, score_users


def test_scores_are_means_over_users_of_one_held_out_item():
    score = score_lists([(["a", "b", "c"], "a"), (["a", "b", "c"], "c"), (["x"], "y")])
    assert score.users == 3
    assert score.ndcg10 == pytest.approx((1.0 + 1 / math.log2(4) + 0.0) / 3)
    assert score.recall10 == score.recall50 == pytest.approx(2 / 3)


def test_score_users_pairs_each_list_with_its_users_target():
    assert score_users({"u1": ["a"], "u2": ["b"]}, {"u1": "a", "u2": "a", "u3": "b"}).ndcg10 == 0.5
    assert score_lists([]).users == 0 and score_lists([]).ndcg10 == 0.0
