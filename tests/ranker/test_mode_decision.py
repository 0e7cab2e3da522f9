"""The ranker.mode = "auto" rule on lists whose LLM scores carry the answer, and on lists whose
scores are noise: the LLM is served only in the first case (no model is loaded)."""

from __future__ import annotations

import numpy as np
import pytest

from promptrec.config import Settings
from promptrec.ranker.calibration import CalibrationKey, CalibrationRecord
from promptrec.ranker.mode import MIN_JUDGED, ModeDecision, decide_mode
from promptrec.retrieval.schema import Candidate, CandidateList

KEY = CalibrationKey(model_id="m", template_hash="t", encoder="e", strategy="letters", n_candidates=10)


def records(n_users: int, informative: bool, seed: int = 0) -> list[CalibrationRecord]:
    rng = np.random.default_rng(seed)
    out = []
    for user in range(n_users):
        target = int(rng.integers(0, 10))  # the held-out item sits anywhere in the retrieval order
        items = [Candidate(item_id=f"{user}-{i}", title="t", text="t", fused_score=1.0 / (i + 1), rank=i + 1,
                           source_scores={"transitions": 1.0 / (i + 1)}, source_ranks={"transitions": i + 1},
                           popularity=int(rng.integers(1, 50))) for i in range(10)]
        scores = rng.normal(size=10)
        if informative:
            scores[target] += 4.0
        out.append(CalibrationRecord(candidates=CandidateList(user_id=str(user), candidates=items, history=[]),
                                     scores=scores.tolist(), relevant_item_id=f"{user}-{target}"))
    return out


def test_the_llm_is_served_only_where_it_beats_the_calibrated_retrieval_features():
    settings = Settings()
    helps = decide_mode(records(120, informative=True), KEY, settings)
    assert helps.mode == "llm" and helps.llm_minus_retrieval["low"] > 0 and helps.judged_users == 60
    assert helps.ndcg["calibrated LLM"] > helps.ndcg["calibrated retrieval"]
    assert helps.reason.startswith("LLM rerank on: on 60 validation users it adds +")
    noise = decide_mode(records(120, informative=False), KEY, settings)
    assert noise.mode == "retrieval" and noise.llm_minus_retrieval["low"] <= 0
    assert noise.reason.startswith("LLM rerank off here") and 'ranker.mode = "llm"' in noise.reason
    few = decide_mode(records(2 * MIN_JUDGED - 2, informative=True), KEY, settings)
    assert few.mode == "retrieval" and "too few to show a gain" in few.reason


def test_a_decision_for_another_setup_is_refused(tmp_path):
    from promptrec.ranker.calibration import CalibrationMismatchError

    decision = decide_mode(records(60, informative=True), KEY, Settings())
    path = decision.save(tmp_path / "d.mode.json")
    loaded = ModeDecision.load(path)
    assert loaded == decision
    with pytest.raises(CalibrationMismatchError, match=r"decided for 'm', now 'other'.*promptrec calibrate"):
        loaded.check_key(KEY.model_copy(update={"model_id": "other"}), path)
    path.write_text("{", encoding="utf-8")
    with pytest.raises(CalibrationMismatchError, match="damaged"):
        ModeDecision.load(path)


def test_fewer_candidate_orders_are_served_when_all_of_them_add_nothing():
    """Letters over 3 orders: the records carry the first order's scores too. Where those
    already carry the answer, the ladder stops at 1 order (3 cost 3x and add nothing), with the
    calibration fitted for 1 order; where only the average over all orders carries it, all."""
    from promptrec.ranker.mode import ONE_ORDER

    key = KEY.model_copy(update={"permutations": 3})
    rng = np.random.default_rng(1)
    both = [r.model_copy(update={"first_order_scores": r.scores}) for r in records(120, informative=True)]
    one = decide_mode(both, key, Settings())
    assert one.mode == "llm" and one.orders == 1 and one.calibration.key.permutations == 1
    assert [s["option"] for s in one.steps] == [ONE_ORDER, "calibrated LLM"]
    assert one.steps[0]["low"] > 0 and one.steps[1]["against"] == ONE_ORDER and one.steps[1]["low"] <= 0
    assert one.reason.startswith("LLM rerank on, over 1 candidate order") and "not enough to pay" in one.reason
    only_all = [r.model_copy(update={"first_order_scores": rng.normal(size=10).tolist()})
                for r in records(120, informative=True)]
    full = decide_mode(only_all, key, Settings())
    assert full.mode == "llm" and full.orders is None and full.calibration is None
    assert full.steps[0]["low"] <= 0 and full.steps[1]["against"] == "calibrated retrieval"
    assert ModeDecision.model_validate_json(one.model_dump_json()) == one  # the calibration travels in the file
