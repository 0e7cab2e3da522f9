"""The served path after scoring: retrieved candidates + the LLM's answer + an optional
calibration → the candidates in the one final order, with P(relevant) and degradation.

`recommend()`, the eval harness and the benchmarks all order through here, so what eval
measures is what is served:

    ranked = rank_candidates(found, result, calibrator)   # -> RankedCandidates
    ranked.ranked_item_ids()                              # the final order, best first
    ranked.recommendation_list(k, latency_s)              # what `recommend()` returns
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel

from promptrec.ranker.calibration import Calibrator, final_order
from promptrec.ranker.reranker import RerankResult
from promptrec.retrieval.schema import CandidateList
from promptrec.schema import Recommendation, RecommendationList

__all__ = ["RankedCandidates", "calibrated_order", "rank_candidates", "rank_retrieval"]


def calibrated_order(
    found: CandidateList, scores: Sequence[float] | None, calibrator: Calibrator | None
) -> tuple[list[float] | None, list[int]]:
    """(P(relevant) per candidate in input order, or None; candidate positions best first).

    With a calibrator the order is by probability (`final_order`), else by the LLM score;
    no scores (a degraded answer) keep the retrieval order."""
    n = len(found.candidates)
    if calibrator is None or n == 0:
        return None, final_order(n, None, scores)
    probabilities = calibrator.predict_proba(found, scores).tolist()
    return probabilities, final_order(n, probabilities, scores)


class RankedCandidates(BaseModel):
    """One user's candidates after scoring and calibration, in the final order."""

    found: CandidateList  # as retrieved (input order)
    result: RerankResult | None  # the LLM's answer: scores, degradation, cost; None: no LLM (mode "retrieval")
    probabilities: list[float] | None  # calibrated P(relevant), input order; None uncalibrated
    order: list[int]  # positions in `found.candidates`, best first
    calibrated: bool  # a calibrator was applied (also to an empty list)

    @property
    def scores(self) -> list[float] | None:
        """The LLM scores in input order; None when degraded or when no LLM ran."""
        return self.result.scores_in_input_order() if self.result is not None else None

    def ranked_item_ids(self) -> list[str]:
        items = self.found.candidates
        return [items[i].item_id for i in self.order]

    def recommendation_list(self, k: int, latency_s: float = 0.0) -> RecommendationList:
        """The top ``k`` as `recommend()` returns them."""
        items, scores, result = self.found.candidates, self.scores, self.result
        probabilities = self.probabilities or [None] * len(items)
        if result is None:
            return RecommendationList(
                user_id=self.found.user_id, recommendations=self._recommendations(k, probabilities, None),
                strategy="retrieval", template="", template_hash="", model_id="", mode="retrieval",
                calibrated=self.calibrated, cold_start=self.found.cold_start, latency_s=latency_s,
            )
        return RecommendationList(
            user_id=self.found.user_id,
            recommendations=self._recommendations(k, probabilities, scores),
            strategy=result.strategy,
            template=result.template_name,
            template_hash=result.template_hash,
            model_id=result.model_id,
            calibrated=self.calibrated,
            degraded=result.degraded,
            degraded_reason=result.degraded_reason,
            cold_start=self.found.cold_start,
            latency_s=latency_s,
            prompt_tokens=result.prompt_tokens,
            computed_tokens=result.computed_tokens,
            dtype=result.dtype,
        )

    def _recommendations(self, k: int, probabilities: list[float | None],
                         scores: list[float] | None) -> list[Recommendation]:
        items = self.found.candidates
        return [
            Recommendation(
                item_id=items[i].item_id,
                title=items[i].title,
                rank=rank,
                probability=probabilities[i],
                llm_score=scores[i] if scores else None,
                retrieval_score=items[i].fused_score,
                retrieval_rank=items[i].rank,
            )
            for rank, i in enumerate(self.order[:k], start=1)
        ]


def rank_candidates(found: CandidateList, result: RerankResult, calibrator: Calibrator | None = None) -> RankedCandidates:
    """Order one user's reranked candidates: the one rule `recommend()` serves and eval measures."""
    probabilities, order = calibrated_order(found, result.scores_in_input_order(), calibrator)
    return RankedCandidates(found=found, result=result, probabilities=probabilities, order=order,
                            calibrated=calibrator is not None)


def rank_retrieval(found: CandidateList, calibrator: Calibrator | None = None) -> RankedCandidates:
    """Order one user's candidates without the LLM (``ranker.mode = "retrieval"``): by the
    calibration of the retrieval features when one is given, else in retrieval order."""
    probabilities, order = calibrated_order(found, None, calibrator)
    return RankedCandidates(found=found, result=None, probabilities=probabilities, order=order,
                            calibrated=calibrator is not None)
