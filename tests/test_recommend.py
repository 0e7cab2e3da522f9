"""recommend() through the public API: the real SmolLM2 model, a real Chroma index on a
MovieLens slice, a real calibration fitted on held-out items."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from promptrec import Recommender, RecommendationList
from promptrec.config import RankerSettings
from promptrec.data.preprocess import temporal_split
from promptrec.ranker.calibration import CalibrationMismatchError
from promptrec.ranker.prompts import default_prompts_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def split(ml_slice):
    return temporal_split(ml_slice[1])


@pytest.fixture(scope="module")
def rec(ml_slice, split, asset_settings, tmp_path_factory):
    settings = asset_settings.model_copy(
        update={
            "index_dir": tmp_path_factory.mktemp("rec-index"),
            "n_candidates": 10,
            "ranker": RankerSettings(permutations=1, history_items=5),
        }
    )
    return Recommender.from_interactions(ml_slice[0], split.history_for_test(), settings, namespace="rec")


def test_recommend_returns_typed_reranked_list(rec):
    result = rec.recommend("1", k=5)
    assert isinstance(result, RecommendationList)
    assert len(result.recommendations) == 5 and not result.degraded
    assert result.strategy == "letters" and result.model_id == "smollm2-135m-instruct"
    assert len(result.template_hash) >= 8 and result.prompt_tokens > 0
    candidates = {c.item_id: c for c in rec.candidates("1", 10).candidates}
    for r in result.recommendations:
        assert r.item_id in candidates and r.retrieval_rank == candidates[r.item_id].rank
        assert r.llm_score is not None
    scores = [r.llm_score for r in result.recommendations]
    assert scores == sorted(scores, reverse=True)  # no calibration yet: LLM order
    assert not result.calibrated and all(r.probability is None for r in result.recommendations)


@pytest.mark.parametrize("template", ["likelihood", "yesno"])
def test_other_strategies(rec, template):
    result = rec.recommend("2", k=3, template=template)
    assert result.strategy == template and not result.degraded
    assert len(result.recommendations) == 3


def test_llm_timeout_degrades_to_retrieval_order(rec):
    slow = Recommender(
        rec.items, rec.histories, rec.index,
        rec.settings.model_copy(update={"ranker": RankerSettings(timeout_s=0.001)}),
    )
    slow.use_backend(rec.backend)
    result = slow.recommend("1", k=5)
    assert result.degraded and "longer than" in result.degraded_reason
    assert [r.retrieval_rank for r in result.recommendations] == [1, 2, 3, 4, 5]
    assert all(r.llm_score is None for r in result.recommendations)


def test_calibration_fit_save_use_and_refuse_stale(rec, split, tmp_path):
    targets = split.test_items()
    # Users whose held-out item was retrieved give the positives; others only negatives.
    hits = [u for u in targets if targets[u] in {c.item_id for c in rec.candidates(u, 10).candidates}]
    misses = [u for u in targets if u not in hits]
    assert hits, "retrieval found no held-out item on the slice"
    chosen = {u: targets[u] for u in hits[:4] + misses[:4]}
    calibrator = rec.fit_calibration(chosen)
    assert calibrator.fit.users == len(chosen) and calibrator.key.strategy == "letters"
    path = rec.save_calibration(calibrator)
    assert path.is_file() and path.parent.parent == rec.settings.resolved_index_dir()
    result = rec.recommend("3", k=5)
    assert result.calibrated
    probs = [r.probability for r in result.recommendations]
    assert all(0.0 < p < 1.0 for p in probs) and probs == sorted(probs, reverse=True)

    # The same template name with other text: the saved calibration is stale and refused.
    edited = tmp_path / "letters.j2"
    source = (default_prompts_dir() / "rerank" / "letters.j2").read_text()
    edited.write_text(source.replace("Answer with the letter only.", "Answer with one letter."))
    stale = Recommender(rec.items, rec.histories, rec.index, rec.settings)
    stale.use_backend(rec.backend)
    assert stale.calibration_file(stale.reranker(str(edited))) == path  # keyed by template name
    with pytest.raises(CalibrationMismatchError, match="template_hash.*promptrec calibrate"):
        stale.recommend("3", k=5, template=str(edited))
    path.unlink()


def test_threads_give_the_same_answers_as_sequential_calls(rec):
    users = ["4", "5", "6"]
    sequential = [rec.recommend(u, k=5).recommendations for u in users]
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(lambda u: rec.recommend(u, k=5).recommendations, users))
    assert concurrent == sequential
