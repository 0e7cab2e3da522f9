"""Logistic calibration: features, recovery of a known model, JSON round trip, stale keys refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptrec.errors import IndexMismatchError, PromptrecError
from promptrec.ranker.calibration import (
    FEATURE_NAMES,
    CalibrationKey,
    CalibrationMismatchError,
    CalibrationRecord,
    Calibrator,
    candidate_features,
    fit_calibration,
    fit_features,
    fit_logistic,
)
from promptrec.retrieval.schema import Candidate, CandidateList

KEY = CalibrationKey(model_id="smollm2-135m-instruct", template_hash="abc123def456", encoder="all-minilm-l6-v2",
                     strategy="letters")


def _list(n: int, rng: np.random.Generator, user: str = "u") -> CandidateList:
    fused = np.sort(rng.random(n))[::-1]
    cands = [
        Candidate(item_id=f"{user}-{i}", title=f"Movie {i}", text=f"Movie {i} (1995)", fused_score=float(fused[i]),
                  rank=i + 1, popularity=int(rng.integers(0, 500)))
        for i in range(n)
    ]
    return CandidateList(user_id=user, candidates=cands, history=[])


def test_fit_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    n = 20_000
    x = rng.normal(size=(n, 3)) * np.array([1.0, 1.5, 1.0]) + np.array([0.0, 0.5, -0.5])
    true_w, true_b = np.array([1.5, -0.7, 2.0]), -0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ true_w + true_b)))).astype(float)
    w, b, iterations, converged = fit_logistic(x, y, l2=0.0)
    assert np.abs(w - true_w).max() < 0.1 and abs(b - true_b) < 0.1
    assert converged and iterations > 0


def test_fit_features_recovers_known_model_through_standardisation():
    rng = np.random.default_rng(1)
    n = 20_000
    x = np.column_stack([
        rng.normal(size=n), rng.random(n), rng.normal(size=n), rng.random(n), np.log1p(rng.integers(0, 500, n)),
    ])
    true_w, true_b = np.array([1.2, -1.0, 0.6, -0.8, 0.3]), -2.0
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ true_w + true_b)))).astype(float)
    cal = fit_features(x, y, KEY, l2=0.0)
    w, b = cal.raw_coefficients()
    assert np.abs(w - true_w).max() < 0.1, (w, true_w)
    assert abs(b - true_b) < 0.15
    assert cal.fit.n == n and cal.fit.positives == int(y.sum())
    assert cal.fit.logloss < cal.fit.base_logloss
    p = cal.predict_features(x)
    assert np.all((p > 0) & (p < 1))


def test_candidate_features():
    rng = np.random.default_rng(2)
    cl = _list(5, rng)
    x = candidate_features(cl, [3.0, 1.0, 2.0, 0.0, -1.0])
    assert x.shape == (5, len(FEATURE_NAMES))
    assert x[:, 0].mean() == pytest.approx(0.0) and x[:, 0].std() == pytest.approx(1.0)
    assert x[:, 1].tolist() == [0.0, 0.5, 0.25, 0.75, 1.0]  # rank by LLM score, 0 = best
    assert x[:, 3].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]  # retrieval rank
    assert np.allclose(x[:, 4], np.log1p([c.popularity for c in cl.candidates]))
    degraded = candidate_features(cl, None)
    assert np.all(degraded[:, 0] == 0) and np.all(degraded[:, 1] == 0.5)
    assert np.all(candidate_features(cl, [1.0] * 5)[:, 0] == 0)  # equal scores: z 0, no division by 0
    with pytest.raises(ValueError, match="3 scores for 5 candidates"):
        candidate_features(cl, [1.0, 2.0, 3.0])


def test_source_features_are_reciprocal_ranks_and_zero_when_absent():
    cl = _list(2, np.random.default_rng(4))
    first, second = cl.candidates
    cl.candidates[0] = first.model_copy(update={
        "source_ranks": {"transitions": 4, "text": 1}, "source_scores": {"transitions": 2.0, "text": 0.7},
    })
    cl.candidates[1] = second.model_copy(update={"source_ranks": {"behaviour": 2}, "source_scores": {"behaviour": 0.3}})
    x = candidate_features(cl, None)
    col = {name: n for n, name in enumerate(FEATURE_NAMES)}
    assert x[0, col["transitions_rr"]] == 0.25 and x[0, col["text_rr"]] == 1.0 and x[0, col["behaviour_rr"]] == 0.0
    assert x[1, col["behaviour_rr"]] == 0.5 and x[1, col["transitions_rr"]] == 0.0
    assert x[0, col["log_transitions"]] == pytest.approx(np.log1p(2.0)) and x[1, col["log_transitions"]] == 0.0


def _records(n_users: int, rng: np.random.Generator, strength: float = 2.0) -> list[CalibrationRecord]:
    records = []
    for u in range(n_users):
        cl = _list(10, rng, f"u{u}")
        scores = rng.normal(size=10)
        logits = strength * scores - 0.3 * np.arange(10)
        relevant = int(rng.choice(10, p=np.exp(logits) / np.exp(logits).sum()))
        records.append(CalibrationRecord(candidates=cl, scores=scores.tolist(),
                                         relevant_item_id=cl.candidates[relevant].item_id))
    return records


def test_fit_calibration_from_records_and_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    records = _records(400, rng)
    records.append(CalibrationRecord(candidates=_list(10, rng, "degraded"), scores=None, relevant_item_id="x"))
    cal = fit_calibration(records, KEY)
    assert cal.fit.users == 400 and cal.fit.skipped_users == 1 and cal.fit.positives == 400
    assert cal.fit.n == 4000
    llm_z = cal.weights[FEATURE_NAMES.index("llm_z")]
    assert llm_z > 0.5  # the LLM score carries the signal
    assert cal.fit.logloss < cal.fit.base_logloss

    path = cal.save(tmp_path / "index" / "calibration.json")
    assert path.name == "calibration.json" and not list(path.parent.glob("*.tmp"))
    data = json.loads(path.read_text())
    assert data["key"] == KEY.model_dump() and data["feature_names"] == list(FEATURE_NAMES)
    assert set(data["fit"]) >= {"n", "positives", "logloss"} and len(data["means"]) == len(data["scales"]) == len(FEATURE_NAMES)
    loaded = Calibrator.load(path, expected_key=KEY)
    probe = records[0]
    np.testing.assert_allclose(loaded.predict_proba(probe.candidates, probe.scores),
                               cal.predict_proba(probe.candidates, probe.scores))
    p = loaded.predict_proba(probe.candidates, None)  # degraded LLM: retrieval features only
    assert p.shape == (10,) and np.all((p > 0) & (p < 1))

    # dict records work too
    again = fit_calibration([r.model_dump() for r in records[:50]], KEY)
    assert again.fit.users == 50


def test_stale_key_refused(tmp_path):
    rng = np.random.default_rng(4)
    path = fit_calibration(_records(50, rng), KEY).save(tmp_path / "calibration.json")
    stale = KEY.model_copy(update={"template_hash": "000000000000"})
    with pytest.raises(CalibrationMismatchError) as err:
        Calibrator.load(path, expected_key=stale)
    message = str(err.value)
    assert "template_hash" in message and "abc123def456" in message and "000000000000" in message
    assert "promptrec calibrate" in message
    assert isinstance(err.value, IndexMismatchError) and isinstance(err.value, PromptrecError)
    other = KEY.model_copy(update={"model_id": "qwen", "strategy": "yesno"})
    with pytest.raises(CalibrationMismatchError, match="model_id.*strategy"):
        Calibrator.load(path, expected_key=other)
    Calibrator.load(path)  # no expected key: loads


def test_bad_files_and_degenerate_fits(tmp_path):
    bad = tmp_path / "calibration.json"
    bad.write_text("{not json")
    with pytest.raises(PromptrecError, match="not a readable calibration"):
        Calibrator.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(PromptrecError, match="format"):
        Calibrator.load(bad)
    rng = np.random.default_rng(5)
    records = _records(5, rng)
    for r in records:
        r.relevant_item_id = "not-retrieved"
    with pytest.raises(PromptrecError, match="both relevant and non-relevant"):
        fit_calibration(records, KEY)
    with pytest.raises(PromptrecError, match="no calibration rows"):
        fit_calibration([], KEY)
