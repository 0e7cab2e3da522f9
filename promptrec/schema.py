"""What `recommend()` returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class Recommendation(BaseModel):
    """One recommended item with the scores behind its place."""

    item_id: str
    title: str
    rank: int  # 1-based final rank
    probability: float | None  # calibrated P(relevant); None without a matching calibration
    llm_score: float | None  # the strategy's raw score; None when the LLM was not used
    retrieval_score: float  # fused retrieval score
    retrieval_rank: int


class RecommendationList(BaseModel):
    """The top-k for one user, and how it was made."""

    user_id: str
    recommendations: list[Recommendation]
    strategy: str
    template: str
    template_hash: str
    model_id: str
    calibrated: bool
    # "llm": reranked by the generator; "retrieval": ranker.mode = "retrieval", no LLM call
    # (ordered by the calibration of the retrieval features, or in retrieval order)
    mode: Literal["llm", "retrieval"] = "llm"
    mode_reason: str | None = None  # ranker.mode = "auto": the decision and its validation numbers
    degraded: bool = False  # True: the LLM failed or timed out; the order is retrieval's
    degraded_reason: str | None = None
    cold_start: bool = False
    latency_s: float = 0.0
    prompt_tokens: int = 0  # tokens of every prompt sent, each counted whole
    computed_tokens: int = 0  # positions the model actually ran (shared prefix once)
    dtype: str | None = None  # the generator's dtype (ranker.dtype "auto" decides it from the hardware)
