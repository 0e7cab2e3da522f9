"""The smoke suite end to end on real data (a MovieLens-100K slice), real Chroma and the real
SmolLM2 model; resuming after interruptions; the run folder's contents; optional baselines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from promptrec.eval import RunMismatchError, load_suite, parse_suite, run_suite
from promptrec.eval.baselines import BaselineUnavailable, LightFMRanker
from promptrec.eval.rankers import prepare_data
from promptrec.eval.suite import SuiteError, named_suites
from promptrec.eval.run_folder import VALIDATION, JsonlLog
from promptrec.eval.runner import read_results

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMOKE = named_suites()["smoke"]
LLM = "llm:letters@smollm2-135m-instruct/transformers"


class Stop(Exception):
    """Raised by a hook to interrupt a run, as a kill would."""


def stop_after(n: int):
    calls = {"n": 0}

    def hook(ranker: str, user: str) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            raise Stop(f"stopped after {n} rows ({ranker}, user {user})")

    return hook


@pytest.fixture(scope="session")
def eval_settings(asset_settings, tmp_path_factory):
    return asset_settings.model_copy(update={"index_dir": tmp_path_factory.mktemp("eval-index")})


@pytest.fixture(scope="session")
def smoke_run(eval_settings, tmp_path_factory):
    return run_suite(SMOKE, tmp_path_factory.mktemp("runs") / "smoke-a", settings=eval_settings)


@pytest.fixture(scope="session")
def resumed_run(smoke_run, eval_settings, tmp_path_factory):
    """The smoke suite again, killed twice (mid-retrieval, then mid-calibration) and continued."""
    run_dir = tmp_path_factory.mktemp("runs") / "smoke-b"
    # 30 popularity rows, then 10 of retrieval's 30
    with pytest.raises(Stop):
        run_suite(SMOKE, run_dir, settings=eval_settings, after_user=stop_after(40))
    first = read_results(run_dir)
    # a kill in the middle of a write leaves half a line behind
    with open(run_dir / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"ranker": "retrieval", "user_id": "9')
    # the other 20 retrieval rows, 30 ALS rows, then 4 of the 12 calibration answers
    with pytest.raises(Stop):
        run_suite(SMOKE, run_dir, settings=eval_settings, after_user=stop_after(54))
    second = read_results(run_dir)
    validation_rows = sum(1 for _ in open(run_dir / "validation.jsonl"))
    result = run_suite(SMOKE, run_dir, settings=eval_settings)
    return result, len(first), len(second), validation_rows


def _rows_by_key(run_dir: Path) -> dict[tuple[str, str], dict]:
    rows = read_results(run_dir)
    keys = [(r["ranker"], r["user_id"]) for r in rows]
    assert len(keys) == len(set(keys)), "a user was counted twice"
    return dict(zip(keys, rows))


def test_smoke_run_end_to_end(smoke_run):
    suite = load_suite(SMOKE)
    run_dir = smoke_run.run_dir
    assert smoke_run.complete and not smoke_run.skipped
    rows = _rows_by_key(run_dir)
    per_ranker: dict[str, int] = {}
    for ranker, _ in rows:
        per_ranker[ranker] = per_ranker.get(ranker, 0) + 1
    assert per_ranker == {"popularity": 30, "retrieval": 30, "als": 30, LLM: 5}
    from promptrec.hardware import cpu_capability, resolve_dtype_name

    described = json.loads((run_dir / "manifest.json").read_text())["rankers"][LLM]
    assert described["device"] == "cpu" and described["cpu_capability"] == cpu_capability()
    assert described["dtype"] == resolve_dtype_name("auto", "cpu")  # what "auto" chose here
    # every ranker sees the same users and targets
    targets = {u: r["target"] for (name, u), r in rows.items() if name == "popularity"}
    assert all(targets[u] == r["target"] for (_, u), r in rows.items())

    for (name, _), row in rows.items():
        assert len(row["ranked"]) >= suite.protocol.list_length or name == LLM
        assert row["health_history"] == 0 and row["health_repeated"] == 0 and row["health_invented"] == 0
        assert row["latency_s"] >= 0
    llm_rows = [r for (name, _), r in rows.items() if name == LLM]
    for row in llm_rows:
        assert len(row["candidates"]) == suite.protocol.n_candidates
        assert sorted(row["ranked"]) == sorted(row["candidates"]) == sorted(row["ranked_raw"])
        assert not row["degraded"]
        assert sum(row["p_before"]) == pytest.approx(1.0)  # letters: a distribution over the list
        assert all(0 < p < 1 for p in row["p_after"])
        assert 0 < row["label_mass"] <= 1 and row["prompt_tokens"] > 0 and row["n_prompts"] == 2
        # the final order is the calibrated probability's
        p = dict(zip(row["candidates"], row["p_after"]))
        assert [p[i] for i in row["ranked"]] == sorted(p.values(), reverse=True)

    summary = json.loads((run_dir / "summary.json").read_text())  # strict JSON (no NaN)
    by_name = {r["name"]: r for r in summary["rankers"]}
    assert set(by_name) == {"popularity", "retrieval", "als", LLM, LLM + " (LLM order)"}
    for entry in summary["rankers"]:
        for metric in ("ndcg@10", "recall@10", "mrr@10", "precision@10", "f1@10", "ndcg@5"):
            ci = entry["metrics"][metric]
            assert 0 <= ci["low"] <= ci["mean"] <= ci["high"] <= 1
    llm = by_name[LLM]
    assert llm["users"] == 5 and llm["candidate_recall"] is not None
    calibration = llm["calibration"]
    assert calibration["pairs"] == 5 * suite.protocol.n_candidates
    for side in ("before", "after"):
        assert 0 <= calibration[side]["brier"] <= 1 and calibration[side]["log_loss"] > 0
        assert sum(calibration[side]["reliability"]["count"]) == calibration["pairs"]
    assert llm["cost"]["prompt_tokens_per_user"] > 0 and llm["cost"]["latency_p95_s"] >= llm["cost"]["latency_p50_s"]
    assert summary["common_users"]["users"] == 5  # the LLM ran on 5 of the 30 users
    # the rerank view: the LLM's lists against the retrieval order of the same candidates
    rerank = llm["rerank"]
    assert rerank["users"] == 5 and rerank["candidate_recall"] == pytest.approx(llm["candidate_recall"])
    ndcg = rerank["metrics"][0]
    assert ndcg["metric"] == "ndcg@10" and ndcg["overall_reranked"] == pytest.approx(llm["metrics"]["ndcg@10"]["mean"])
    retrieval = [r for (name, u), r in rows.items() if name == "retrieval" and (LLM, u) in rows]
    from promptrec.metrics import ndcg_at_k
    assert ndcg["overall_base"] == pytest.approx(np.mean([ndcg_at_k(r["ranked"], r["target"], 10) for r in retrieval]))
    assert by_name[LLM + " (LLM order)"]["rerank"]["metrics"][0]["metric"] == "ndcg@10"

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["rankers"][LLM]["template_hash"] and manifest["rankers"][LLM]["model_id"]
    assert "numpy" in manifest["packages"] and "implicit" in manifest["packages"]
    assert "fit" in manifest["calibration"][LLM]
    assert (run_dir / manifest["calibration"][LLM]["file"]).is_file()
    assert (run_dir / "suite.toml").read_text() == SMOKE.read_text()
    for name in ("summary.md", "metrics.png", "reliability.png"):
        assert (run_dir / name).stat().st_size > 0
    md = (run_dir / "summary.md").read_text()
    assert "| retrieval |" in md and "## Calibration" in md and "![reliability diagram](reliability.png)" in md
    assert "## Rerank view" in md and "tie rule: **id**" in md and "candidates: 10 retrieved" in md
    assert md.index("tie rule") < md.index("## Ranking")  # the protocol comes first
    assert manifest["protocol"]["tie_rule"] == "id" and manifest["protocol"]["n_candidates"] == 10
    # no machine paths in what a run folder reports
    for name in ("manifest.json", "summary.json", "summary.md"):
        text = (run_dir / name).read_text()
        assert str(run_dir.parent) not in text and "/root/" not in text and "/work/" not in text


def test_resumed_run_equals_uninterrupted_run(smoke_run, resumed_run):
    result, after_first, after_second, validation_rows = resumed_run
    assert (after_first, after_second, validation_rows) == (40, 90, 4)
    assert result.complete and result.written == 5
    a, b = _rows_by_key(smoke_run.run_dir), _rows_by_key(result.run_dir)
    assert a.keys() == b.keys()
    for key, row in a.items():
        other = b[key]
        for field in ("target", "ranked", "candidates", "ranked_raw", "degraded"):
            assert row.get(field) == other.get(field), (key, field)
        for field in ("scores", "p_before", "p_after"):
            if row.get(field) is not None:
                np.testing.assert_allclose(row[field], other[field], rtol=0, atol=1e-9)
    validation = [json.loads(line) for line in open(result.run_dir / "validation.jsonl")]
    assert len(validation) == len({(v["ranker"], v["user_id"]) for v in validation}) == 12
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert [s["rows_written"] for s in manifest["sessions"]] == [40, 50, 5]
    sa = {r["name"]: r["metrics"] for r in smoke_run.summary["rankers"]}
    sb = {r["name"]: r["metrics"] for r in result.summary["rankers"]}
    assert sa == sb


def test_a_run_folder_refuses_another_suite(smoke_run, eval_settings):
    other = load_suite(SMOKE).model_copy(update={"seed": 1})
    with pytest.raises(RunMismatchError, match=r"another suite \(suite\.seed: run for 0, now 1\)"):
        run_suite(other, smoke_run.run_dir, settings=eval_settings)


def test_out_that_is_a_file_or_someone_elses_folder_is_refused_untouched(tmp_path):
    from promptrec.errors import PromptrecError

    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine", encoding="utf-8")
    with pytest.raises(PromptrecError, match="is a file, not a folder"):
        run_suite(SMOKE, a_file)
    folder = tmp_path / "webapp"
    folder.mkdir()
    (folder / "suite.toml").write_text("mine", encoding="utf-8")
    (folder / "index.html").write_text("<html>", encoding="utf-8")
    with pytest.raises(PromptrecError, match=r"not an evaluation run folder.*index\.html"):
        run_suite(SMOKE, folder)
    assert (folder / "suite.toml").read_text(encoding="utf-8") == "mine" and len(list(folder.iterdir())) == 2
    assert a_file.read_text(encoding="utf-8") == "mine"


BASELINES_ONLY = """
name = "lightfm-check"
seed = 0
[data]
dataset = "movielens-100k"
log_users = 40
k_core = [5, 5]
users = 30
[protocol]
bootstrap = 50
[baselines]
rankers = ["popularity", "lightfm"]
[baselines.lightfm]
no_components = 8
epochs = 5
"""


def test_missing_optional_baseline_is_skipped_except_in_ci(eval_settings, tmp_path, monkeypatch):
    suite = parse_suite(BASELINES_ONLY, "lightfm-check")
    monkeypatch.setitem(sys.modules, "lightfm", None)  # as if lightfm-next were not installed
    monkeypatch.delenv("CI", raising=False)
    result = run_suite(suite, tmp_path / "local", settings=eval_settings)
    assert "lightfm" in result.skipped and "lightfm-next" in result.skipped["lightfm"]
    assert [r["name"] for r in result.summary["rankers"]] == ["popularity"]
    assert result.complete
    assert "## Skipped" in (tmp_path / "local" / "summary.md").read_text()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(BaselineUnavailable):
        run_suite(suite, tmp_path / "ci", settings=eval_settings)


def test_lightfm_is_deterministic(eval_settings):
    pytest.importorskip("lightfm")
    suite = parse_suite(BASELINES_ONLY, "lightfm-check")
    data = prepare_data(suite, eval_settings)
    lists = []
    for _ in range(2):
        ranker = LightFMRanker(suite.baselines.lightfm, seed=0)
        ranker.prepare(data)
        lists.append([ranker.rank(u, data.test_histories[u], 10).ranked for u in data.users])
    assert lists[0] == lists[1]
    assert all(len(r) == 10 and not set(r) & set(data.test_histories[u]) for r, u in zip(lists[0], data.users))


def test_compare_resumed_run_with_uninterrupted_run(smoke_run, resumed_run):
    from promptrec.eval import compare_runs, render_comparison

    result = resumed_run[0]
    comparison = compare_runs(smoke_run.run_dir, result.run_dir)
    assert {p.ranker_a for p in comparison.pairs} == {"popularity", "retrieval", "als", LLM}
    for pair in comparison.pairs:
        assert pair.users == (5 if pair.ranker_a == LLM else 30) and pair.only_a == pair.only_b == 0
        for d in pair.differences:
            assert d.diff == 0 and d.low == 0 and d.high == 0 and d.p_value == 1.0
    llm = next(p for p in comparison.pairs if p.ranker_a == LLM)
    assert {"log_loss_after", "brier_after"} <= {d.metric for d in llm.differences}
    assert "| ndcg@10 |" in render_comparison(comparison)


def test_batched_llm_rows_equal_one_user_at_a_time(smoke_run, eval_settings, tmp_path):
    """`batch_users` changes how users reach the LLM (`LLMReranker.run_many`), never the rows:
    the smoke run (8 users per call) and a run of one user per call agree, calibration included."""
    single = run_suite(SMOKE, tmp_path / "single", settings=eval_settings, only=[LLM], batch_users=1)
    a = {k: v for k, v in _rows_by_key(smoke_run.run_dir).items() if k[0] == LLM}
    b = _rows_by_key(single.run_dir)
    assert a.keys() == b.keys() and len(a) == 5
    for key, row in a.items():
        assert row["candidates"] == b[key]["candidates"] and row["ranked"] == b[key]["ranked"], key
        for field in ("scores", "p_after"):
            np.testing.assert_allclose(row[field], b[key][field], rtol=0, atol=1e-5)
    sessions = json.loads((single.run_dir / "manifest.json").read_text())["sessions"]
    assert [s["batch_users"] for s in sessions] == [1]


def test_eval_index_retrains_a_stale_sequential_model(smoke_run, eval_settings, caplog, tmp_path):
    """The eval's indexes are its own cache: a model trained with other settings is retrained
    there (and said in the log), not refused with a command that trains another index."""
    import shutil

    suite = load_suite(SMOKE)
    shutil.copytree(eval_settings.index_dir, tmp_path / "index")  # the smoke run's indexes, left as they are
    seq = eval_settings.retrieval.sequential.model_copy(update={"dropout": 0.25, "max_epochs": 2})
    changed = eval_settings.model_copy(update={
        "index_dir": tmp_path / "index",
        "retrieval": eval_settings.retrieval.model_copy(update={"sequential": seq}),
    })
    with caplog.at_level("WARNING", logger="promptrec.eval.rankers"):
        rec = prepare_data(suite, changed).recommender("test")
    assert rec.index.manifest.sequential_trained
    assert rec.index.sequential_model.settings.dropout == 0.25
    assert "retraining its sequential model" in caplog.text and "other data or hyperparameters" in caplog.text


def test_the_report_cuts_users_into_segments(smoke_run):
    """users.json holds each evaluated user's facts; every user lands in one segment of each cut;
    a segment's cell is the mean over its users and its delta the paired difference to retrieval."""
    from promptrec.metrics import ndcg_at_k as ndcg

    run_dir = smoke_run.run_dir
    facts = json.loads((run_dir / "users.json").read_text())
    rows = read_results(run_dir)
    by = {(r["ranker"], r["user_id"]): r for r in rows}
    assert set(facts) == {r["user_id"] for r in rows if r["ranker"] == "retrieval"}
    segments = smoke_run.summary["segments"]
    assert segments["metrics"] == ["ndcg@10", "recall@10"]
    checked = 0
    for cut in segments["segmentations"]:
        assert sum(g["users"] for g in cut["segments"]) == len(facts)
        for g in cut["segments"]:
            if g["too_few"]:
                assert g["users"] < 5 and not g["metrics"]
                continue
            mine = [u for u in facts if _in_segment(cut["name"], g["label"], facts[u])]
            assert len(mine) == g["users"]
            retrieval = [ndcg(by["retrieval", u]["ranked"], by["retrieval", u]["target"], 10) for u in mine]
            popularity = [ndcg(by["popularity", u]["ranked"], by["popularity", u]["target"], 10) for u in mine]
            assert g["metrics"]["retrieval"]["ndcg@10"]["mean"] == pytest.approx(np.mean(retrieval))
            delta = g["deltas"]["popularity"]["ndcg@10"]
            assert delta["diff"] == pytest.approx(np.mean(popularity) - np.mean(retrieval)) and delta["users"] == len(mine)
            assert delta["low"] <= delta["diff"] <= delta["high"]
            checked += 1
    assert checked >= 2
    report = (run_dir / "summary.md").read_text()
    assert [c["name"] for c in segments["segmentations"]] == ["all users", "history length", "target popularity"]
    assert "## Segments" in report and "### By history length" in report and "### By target popularity" in report
    assert (run_dir / "segments.png").stat().st_size > 0


def _in_segment(cut: str, label: str, fact: dict) -> bool:
    if cut == "all users":
        return True
    if cut == "history length":
        n = fact["history_length"]
        return {"≤5": n <= 5, "6-20": 6 <= n <= 20, "21-100": 21 <= n <= 100, ">100": n > 100}[label]
    q = fact["target_popularity_quantile"]
    return {"head": q < 0.2, "torso": 0.2 <= q < 0.5, "tail": q >= 0.5}[label.split()[0]]


def test_the_auto_row_serves_what_its_decision_says(eval_settings, tmp_path):
    """The LLM row's calibration also decides ranker.mode = "auto" (on the same validation records);
    the auto row is, on the LLM row's users, the list of the row the decision chose."""
    text = SMOKE.read_text(encoding="utf-8").replace('rankers = ["popularity", "retrieval", "als"]',
                                                     'rankers = ["retrieval", "calibrated-retrieval"]')
    assert "calibrated-retrieval" in text
    result = run_suite(parse_suite(text, "smoke-auto"), tmp_path / "auto", settings=eval_settings)
    decision = json.loads((result.run_dir / "manifest.json").read_text())["calibration"][LLM]["mode_decision"]
    assert decision["mode"] in ("llm", "retrieval") and decision["judged_users"] + decision["fit_users"] == 12
    entries = {e["name"]: e for e in result.summary["rankers"]}
    auto, calibrated = entries[f"auto ({LLM})"], entries["calibrated-retrieval"]
    source = LLM if decision["mode"] == "llm" else "calibrated-retrieval"
    assert auto["params"]["serves"] == source and auto["users"] == 5 and calibrated["users"] == 30
    rows = read_results(result.run_dir)
    llm_users = {r["user_id"] for r in rows if r["ranker"] == LLM}
    from promptrec.metrics import ndcg_at_k

    chosen = [ndcg_at_k(r["ranked"], r["target"], 10) for r in rows if r["ranker"] == source and r["user_id"] in llm_users]
    assert auto["metrics"]["ndcg@10"]["mean"] == pytest.approx(np.mean(chosen))
    assert "auto (" in (result.run_dir / "summary.md").read_text()


def test_the_applicability_page_judges_each_segment_against_retrieval(smoke_run, tmp_path):
    """From a run folder: one verdict per (segment, ranker), consistent with the segment's paired
    interval; the page, its JSON and its chart are written; the CLI takes run folders too."""
    from typer.testing import CliRunner

    from promptrec.cli import app
    from promptrec.eval.applicability import applicability

    report = applicability([smoke_run.run_dir])
    assert report.scenarios == ["smoke (movielens-100k)"] and report.metric == "ndcg@10"
    segments = smoke_run.summary["segments"]
    expected = sum(len(c["segments"]) for c in segments["segmentations"]) * (len(segments["rankers"]) - 1)
    assert len(report.verdicts) == expected
    for v in report.verdicts:
        if v.verdict == "wins":
            assert v.low > 0
        elif v.verdict == "loses":
            assert v.high < 0
        elif v.verdict == "ties":
            assert v.low <= 0 <= v.high
    (whole,) = [v for v in report.verdicts if v.cut == "all users" and v.ranker == "popularity"]
    assert whole.verdict != "too few users" and whole.users == 30
    assert {c.ranker for c in report.costs} >= {"retrieval", LLM}
    result = CliRunner().invoke(app, ["eval", "applicability", str(smoke_run.run_dir), "--out", str(tmp_path / "page")])
    assert result.exit_code == 0, result.output
    assert "# Where does the LLM help?" in result.output and "## Cost per user" in result.output
    assert (tmp_path / "page" / "applicability.png").stat().st_size > 0


def test_the_new_user_scenario_cuts_the_evaluated_users_histories(eval_settings):
    """[data] new_users = 2: each evaluated user's history (and the index's log) holds their first 2
    events and their target is the third; the users not evaluated keep their history and target."""
    from promptrec.eval.runner import suite_settings

    text = SMOKE.read_text(encoding="utf-8").replace("users = 30\n", "users = 10\nnew_users = 2\n")
    suite = parse_suite(text, "smoke-new-users")
    settings = suite_settings(suite, eval_settings)
    plain = prepare_data(load_suite(SMOKE), suite_settings(load_suite(SMOKE), eval_settings))
    data = prepare_data(suite, settings)
    assert len(data.users) == 10
    for user, history in data.test_histories.items():
        full = plain.test_histories[user]
        new = user in data.users
        assert history == (full[:2] if new else full)
        assert data.test_targets[user] == (full[2] if new else plain.test_targets[user])
    rec = data.recommender("test")
    assert all(len(rec.histories[u]) <= 2 for u in data.users)
    assert "new2" in data.namespace("test") and "new2" not in data.namespace("validation")
    too_late = parse_suite(text.replace("new_users = 2\n", "new_users = 100000\n"), "smoke-too-late")
    with pytest.raises(SuiteError, match="new_users = 100000 leaves no test user"):
        prepare_data(too_late, suite_settings(too_late, eval_settings))


def test_the_new_item_scenario_hides_the_newest_items_from_every_log(eval_settings):
    """[data] new_items = 0.2: the newest 20% of the items leave both indexes' logs and every
    history; the evaluated users are those whose test item is one of them."""
    from promptrec.eval.runner import suite_settings

    text = SMOKE.read_text(encoding="utf-8").replace("users = 30\n", "users = 30\nnew_items = 0.2\n")
    suite = parse_suite(text, "smoke-new-items")
    data = prepare_data(suite, suite_settings(suite, eval_settings))
    plain = prepare_data(load_suite(SMOKE), suite_settings(load_suite(SMOKE), eval_settings))
    items = sorted(set(plain.frame["item_id"].astype(str)))
    assert len(data.new_item_ids) == round(0.2 * len(items))
    first = plain.frame.assign(item_id=plain.frame["item_id"].astype(str)).groupby("item_id")["timestamp"].min()
    assert first[sorted(data.new_item_ids)].min() >= first.drop(sorted(data.new_item_ids)).max()
    assert data.users and all(data.test_targets[u] in data.new_item_ids for u in data.users)
    assert set(data.users) == {u for u, i in plain.test_targets.items() if i in data.new_item_ids}
    for frame in (data.test_frame, data.validation_frame):
        assert not set(frame["item_id"].astype(str)) & data.new_item_ids
    assert all(not set(h) & data.new_item_ids for h in data.test_histories.values())
    assert "newitems0.2" in data.namespace("test") and "newitems0.2" in data.namespace("validation")
    with pytest.raises(SuiteError, match="new_users and new_items are two scenarios"):
        parse_suite(text.replace("new_items = 0.2\n", "new_items = 0.2\nnew_users = 2\n"), "both")
    with pytest.raises(SuiteError, match="new_items"):
        parse_suite(text.replace("new_items = 0.2", "new_items = 1.5"), "too-many")


def test_llm_rows_on_a_ray_cluster_equal_the_local_rows_and_resume(smoke_run, eval_settings, tmp_path):
    """`engine="ray"`: the LLM rows, calibration records and test rows alike, come from actor
    pools on a real local Ray cluster (2 CPUs, no dashboard) into the same run folder; a session
    stopped half-way resumes on Ray, and the rows equal the local run's (scores to 1e-5: the
    actors run one torch thread each)."""
    ray = pytest.importorskip("ray")
    run_dir = tmp_path / "ray"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        with pytest.raises(Stop):  # 12 calibration rows, then 2 test rows (from the actors)
            run_suite(SMOKE, run_dir, settings=eval_settings, only=[LLM], batch_users=2, engine="ray", threads=1,
                      after_user=stop_after(14))
        assert len(read_results(run_dir)) == 2
        result = run_suite(SMOKE, run_dir, settings=eval_settings, only=[LLM], batch_users=2, engine="ray", threads=1)
    finally:
        ray.shutdown()
    assert result.written == 3
    a = {k: v for k, v in _rows_by_key(smoke_run.run_dir).items() if k[0] == LLM}
    b = _rows_by_key(run_dir)
    assert a.keys() == b.keys() and len(b) == 5
    local_records = {r["user_id"]: r for r in JsonlLog(smoke_run.run_dir / VALIDATION).rows_for(LLM)}
    ray_records = {r["user_id"]: r for r in JsonlLog(run_dir / VALIDATION).rows_for(LLM)}
    assert local_records.keys() == ray_records.keys() and len(ray_records) == 12
    for user, record in local_records.items():
        assert record["candidates"] == ray_records[user]["candidates"], user
        np.testing.assert_allclose(record["scores"], ray_records[user]["scores"], rtol=0, atol=1e-5)
    for key, row in a.items():
        assert row["candidates"] == b[key]["candidates"] and row["ranked"] == b[key]["ranked"], key
        assert row["calibration_id"] == b[key]["calibration_id"]
        for field in ("scores", "p_after"):
            np.testing.assert_allclose(row[field], b[key][field], rtol=0, atol=1e-5)
