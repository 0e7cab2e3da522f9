"""``ranker.mode = "auto"``: whether the LLM earns its place, decided on validation users.

`decide_mode` takes the calibration records of `promptrec calibrate` (validation users:
candidates, LLM scores, held-out item), splits the users into two seeded halves, fits both
logistic layers on the first (with the LLM score; on the retrieval features alone) and orders
the second half's lists three ways: the retrieval order, the calibrated retrieval features, the
calibrated LLM. It serves the LLM only when the LLM's NDCG@10 minus the calibrated retrieval's,
paired over the judged users (at least `MIN_JUDGED`), has a confidence interval above 0: the
cheaper pipeline wins ties, noise and samples too small to tell. The decision is saved beside the calibration, keyed like it, and every
`recommend()` in auto mode says which way it went and why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel

from promptrec.metrics import ndcg_at_k
from promptrec.paths import atomic_write_text
from promptrec.ranker.calibration import (
    CalibrationKey,
    CalibrationMismatchError,
    CalibrationRecord,
    fit_calibration,
    fit_retrieval_calibration,
    final_order,
    retrieval_calibration_key,
)
from promptrec.stats import paired_difference

FORMAT = "promptrec.mode-decision/1"
K = 10  # the decision's metric: NDCG@10 of each judged user's list
MIN_JUDGED = 20  # fewer judged users cannot show a gain: the cheaper pipeline is served


class ModeDecision(BaseModel):
    """Which pipeline `ranker.mode = "auto"` serves, and the validation numbers behind it."""

    format: str = FORMAT
    key: CalibrationKey  # the LLM calibration it was decided with
    mode: Literal["llm", "retrieval"]
    fit_users: int
    judged_users: int
    ndcg: dict[str, float]  # option ("retrieval order", "calibrated retrieval", "calibrated LLM") -> NDCG@10
    llm_minus_retrieval: dict[str, float]  # diff, low, high: calibrated LLM - calibrated retrieval, paired
    confidence: float

    @property
    def reason(self) -> str:
        d = self.llm_minus_retrieval
        gain = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        if self.judged_users < MIN_JUDGED:
            return (f"LLM rerank off here: {self.judged_users} judged validation users are too few to show a gain "
                    f"(it measured {gain} NDCG@10; at least {MIN_JUDGED}: `promptrec calibrate --users "
                    f"{2 * MIN_JUDGED}` or more); serving calibrated retrieval; set ranker.mode = \"llm\" to force it")
        if self.mode == "llm":
            return (f"LLM rerank on: on {self.judged_users} validation users it adds {gain} NDCG@10 over the "
                    "calibrated retrieval features")
        return (f"LLM rerank off here: on {self.judged_users} validation users it adds {gain} NDCG@10 over the "
                "calibrated retrieval features; serving calibrated retrieval; set ranker.mode = \"llm\" to force it")

    def check_key(self, expected: CalibrationKey, source: str | Path) -> None:
        what = self.key.describe_differences(expected, "decided")
        if what:
            raise CalibrationMismatchError(
                f"the ranker.mode = \"auto\" decision in {source} was made for another setup ({what}); "
                "run `promptrec calibrate` to decide again"
            )

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: Path) -> ModeDecision:
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise CalibrationMismatchError(f"{path} is damaged ({type(exc).__name__}); run `promptrec calibrate`") from exc


def _ndcg(record: CalibrationRecord, order: Sequence[int]) -> float:
    items = record.candidates.candidates
    return ndcg_at_k([items[i].item_id for i in order], record.relevant_item_id or "", K)


def decide_mode(records: Sequence[CalibrationRecord], key: CalibrationKey, settings, *, seed: int = 0,
                l2: float = 1e-4, confidence: float = 0.95, n_resamples: int = 1000) -> ModeDecision:
    """Fit on one seeded half of the records' users, judge on the other (see the module)."""
    usable = [r for r in records if r.candidates.candidates]
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(usable))
    fit = [usable[i] for i in order[: len(usable) // 2]]
    judged = [usable[i] for i in order[len(usable) // 2:]]
    llm = fit_calibration(fit, key, l2=l2)
    retrieval = fit_retrieval_calibration([(r.candidates, r.relevant_item_id) for r in fit],
                                          retrieval_calibration_key(settings, key.n_candidates), l2=l2)
    scores = {"retrieval order": [], "calibrated retrieval": [], "calibrated LLM": []}
    for record in judged:
        n = len(record.candidates.candidates)
        scores["retrieval order"].append(_ndcg(record, range(n)))
        p = retrieval.predict_proba(record.candidates, None)
        scores["calibrated retrieval"].append(_ndcg(record, final_order(n, p, None)))
        p = llm.predict_proba(record.candidates, record.scores)
        scores["calibrated LLM"].append(_ndcg(record, final_order(n, p, record.scores)))
    d = paired_difference(scores["calibrated retrieval"], scores["calibrated LLM"], n_resamples, confidence, seed)
    return ModeDecision(
        key=key, mode="llm" if d.low > 0 and len(judged) >= MIN_JUDGED else "retrieval", fit_users=len(fit),
        judged_users=len(judged),
        ndcg={name: float(np.mean(values)) for name, values in scores.items()},
        llm_minus_retrieval={"diff": d.diff, "low": d.low, "high": d.high}, confidence=confidence,
    )
