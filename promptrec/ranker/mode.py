"""``ranker.mode = "auto"``: whether the LLM earns its place, decided on validation users.

`decide_mode` takes the calibration records of `promptrec calibrate` (validation users:
candidates, LLM scores, held-out item), splits the users into two seeded halves, fits the
logistic layers on the first and orders the second half's lists every way: the retrieval
order, the calibrated retrieval features, the calibrated LLM over the first candidate order
alone (letters over several orders: the records carry that order's scores, so it costs no
extra LLM call) and over all of them. It climbs that cost ladder one rung at a time: a dearer
option is served only when its NDCG@10 minus the one chosen so far, paired over the judged
users (at least `MIN_JUDGED`), has a confidence interval above 0; the cheaper pipeline wins
ties, noise and samples too small to tell. The decision (with the calibration for fewer orders
when it chose them) is saved beside the calibration, keyed like it, and every `recommend()` in
auto mode says which way it went and why.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from promptrec.metrics import ndcg_at_k
from promptrec.paths import atomic_write_text
from promptrec.ranker.calibration import (
    CalibrationKey,
    Calibrator,
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
ONE_ORDER = "calibrated LLM, 1 order"
MIN_JUDGED = 20  # fewer judged users cannot show a gain: the cheaper pipeline is served


class ModeDecision(BaseModel):
    """Which pipeline `ranker.mode = "auto"` serves, and the validation numbers behind it."""

    format: str = FORMAT
    key: CalibrationKey  # the LLM calibration it was decided with
    mode: Literal["llm", "retrieval"]
    # The LLM over fewer candidate orders than `ranker.permutations` (letters: 1, the retrieval
    # order), with the calibration fitted for it; None: the ranker's own orders.
    orders: int | None = None
    calibration: Calibrator | None = None
    fit_users: int
    judged_users: int
    ndcg: dict[str, float]  # option ("retrieval order", "calibrated retrieval", "calibrated LLM", ...) -> NDCG@10
    llm_minus_retrieval: dict[str, float]  # diff, low, high: calibrated LLM - calibrated retrieval, paired
    # each rung of the cost ladder: a dearer option against the one chosen so far, paired
    steps: list[dict[str, Any]] = []
    confidence: float

    @property
    def reason(self) -> str:
        d = self.llm_minus_retrieval
        gain = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        if self.judged_users < MIN_JUDGED:
            return (f"LLM rerank off here: {self.judged_users} judged validation users are too few to show a gain "
                    f"(it measured {gain} NDCG@10; at least {MIN_JUDGED}: `promptrec calibrate --users "
                    f"{2 * MIN_JUDGED}` or more); serving calibrated retrieval; set ranker.mode = \"llm\" to force it")
        if self.mode == "llm" and self.orders is not None:
            one = next(s for s in self.steps if s["option"] == ONE_ORDER)
            more = next((s for s in self.steps if s["option"] == "calibrated LLM"), None)
            extra = (f"; all {self.key.permutations} orders add {more['diff']:+.4f} [{more['low']:+.4f}, "
                     f"{more['high']:+.4f}] more, not enough to pay for them") if more else ""
            return (f"LLM rerank on, over {self.orders} candidate order: on {self.judged_users} validation users it "
                    f"adds {one['diff']:+.4f} [{one['low']:+.4f}, {one['high']:+.4f}] NDCG@10 over the calibrated "
                    f"retrieval features{extra}")
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
    retrieval = fit_retrieval_calibration([(r.candidates, r.relevant_item_id) for r in fit],
                                          retrieval_calibration_key(settings, key.n_candidates), l2=l2)
    # The LLM options, cheapest first: over the first candidate order alone (when the records
    # carry it: letters over several orders), then over all of them.
    one_key = key.model_copy(update={"permutations": 1})
    llm_options = []
    if key.permutations and key.permutations > 1 and any(r.first_order_scores for r in fit):
        llm_options.append((ONE_ORDER, one_key, _first_order))
    llm_options.append(("calibrated LLM", key, lambda r: r))
    fitted = {name: (fit_calibration([view(r) for r in fit], k, l2=l2), view) for name, k, view in llm_options}
    scores: dict[str, list[float]] = {"retrieval order": [], "calibrated retrieval": [],
                                      **{name: [] for name, _, _ in llm_options}}
    for record in judged:
        n = len(record.candidates.candidates)
        scores["retrieval order"].append(_ndcg(record, range(n)))
        p = retrieval.predict_proba(record.candidates, None)
        scores["calibrated retrieval"].append(_ndcg(record, final_order(n, p, None)))
        for name, (calibrator, view) in fitted.items():
            seen = view(record)
            p = calibrator.predict_proba(seen.candidates, seen.scores)
            scores[name].append(_ndcg(record, final_order(n, p, seen.scores)))
    chosen, steps = "calibrated retrieval", []
    for name, _, _ in llm_options:  # climb the cost ladder only on a gain whose CI is above 0
        d = paired_difference(scores[chosen], scores[name], n_resamples, confidence, seed)
        steps.append({"option": name, "against": chosen, "diff": d.diff, "low": d.low, "high": d.high})
        if d.low > 0 and len(judged) >= MIN_JUDGED:
            chosen = name
    d = paired_difference(scores["calibrated retrieval"], scores["calibrated LLM"], n_resamples, confidence, seed)
    calibration = None
    if chosen == ONE_ORDER:  # served: fitted on every record, as `promptrec calibrate` fits the full one
        calibration = fit_calibration([_first_order(r) for r in usable], one_key, l2=l2)
    return ModeDecision(
        key=key, mode="retrieval" if chosen == "calibrated retrieval" else "llm",
        orders=1 if chosen == ONE_ORDER else None, calibration=calibration, fit_users=len(fit),
        judged_users=len(judged),
        ndcg={name: float(np.mean(values)) for name, values in scores.items()},
        llm_minus_retrieval={"diff": d.diff, "low": d.low, "high": d.high}, steps=steps, confidence=confidence,
    )


def _first_order(record: CalibrationRecord) -> CalibrationRecord:
    """The record as the LLM over its first candidate order alone scored it."""
    return record.model_copy(update={"scores": record.first_order_scores if record.scores is not None else None})
