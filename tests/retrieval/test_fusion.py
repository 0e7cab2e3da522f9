import pytest

from promptrec.retrieval.fusion import reciprocal_rank_fusion
from promptrec.retrieval.sources import recency_weighted_mean

import numpy as np


def test_rrf_hand_computed():
    fused = reciprocal_rank_fusion({"a": ["x", "y"], "b": ["y", "z"]}, {"a": 1.0, "b": 2.0}, k=1)
    scores = dict(fused)
    assert scores["x"] == pytest.approx(1 / 2)
    assert scores["y"] == pytest.approx(1 / 3 + 2 / 2)
    assert scores["z"] == pytest.approx(2 / 3)
    assert [i for i, _ in fused] == ["y", "z", "x"]


def test_rrf_ties_keep_first_appearance():
    fused = reciprocal_rank_fusion({"a": ["p", "q"], "b": ["q", "p"]}, k=0)
    assert [i for i, _ in fused] == ["p", "q"]


def test_rrf_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown source"):
        reciprocal_rank_fusion({"a": ["x"]}, {"b": 1.0})
    with pytest.raises(ValueError, match="twice"):
        reciprocal_rank_fusion({"a": ["x", "x"]})
    with pytest.raises(ValueError, match="negative"):
        reciprocal_rank_fusion({"a": ["x"]}, {"a": -1.0})


def test_recency_weighted_mean_favours_recent_items():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]])
    mean = recency_weighted_mean(vectors, half_life=1.0)
    assert np.linalg.norm(mean) == pytest.approx(1.0)
    assert mean[1] == pytest.approx(2 * mean[0])  # the newer item weighs twice the older
