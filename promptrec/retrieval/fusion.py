"""Fusion of several ranked lists into one (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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
