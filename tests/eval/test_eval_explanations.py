"""Explanations in an evaluation run: the ``[explain]`` section of a suite on the smoke slice
of MovieLens-100K, real Chroma and the real SmolLM2 explainer; stopped and continued; the
faithfulness figures checked against the rows they summarise."""

from __future__ import annotations

import json

import pytest

from promptrec.eval import parse_suite, run_suite
from promptrec.eval.explanations import EXPLANATIONS, explained_users, served_recommender
from promptrec.eval.rankers import prepare_data
from promptrec.eval.runner import suite_settings
from promptrec.stats import paired_difference

pytestmark = pytest.mark.integration

SUITE = """
name = "explain-smoke"
seed = 0
[data]
dataset = "movielens-100k"
log_users = 40
k_core = [5, 5]
users = 30
[protocol]
ks = [10]
n_candidates = 10
bootstrap = 200
[calibration]
users = 12
[baselines]
rankers = ["popularity"]
[explain]
users = 4
trials = 2
"""


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def explained(asset_settings, tmp_path_factory):
    settings = asset_settings.model_copy(update={"index_dir": tmp_path_factory.mktemp("explain-index")})
    suite = parse_suite(SUITE, "explain-smoke")
    run_dir = tmp_path_factory.mktemp("runs") / "explain"
    seen: list[str] = []

    def stop_at_second_explanation(ranker: str, user: str) -> None:
        if ranker == "explain":
            seen.append(user)
            if len(seen) == 2:
                raise Stop

    with pytest.raises(Stop):
        run_suite(suite, run_dir, settings=settings, after_user=stop_at_second_explanation)
    rows_before = [json.loads(line) for line in open(run_dir / EXPLANATIONS)]
    result = run_suite(suite, run_dir, settings=settings)
    return suite, settings, run_dir, rows_before, result


def test_a_stopped_run_continues_its_explanations(explained):
    suite, settings, run_dir, before, result = explained
    rows = [json.loads(line) for line in open(run_dir / EXPLANATIONS)]
    assert len(before) == 2 and rows[:2] == before
    users = [r["user_id"] for r in rows]
    assert len(users) == len(set(users)) == 4 and result.complete
    data = prepare_data(suite, suite_settings(suite, settings))
    assert users == explained_users(data, suite)


def test_the_explained_item_is_the_one_recommend_serves(explained):
    suite, settings, run_dir, _, _ = explained
    data = prepare_data(suite, suite_settings(suite, settings))
    rec = served_recommender(data, suite)
    assert rec.settings.ranker.mode == "retrieval"
    for row in (json.loads(line) for line in open(run_dir / EXPLANATIONS)):
        listed = rec.recommend(row["user_id"], k=1)
        assert row["item_id"] == listed.recommendations[0].item_id
        assert listed.calibrated  # the suite calibrates: faithfulness in probabilities
        assert row["grounding"] in ("ok", "trimmed", "regenerated", "fallback")
        assert row["text"] and row["model"] == "smollm2-135m-instruct"
        f = row["faithfulness"]
        if row["cited"]:
            assert f["cited"] == row["cited"] and f["measure"] == "probability"
            assert f["cited_drop"] == pytest.approx(f["before"]["probability"] - f["without_cited"]["probability"])
            assert len(f["without_random"]) == 2
        else:
            assert f is None


def test_the_summary_and_report_carry_the_explanations(explained):
    suite, _, run_dir, _, result = explained
    s = result.summary["explanations"]
    rows = [json.loads(line) for line in open(run_dir / EXPLANATIONS)]
    assert s["n"] == 4 and sum(s["grounding"].values()) == 4
    assert s["own"] == sum(r["grounding"] != "fallback" for r in rows) / 4
    measured = [r["faithfulness"] for r in rows if r["faithfulness"] and r["faithfulness"]["random_drop"] is not None]
    f = s["faithfulness"]
    assert f["n"] == len(measured)
    if measured:
        diff = paired_difference([m["random_drop"] for m in measured], [m["cited_drop"] for m in measured],
                                 suite.protocol.bootstrap, suite.protocol.confidence, suite.seed)
        assert f["diff"] == pytest.approx(diff.diff) and f["diff_low"] == pytest.approx(diff.low)
        assert f["lowered"] == pytest.approx(sum(m["lowered"] for m in measured) / len(measured))
    page = (run_dir / "summary.md").read_text()
    assert "## Explanations" in page and rows[0]["item_id"] in page


def test_a_suite_of_explanations_alone_is_valid_and_negative_users_are_refused():
    only = parse_suite('[baselines]\nrankers = []\n[explain]\nusers = 3\n', "x")
    assert only.explain.users == 3
    from promptrec.eval.suite import SuiteError

    with pytest.raises(SuiteError, match="explain"):
        parse_suite('[explain]\nusers = -1\n', "x")
