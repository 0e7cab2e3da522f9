"""The rerank view of an LLM ranker, as sentence-transformers' `RerankingEvaluator` reports a
reranker: on the users whose held-out item is among the retrieved candidates, the ranking
quality of the candidates' base (retrieval) order against the reranked order of the same lists,
paired per user.

Users whose target is not among the candidates score 0 in both orders: they add zeros to both
sides of an all-users comparison and only widen its interval. So for every metric that is 0
when the target is missing (NDCG, MRR, recall, precision)

    overall metric = candidate recall x conditional metric

and the view shows the three side by side: candidate recall (the share of users with the
target among the candidates, the ceiling of any reranking), the conditional metric on those
users, and the overall one. The smallest effect a run could detect is its paired interval's
half-width; on all users it is about the conditional half-width times the candidate recall.

Pure functions over per-user rows (dicts with "target", "candidates" in base order and the
reranked list under ``field``), as a run's results.jsonl holds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel

from promptrec import metrics as M
from promptrec.stats import paired_difference

__all__ = ["RerankMetric", "RerankView", "rerank_view"]


class RerankMetric(BaseModel):
    """One metric, base order (A) against reranked order (B)."""

    metric: str  # e.g. "ndcg@10"
    base: float  # conditional: mean over the users with the target among the candidates
    reranked: float
    diff: float  # reranked - base
    low: float  # paired bootstrap interval of diff
    high: float
    p_value: float  # paired permutation test
    detectable: float  # the interval's half-width: the smallest effect this run could see
    overall_base: float  # over every user (= candidate recall x base)
    overall_reranked: float
    overall_low: float  # paired interval of the difference over every user
    overall_high: float
    overall_detectable: float


class RerankView(BaseModel):
    users: int  # every row
    hits: int  # users whose target is among the candidates
    n_candidates: int  # median candidate list length
    candidate_recall: float  # hits / users
    metrics: list[RerankMetric]


def _per_user(lists: Sequence[Sequence[str]], targets: Sequence[str], name: str) -> np.ndarray:
    metric, k = name.split("@")
    fn = M.RANKING_METRICS[metric]
    return np.array([fn(list(ranked), target, int(k)) for ranked, target in zip(lists, targets)], dtype=np.float64)


def rerank_view(
    rows: Sequence[dict[str, Any]],
    metrics: Sequence[str] = ("ndcg@10", "mrr@10"),
    field: str = "ranked",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RerankView:
    """The rerank view of ``rows`` (one per user): base = ``row["candidates"]`` as retrieved,
    reranked = ``row[field]`` (the final list, or "ranked_raw" for the LLM's own order)."""
    if not rows:
        raise ValueError("no rows: the rerank view needs at least one user")
    bad = [r.get("user_id") for r in rows if r.get("candidates") is None or r.get(field) is None]
    if bad:
        raise ValueError(f"{len(bad)} row(s) lack 'candidates' or {field!r} (e.g. user {bad[0]!r}); "
                         "the rerank view is for rerankers")
    targets = [r["target"] for r in rows]
    base_lists = [r["candidates"] for r in rows]
    reranked_lists = [r[field] for r in rows]
    hit = np.array([t in set(c) for t, c in zip(targets, base_lists)], dtype=bool)
    out = []
    for name in metrics:
        base = _per_user(base_lists, targets, name)
        reranked = _per_user(reranked_lists, targets, name)
        overall = paired_difference(base, reranked, resamples, confidence, seed)
        if hit.any():
            cond = paired_difference(base[hit], reranked[hit], resamples, confidence, seed)
            cond_values = dict(base=cond.mean_a, reranked=cond.mean_b, diff=cond.diff, low=cond.low,
                               high=cond.high, p_value=cond.p_value, detectable=cond.half_width)
        else:
            nan = float("nan")
            cond_values = dict(base=nan, reranked=nan, diff=nan, low=nan, high=nan, p_value=nan, detectable=nan)
        out.append(RerankMetric(
            metric=name, **cond_values,
            overall_base=overall.mean_a, overall_reranked=overall.mean_b,
            overall_low=overall.low, overall_high=overall.high, overall_detectable=overall.half_width,
        ))
    return RerankView(
        users=len(rows), hits=int(hit.sum()), n_candidates=int(np.median([len(c) for c in base_lists])),
        candidate_recall=float(hit.mean()), metrics=out,
    )
