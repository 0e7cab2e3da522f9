"""Fusion of several ranked lists into one (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def reciprocal_rank_fusion(
    ranked: Mapping[str, Sequence[str]],
    weights: Mapping[str, float] | None = None,
    k: float = 60.0,
) -> list[tuple[str, float]]:
    """Weighted reciprocal-rank fusion: score(i) = sum_s w_s / (k + rank_s(i)), ranks 1-based.

    `ranked` maps a source name to its item ids, best first; an item absent from a list gets
    nothing from that source. Ties in the fused score keep the order of first appearance
    (sources in the order given), so the result is deterministic.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    weights = weights or {}
    unknown = set(weights) - set(ranked)
    if unknown:
        raise ValueError(f"weights name unknown source(s): {sorted(unknown)}")
    scores: dict[str, float] = {}
    for source, items in ranked.items():
        weight = weights.get(source, 1.0)
        if weight < 0:
            raise ValueError(f"weight of source {source!r} is negative: {weight}")
        if len(set(items)) != len(items):
            raise ValueError(f"source {source!r} lists an item twice")
        for rank, item in enumerate(items, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    order = {item: n for n, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], order[kv[0]]))


def fused_rank_of(
    ranked: Mapping[str, Sequence[str]],
    target: str,
    weight_rows: np.ndarray,
    k: float = 60.0,
) -> np.ndarray:
    """The 0-based rank of `target` in `reciprocal_rank_fusion(ranked, weights, k)` for each row
    of `weight_rows` (one column per source of `ranked`, in its order), computed for all rows at
    once; `inf` where the target is in no list of a source with weight > 0. A source with weight
    0 is left out, as `Retriever.fuse` leaves it out. The sums run in the same order and with the
    same operations as `reciprocal_rank_fusion`, so scores and ties come out bit for bit equal."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    sources = list(ranked)
    weight_rows = np.atleast_2d(np.asarray(weight_rows, dtype=np.float64))
    if weight_rows.shape[1] != len(sources):
        raise ValueError(f"weight_rows has {weight_rows.shape[1]} columns for {len(sources)} sources")
    if (weight_rows < 0).any():
        raise ValueError("weights must be >= 0")
    items: dict[str, int] = {}
    for source in sources:
        for item in ranked[source]:
            items.setdefault(item, len(items))
    rows = len(weight_rows)
    if target not in items:
        return np.full(rows, np.inf)
    n = len(items)
    scores = np.zeros((rows, n))
    present = np.zeros((rows, n), dtype=bool)
    first = np.full((rows, n), n)  # first appearance among the sources a row uses
    for column, source in enumerate(sources):
        listed = ranked[source]
        if len(set(listed)) != len(listed):
            raise ValueError(f"source {source!r} lists an item twice")
        if not listed:
            continue
        cols = np.fromiter((items[i] for i in listed), dtype=np.int64, count=len(listed))
        ranks = np.arange(1, len(listed) + 1, dtype=np.float64)
        active = weight_rows[:, column] > 0
        contribution = weight_rows[active, column][:, None] / (k + ranks[None, :])
        scores[np.ix_(active, cols)] += contribution
        # An item's first appearance: the running count of distinct items met so far in this
        # row's active sources; with every row using a subset of sources, compute per row.
        new = active[:, None] & ~present[:, cols]
        order = np.cumsum(new, axis=1) - 1
        start = present.sum(axis=1, keepdims=True)
        first[:, cols] = np.where(new, start + order, first[:, cols])
        present[:, cols] |= active[:, None]
    t = items[target]
    out = np.full(rows, np.inf)
    hit = present[:, t]
    target_score = scores[:, t][:, None]
    ahead = present & ((scores > target_score) | ((scores == target_score) & (first < first[:, t][:, None])))
    out[hit] = ahead[hit].sum(axis=1)
    return out
