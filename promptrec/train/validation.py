"""The one validation evaluator of the train wing: ranked lists against each user's held-out
item, scored by `promptrec.metrics` (NDCG@10 the primary metric, recall beside it). Tuning the
ranker (early stopping) scores with it; choosing fusion weights scores the held-out item's
rank with `metrics.score_ranks`, the same definitions; the sequential model's own
early stopping ranks every item in torch and scores the target's rank with the same
`metrics.ndcg_of_ranks` definition."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from promptrec.metrics import VALIDATION_RECALL_KS as RECALL_KS
from promptrec.metrics import ValidationScore, ndcg_at_k, recall_at_k


def score_lists(lists: Iterable[tuple[Sequence[str], str]]) -> ValidationScore:
    """NDCG@10 and Recall@10/20/50 of (ranked item ids, the held-out item) pairs."""
    totals = {"ndcg10": 0.0, **{f"recall{k}": 0.0 for k in RECALL_KS}}
    users = 0
    for ranked, target in lists:
        users += 1
        totals["ndcg10"] += ndcg_at_k(ranked, target, 10)
        for k in RECALL_KS:
            totals[f"recall{k}"] += recall_at_k(ranked, target, k)
    n = max(users, 1)
    return ValidationScore(users=users, **{name: value / n for name, value in totals.items()})


def score_users(ranked: Mapping[str, Sequence[str]], targets: Mapping[str, str]) -> ValidationScore:
    """`score_lists` over users: user → ranked item ids, user → the held-out item."""
    return score_lists((ranked[user], targets[user]) for user in ranked)
