"""Fusion weights fitted on held-out items: each source ranks once per user, then every weight
setting of a grid is fused from those rankings (reciprocal-rank fusion, all settings at once:
`fusion.fused_rank_of`) and scored by NDCG@10 (`metrics.score_ranks`).

An index build fits its own weights this way (`RetrievalIndex.build`): the held-out item is each
user's last event, the behaviour vectors, transitions and popularity are refitted without it,
and the sequential model is the index's own (it trains holding out exactly those events)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel

from promptrec.config import RETRIEVAL_SOURCES, RetrievalSettings
from promptrec.metrics import ValidationScore, score_ranks
from promptrec.retrieval.fusion import fused_rank_of

Rankings = dict[str, list[tuple[str, float]]]


class WeightScore(ValidationScore):
    """Retrieval quality of one weight setting (means over users, one held-out item each)."""

    weights: dict[str, float]


class FusionFit(BaseModel):
    """What an index build chose for its fusion weights, and on what; stored in the manifest."""

    fit_key: str  # the settings and data the fit depends on: an unchanged key reuses the fit
    weights: dict[str, float] | None = None  # None: not fitted (`skipped` says why)
    skipped: str | None = None
    users: int = 0  # held-out users scored
    best: WeightScore | None = None
    settings_weights: WeightScore | None = None  # `retrieval.weights` on the same users
    top: list[WeightScore] = []  # the best few settings, best first
    settings_tried: int = 0
    seconds: float = 0.0


def holdout_split(histories: Mapping[str, Sequence[str]]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Every user's last event held out where the history keeps at least two (the sequential
    model's own hold-out, `SequentialModel.fit`): (the log without them, user → held-out item)."""
    log = {u: list(h[:-1]) if len(h) >= 3 else list(h) for u, h in histories.items()}
    targets = {u: h[-1] for u, h in histories.items() if len(h) >= 3}
    return log, targets


def sample_users(users: Sequence[str], n: int, seed: int) -> list[str]:
    """A seeded sample of at most n users, in sorted order."""
    users = sorted(users)
    return sorted(random.Random(seed).sample(users, n)) if n < len(users) else users


def grid_settings(grid: Mapping[str, Sequence[float]], base: Mapping[str, float]) -> list[dict[str, float]]:
    """Every combination of the grid's values (sources outside the grid keep `base`'s weight);
    combinations with no positive weight are left out."""
    names = list(grid)
    out = []
    for combo in itertools.product(*(grid[n] for n in names)):
        weights = {s: float(base.get(s, 0.0)) for s in RETRIEVAL_SOURCES if s not in grid}
        weights.update({n: float(w) for n, w in zip(names, combo)})
        if any(w > 0 for w in weights.values()):
            out.append({s: weights.get(s, 0.0) for s in RETRIEVAL_SOURCES})
    return out


def score_settings(
    rankings: Mapping[str, Rankings], targets: Mapping[str, str], settings: Sequence[Mapping[str, float]], rrf_k: float,
) -> list[WeightScore]:
    """Each weight setting's score over the users of `rankings` (user → each source's ranking,
    as `Retriever.source_rankings` gives it), in the order of `settings`."""
    ranks = np.empty((len(settings), len(rankings)))
    for column, (user, by_source) in enumerate(rankings.items()):
        sources = list(by_source)
        rows = np.array([[w.get(s, 0.0) for s in sources] for w in settings], dtype=np.float64)
        ranked = {s: [i for i, _ in by_source[s]] for s in sources}
        ranks[:, column] = fused_rank_of(ranked, targets[user], rows, rrf_k) if sources else np.inf
    return [WeightScore(weights=dict(w), **score_ranks(ranks[n]).model_dump()) for n, w in enumerate(settings)]


def choose_weights(
    rankings: Mapping[str, Rankings], targets: Mapping[str, str], rs: RetrievalSettings, keep: int = 5,
) -> tuple[WeightScore, WeightScore, list[WeightScore], int]:
    """The grid's best setting by NDCG@10 (ties: `rs.weights` first, then grid order), the score
    of `rs.weights` on the same users, the best `keep` and how many settings were tried."""
    current = {s: float(rs.weights.get(s, 0.0)) for s in RETRIEVAL_SOURCES}
    settings = [current] + [w for w in grid_settings(rs.weight_grid, rs.weights) if w != current]
    scored = score_settings(rankings, targets, settings, rs.rrf_k)
    ordered = sorted(scored, key=lambda s: -s.ndcg10)  # stable: the current weights win a tie
    return ordered[0], scored[0], ordered[:keep], len(settings)


def all_source_rankings(
    source_rankings: Callable[[Sequence[str], int], Rankings],
    histories: Mapping[str, Sequence[str]],
    users: Sequence[str],
    pool: int,
    on_user: Callable[[], None] | None = None,
) -> dict[str, Rankings]:
    """user → every source's top `pool` (history excluded), computed once
    (`source_rankings` is a `Retriever.source_rankings` with every source on)."""
    out = {}
    for user in users:
        out[user] = source_rankings(histories[user], pool)
        if on_user:
            on_user()
    return out
