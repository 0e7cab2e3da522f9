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


def test_fused_rank_of_agrees_with_the_fusion_for_every_weight_row():
    """The grid's vectorised ranks equal the target's place in `reciprocal_rank_fusion` of the
    sources with weight > 0, ties (equal weights, equal ranks) included."""
    import random

    import numpy as np

    from promptrec.retrieval.fusion import fused_rank_of

    rng = random.Random(0)
    checked = 0
    for _ in range(400):
        sources = [f"s{j}" for j in range(rng.randint(1, 4))]
        universe = [f"i{n}" for n in range(rng.randint(1, 10))]
        ranked = {s: rng.sample(universe, rng.randint(0, len(universe))) for s in sources}
        rows = np.array([[rng.choice([0.0, 0.1, 0.25, 0.5, 1.0]) for _ in sources] for _ in range(5)])
        target, k = rng.choice(universe), rng.choice([0.0, 1.0, 60.0])
        for row, got in zip(rows, fused_rank_of(ranked, target, rows, k)):
            active = {s: w for s, w in zip(sources, row) if w > 0}
            fused = [i for i, _ in reciprocal_rank_fusion({s: ranked[s] for s in active}, active, k)]
            assert got == (fused.index(target) if target in fused else np.inf)
            checked += 1
    assert checked == 2000
    with pytest.raises(ValueError, match="columns"):
        fused_rank_of({"a": ["x"]}, "x", np.ones((1, 2)))
    with pytest.raises(ValueError, match="twice"):
        fused_rank_of({"a": ["x", "x"]}, "x", np.ones((1, 1)))
