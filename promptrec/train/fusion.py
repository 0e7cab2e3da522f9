"""Choosing fusion weights on held-out items: each source ranks once per user, then every
weight combination of a grid is fused from those rankings (reciprocal-rank fusion is cheap)
and scored by NDCG@10. Run it on the validation split, never on test
(`benchmarks/fusion_weights.py`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

from promptrec.config import RETRIEVAL_SOURCES
from promptrec.retrieval.retriever import Retriever
from promptrec.train.validation import ValidationScore, score_users

Rankings = dict[str, list[tuple[str, float]]]


class WeightScore(ValidationScore):
    """Retrieval quality of one weight setting (means over users, one relevant item each)."""

    weights: dict[str, float]


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
    """NDCG@10 and Recall@10/20/50 of the lists fused with `weights` (`train.validation`)."""
    fused = {user: [i for i, _ in retriever.fuse(ranked, bool(histories[user]), weights)[:50]]
             for user, ranked in rankings.items()}
    return WeightScore(weights=dict(weights), **score_users(fused, targets).model_dump())


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
