"""Choosing fusion weights on held-out items: each source ranks once per user, then every
weight combination of a grid is fused from those rankings (reciprocal-rank fusion is cheap)
and scored by NDCG@10. Run it on the validation split, never on test
(`benchmarks/fusion_weights.py`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel

from promptrec.metrics import ndcg_at_k, recall_at_k
from promptrec.config import RETRIEVAL_SOURCES
from promptrec.retrieval.retriever import Retriever

Rankings = dict[str, list[tuple[str, float]]]


class WeightScore(BaseModel):
    """Retrieval quality of one weight setting (means over users, one relevant item each)."""

    weights: dict[str, float]
    users: int
    ndcg10: float
    recall10: float
    recall20: float
    recall50: float


def all_source_rankings(
    retriever: Retriever,
    histories: Mapping[str, Sequence[str]],
    users: Sequence[str],
    pool: int | None = None,
    on_user: Callable[[], None] | None = None,
) -> dict[str, Rankings]:
    """user → every available source's top `pool` (history excluded), computed once."""
    every = Retriever(
        retriever.index, retriever.catalog,
        retriever.settings.model_copy(update={"weights": {s: 1.0 for s in RETRIEVAL_SOURCES}}),
    )
    pool = pool or retriever.settings.pool_size
    out = {}
    for user in users:
        out[user] = every.source_rankings(histories[user], pool)
        if on_user:
            on_user()
    return out


def score_weights(
    retriever: Retriever,
    rankings: Mapping[str, Rankings],
    histories: Mapping[str, Sequence[str]],
    targets: Mapping[str, str],
    weights: Mapping[str, float],
) -> WeightScore:
    """NDCG@10 and Recall@10/20/50 of the lists fused with `weights`."""
    totals = {"ndcg10": 0.0, "recall10": 0.0, "recall20": 0.0, "recall50": 0.0}
    for user, ranked in rankings.items():
        found = [i for i, _ in retriever.fuse(ranked, bool(histories[user]), weights)[:50]]
        target = targets[user]
        totals["ndcg10"] += ndcg_at_k(found, target, 10)
        for k in (10, 20, 50):
            totals[f"recall{k}"] += recall_at_k(found, target, k)
    n = max(len(rankings), 1)
    return WeightScore(weights=dict(weights), users=len(rankings), **{k: v / n for k, v in totals.items()})


def grid_search(
    retriever: Retriever,
    rankings: Mapping[str, Rankings],
    histories: Mapping[str, Sequence[str]],
    targets: Mapping[str, str],
    grid: Mapping[str, Sequence[float]],
) -> list[WeightScore]:
    """Every combination of the grid's weights, best NDCG@10 first (ties: grid order)."""
    names = list(grid)
    scored = [
        score_weights(retriever, rankings, histories, targets, dict(zip(names, combo)))
        for combo in itertools.product(*(grid[n] for n in names))
        if any(combo)
    ]
    return sorted(scored, key=lambda s: -s.ndcg10)
