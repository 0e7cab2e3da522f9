"""Candidate retrieval: each source ranks the catalog for a history; the ranks are fused."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from promptrec.config import RETRIEVAL_SOURCES, RetrievalSettings
from promptrec.data.schema import Item
from promptrec.retrieval.fusion import reciprocal_rank_fusion
from promptrec.retrieval.index import RetrievalIndex
from promptrec.retrieval.schema import Candidate
from promptrec.retrieval.sources import recency_weighted_mean


class Retriever:
    """Fuses five sources over one index: the trained sequential model (its encoding of the
    history queried against its item vectors in Chroma; absent when the index has none),
    transitions, behaviour vectors (ALS) and text vectors (searched exactly, or through Chroma's HNSW for a large catalog)
    and popularity."""

    def __init__(self, index: RetrievalIndex, catalog: Mapping[str, Item], settings: RetrievalSettings):
        self.index = index
        self.catalog = catalog
        self.settings = settings

    def with_every_source(self) -> Retriever:
        """This retriever with every source on (weight 1): `source_rankings` then ranks by all of
        them, for fusion weights to be chosen over (`promptrec.retrieval.weights`)."""
        return Retriever(self.index, self.catalog,
                         self.settings.model_copy(update={"weights": dict.fromkeys(RETRIEVAL_SOURCES, 1.0)}))

    def _top(self, scores: np.ndarray, n: int, exclude: set[str], allowed: set[str] | None) -> list[tuple[str, float]]:
        ids = self.index.item_ids
        order = np.argsort(-scores, kind="stable")
        out: list[tuple[str, float]] = []
        for pos in order:
            item_id = ids[pos]
            if item_id in exclude or (allowed is not None and item_id not in allowed):
                continue
            out.append((item_id, float(scores[pos])))
            if len(out) == n:
                break
        return out

    def source_rankings(
        self, history: Sequence[str], pool: int, where: dict[str, Any] | None = None
    ) -> dict[str, list[tuple[str, float]]]:
        """Each active source's top `pool` (item id, score), history excluded."""
        index, rs = self.index, self.settings
        exclude = set(history)
        positions = [index.position[i] for i in history if i in index.position]
        allowed = index.text.ids_matching(where) if where else None
        weights = {s: rs.weights.get(s, 0.0) for s in RETRIEVAL_SOURCES}
        out: dict[str, list[tuple[str, float]]] = {}
        if weights["popularity"] > 0 or not positions:
            out["popularity"] = self._top(index.popularity.astype(np.float64), pool, exclude, allowed)
        if not positions:
            return out
        if weights["sequential"] > 0 and index.sequential_model is not None:
            query = index.sequential_model.encode(history)
            if query is not None:
                out["sequential"] = index.sequential.query(query, pool, exclude, where)
        if weights["transitions"] > 0:
            scores = index.transitions.scores(positions, rs.transition_last_items, rs.transition_recency_decay)
            ranked = self._top(scores, pool, exclude, allowed)
            out["transitions"] = [(i, s) for i, s in ranked if s > 0]
        if weights["behaviour"] > 0:
            vector = index.behaviour_model.user_vector(positions)
            out["behaviour"] = index.behaviour.query(vector, pool, exclude, where)
        if weights["text"] > 0:
            recent = list(history[-rs.text_history_items :])
            search = index.text_search()
            ids, vectors = (search if search is not None else index.text).vectors(recent)
            row = {item_id: n for n, item_id in enumerate(ids)}
            ordered = np.stack([vectors[row[i]] for i in recent if i in row]) if row else vectors
            query = recency_weighted_mean(ordered, rs.text_recency_half_life)
            out["text"] = (search.top(query, pool, exclude, allowed) if search is not None
                           else index.text.query(query, pool, exclude, where))
        return out

    def fuse(
        self, rankings: Mapping[str, Sequence[tuple[str, float]]], has_history: bool,
        weights: Mapping[str, float] | None = None,
    ) -> list[tuple[str, float]]:
        """Fused (item id, score), best first, from `source_rankings` (weights: the settings');
        an empty history gets popularity."""
        if not has_history:
            return list(rankings["popularity"])
        weights = self.settings.weights if weights is None else weights
        active = {s: r for s, r in rankings.items() if weights.get(s, 0.0) > 0}
        return reciprocal_rank_fusion(
            {s: [i for i, _ in r] for s, r in active.items()},
            {s: weights[s] for s in active},
            k=self.settings.rrf_k,
        )

    def _with_new_items(self, fused: list[tuple[str, float]], text: Sequence[tuple[str, float]],
                        n: int) -> list[tuple[str, float]]:
        """``fused`` with places n-k+1..n of a list of n given to the best text matches among the
        items no one has interacted with that are not above them already (k = `new_item_slots`);
        the fused items they displace follow."""
        slots = min(self.settings.new_item_slots, n)
        if not slots or not text:
            return fused
        pop, position = self.index.popularity, self.index.position
        head = fused[: n - slots]
        taken = {i for i, _ in head}
        scores = dict(fused)
        # an item added after the build (no position) has no interactions yet either
        tail = [(i, scores.get(i, 0.0)) for i, _ in text
                if (i not in position or pop[position[i]] == 0) and i not in taken][:slots]
        moved = {i for i, _ in tail}
        return head + tail + [(i, s) for i, s in fused[n - slots:] if i not in moved]

    def candidates(
        self, history: Sequence[str], n: int, where: dict[str, Any] | None = None
    ) -> list[Candidate]:
        """The top-n fused candidates for a history (oldest first); popularity when it is empty."""
        if n <= 0:
            raise ValueError(f"n must be positive, got {n}")
        pool = max(self.settings.pool_size, n)
        rankings = self.source_rankings(history, pool, where)
        fused = self.fuse(rankings, bool(history))
        fused = self._with_new_items(fused, rankings.get("text", []), n)
        scores = {s: dict(r) for s, r in rankings.items()}
        ranks = {s: {i: k for k, (i, _) in enumerate(r, start=1)} for s, r in rankings.items()}
        out = []
        for rank, (item_id, fused_score) in enumerate(fused[:n], start=1):
            item = self.catalog[item_id]
            out.append(
                Candidate(
                    item_id=item_id,
                    title=item.display_title(),
                    text=item.text(),
                    fused_score=fused_score,
                    rank=rank,
                    source_scores={s: v[item_id] for s, v in scores.items() if item_id in v},
                    source_ranks={s: v[item_id] for s, v in ranks.items() if item_id in v},
                    popularity=(int(self.index.popularity[self.index.position[item_id]])
                                if item_id in self.index.position else 0),
                )
            )
        return out
