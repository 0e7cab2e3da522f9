"""What eval measures is what `recommend()` serves: the LLM row of an eval run and `recommend()`
on the same index, history and setup give the same list, uncalibrated and calibrated. Real data
(the smoke suite's MovieLens-100K slice), real Chroma, the real SmolLM2 model."""

from __future__ import annotations


import numpy as np
import pytest

from promptrec import Recommender
from promptrec.config import RankerSettings
from promptrec.eval import LLMRanker, load_suite, prepare_data
from promptrec.eval.runner import suite_settings
from promptrec.eval.suite import named_suites
from promptrec.ranker.factory import make_backend

pytestmark = pytest.mark.integration

SMOKE = named_suites()["smoke"]
N = 10


@pytest.fixture(scope="module")
def setup(asset_settings, tmp_path_factory):
    """The eval's LLM ranker (prepared on the smoke data) and a `Recommender` over the same test
    index, configured on its own with the same model, template and options."""
    suite = load_suite(SMOKE)
    settings = suite_settings(suite, asset_settings.model_copy(update={"index_dir": tmp_path_factory.mktemp("index")}))
    data = prepare_data(suite, settings)
    backend = make_backend(settings)
    ranker = LLMRanker("letters", settings.generator, "transformers", n_candidates=N, calibrate=True,
                       backend_factory=lambda model, name: backend, permutations=2, history_items=5)
    ranker.prepare(data)
    base = data.recommender("test")
    served = Recommender(base.items, base.histories, base.index, base.settings.model_copy(update={
        "n_candidates": N, "ranker": RankerSettings(template="letters", permutations=2, history_items=5),
    }))
    served.use_backend(backend)
    return data, ranker, served


def _served(served: Recommender, data, users: list[str]):
    return [served.recommend(u, k=N, history=data.test_histories[u]) for u in users]


def test_eval_llm_row_equals_recommend_uncalibrated_and_calibrated(setup):
    data, ranker, served = setup
    users = data.llm_users[:2]
    pairs = [(u, data.test_histories[u]) for u in users]

    outs = ranker.rank_many(pairs, N)  # no calibration fitted yet: the raw LLM order
    for out, listed in zip(outs, _served(served, data, users), strict=True):
        assert not listed.calibrated and not listed.degraded and out.p_after is None
        assert [r.item_id for r in listed.recommendations] == out.ranked[:N]
        by_id = dict(zip(out.candidates, out.scores))
        np.testing.assert_allclose([r.llm_score for r in listed.recommendations],
                                   [by_id[r.item_id] for r in listed.recommendations], rtol=0, atol=1e-5)

    # The runner's calibration: validation answers, then the fit; recommend() serves it once saved.
    ranker.fit(ranker.validation_records(
        [(u, data.validation_histories[u], data.validation_targets[u]) for u in data.calibration_users]
    ))
    assert ranker.calibrator is not None, ranker.calibration_error
    served.save_calibration(ranker.calibrator)
    outs = ranker.rank_many(pairs, N)
    for out, listed in zip(outs, _served(served, data, users), strict=True):
        assert listed.calibrated and out.p_after is not None
        assert [r.item_id for r in listed.recommendations] == out.ranked[:N]
        by_id = dict(zip(out.candidates, out.p_after))
        np.testing.assert_allclose([r.probability for r in listed.recommendations],
                                   [by_id[r.item_id] for r in listed.recommendations], rtol=0, atol=1e-6)
    # the calibrated order is not the raw one for every user, or this test could not tell them apart
    assert any(out.ranked != out.ranked_raw for out in outs)


def test_retrieval_mode_serves_what_its_eval_row_measures_without_the_llm(setup):
    """ranker.mode = "retrieval": recommend() never loads a generator; uncalibrated it keeps the
    retrieval order, calibrated it equals the eval's calibrated-retrieval row, probabilities too."""
    from promptrec.eval.rankers import CalibratedRetrievalRanker
    from promptrec.errors import IndexMismatchError

    data, _, served = setup
    base = data.recommender("test")
    ranker_settings = base.settings.ranker.model_copy(update={"mode": "retrieval"})
    mode = Recommender(base.items, base.histories, base.index,
                       base.settings.model_copy(update={"n_candidates": N, "ranker": ranker_settings}))
    users = data.users[:5]
    plain = [mode.recommend(u, k=N, history=data.test_histories[u]) for u in users]
    for listed, user in zip(plain, users):
        found = mode.candidates(user, N, history=data.test_histories[user])
        assert listed.mode == "retrieval" and not listed.calibrated and listed.model_id == ""
        assert [r.item_id for r in listed.recommendations] == [c.item_id for c in found.candidates]
        assert all(r.llm_score is None for r in listed.recommendations)

    row = CalibratedRetrievalRanker(N)
    row.prepare(data)
    mode.save_retrieval_calibration(row.calibrator)
    moved = 0
    for user in users:
        out = row.rank(user, data.test_histories[user], N)
        listed = mode.recommend(user, k=N, history=data.test_histories[user])
        assert listed.calibrated and [r.item_id for r in listed.recommendations] == out.ranked[:N]
        by_id = dict(zip(out.candidates, out.p_after))
        np.testing.assert_allclose([r.probability for r in listed.recommendations],
                                   [by_id[r.item_id] for r in listed.recommendations], rtol=0, atol=1e-9)
        moved += out.ranked != out.candidates
    assert moved, "the calibration should reorder some list, or this test could not tell it from retrieval"
    assert mode._backend is None  # no generator was loaded
    with pytest.raises(IndexMismatchError, match="n_candidates"):  # fitted for 10 candidates
        mode.recommend(users[0], k=3, n_candidates=N + 2)


def test_auto_mode_decides_on_validation_users_and_serves_the_decision(setup):
    """`decide_mode` fits on one half of the calibration users and judges on the other; recommend()
    in auto mode serves what the stored decision says, with its reason; no decision serves the LLM
    and says so; a decision for another setup is refused."""
    from promptrec.errors import IndexMismatchError

    data, _, served = setup
    settings = served.settings.model_copy(update={"ranker": served.settings.ranker.model_copy(update={"mode": "auto"})})

    def auto(part: str) -> Recommender:
        base = data.recommender(part)
        rec = Recommender(base.items, base.histories, base.index, settings.model_copy(update={"index_dir": base.settings.index_dir}))
        rec.use_backend(served.backend)
        return rec

    validation, test = auto("validation"), auto("test")
    user = data.llm_users[0]
    undecided = test.recommend(user, k=3, history=data.test_histories[user])
    assert undecided.mode == "llm" and "no ranker.mode = \"auto\" decision yet" in undecided.mode_reason

    records = validation.calibration_records(validation.calibration_targets(data.validation_targets, 12))
    decision = validation.decide_mode(records)
    assert decision.fit_users + decision.judged_users == len(records) and decision.judged_users >= 5
    from promptrec.ranker.mode import ONE_ORDER, _first_order

    several = (test.reranker().strategy.permutations or 1) > 1
    assert set(decision.ndcg) == {"retrieval order", "calibrated retrieval", "calibrated LLM"} | (
        {ONE_ORDER} if several else set())
    assert all(r.first_order_scores is not None for r in records if r.scores is not None) == several
    d = decision.llm_minus_retrieval
    assert d["low"] <= d["diff"] <= d["high"] and decision.mode == "retrieval"  # 6 judged users cannot show a gain
    assert "6 judged validation users are too few" in decision.reason

    try:
        for mode in ("retrieval", "llm"):  # each branch of a stored decision is served as it says
            test.save_mode_decision(decision.model_copy(update={"mode": mode}))
            listed = test.recommend(user, k=3, history=data.test_histories[user])
            assert listed.mode == mode
            assert listed.mode_reason == decision.model_copy(update={"mode": mode}).reason
            assert (listed.model_id == "") == (mode == "retrieval")
        if several:  # a decision for 1 candidate order serves the LLM over 1 order, calibrated for it
            from promptrec.pipeline import rank_candidates
            from promptrec.ranker.calibration import fit_calibration

            key = test.calibration_key(test.reranker(orders=1))
            one = decision.model_copy(update={"mode": "llm", "orders": 1, "judged_users": 60, "steps": [
                {"option": ONE_ORDER, "against": "calibrated retrieval", "diff": 0.1, "low": 0.05, "high": 0.2}],
                "calibration": fit_calibration([_first_order(r) for r in records], key)})
            test.save_mode_decision(one)
            listed = test.recommend(user, k=3, history=data.test_histories[user])
            assert listed.mode == "llm" and listed.mode_reason.startswith("LLM rerank on, over 1 candidate order")
            found, result = test.rerank(user, history=data.test_histories[user], orders=1)
            assert result.n_prompts == 1
            expected = rank_candidates(found, result, one.calibration).recommendation_list(3, 0.0)
            assert [r.item_id for r in listed.recommendations] == [r.item_id for r in expected.recommendations]
            assert [r.probability for r in listed.recommendations] == [r.probability for r in expected.recommendations]
        with pytest.raises(IndexMismatchError, match=r"decision .* was made for another setup \(n_candidates"):
            test.recommend(user, k=3, history=data.test_histories[user], n_candidates=N + 2)
    finally:  # the module's other tests serve the LLM row
        test.mode_decision_file(test.reranker()).unlink(missing_ok=True)
