"""The facts an explanation may rest on, chosen deterministically before any model speaks.

For one (user, item) pair, `build_evidence` gathers, from the user's own history and the
catalog only:

* ``related``: the history items that moved the item's retrieval score most. Three signals
  are computed for every (distinct) history item — text cosine (the stored unit text
  vectors), behaviour cosine (the ALS item factors) and co-occurrence (item-to-item
  transitions, both directions, as fitted on the time-ordered histories) — each turned into a
  ranking, fused by reciprocal rank (the retriever's fusion) and tie-broken by recency, then
  by item id. That shortlists the ``shortlist`` most related items; each is then left out of
  the history in turn and the retriever run again (`score_drops`): the items whose removal
  lowers the item's fused score most are the evidence, relatedness breaking ties. Similarity
  alone picks items the recommender may not have used; the drop is what it did use (the
  faithfulness measure, `promptrec.explain.faithfulness`, checks the served probability).
  ``lead``: how many of them an answer's opening cites, the fewest whose removal together
  moves the item down the candidates (one item rarely does when several carry it).
  Same data, same evidence.
* ``shared``: the item's attributes (each genre, its decade, other catalog attributes) with
  the history items that share them.
* ``scores``: the item's retrieval scores and ranks (each source's, and the fused rank among
  the user's candidates) and, when a recommendation list is given, the ranker's rank, LLM
  score and calibrated probability.

Every piece names real record ids (`Evidence.record_ids`). Nothing here reads another user's
history: the only per-user input is ``rec.history(user_id)`` and that user's candidates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from promptrec.data.schema import Item
from promptrec.retrieval.fusion import reciprocal_rank_fusion
from promptrec.retrieval.relatedness import relatedness

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.recommender import Recommender
    from promptrec.schema import RecommendationList


class ItemRef(BaseModel):
    """A catalog record, as an explanation shows it."""

    item_id: str
    title: str  # display title, "Toy Story (1995)"
    year: int | None = None
    genres: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, item: Item) -> ItemRef:
        return cls(item_id=item.item_id, title=item.display_title(), year=item.year, genres=list(item.genres))


class RelatedItem(ItemRef):
    """A history item related to the explained item, with the signals that relate them."""

    history_position: int  # 1-based position in the user's history, oldest first (last occurrence)
    items_ago: int  # 0 = the user's most recent item
    text_similarity: float  # cosine of the text vectors
    behaviour_similarity: float  # cosine of the ALS item factors
    co_occurrence: float  # transitions[h, item] + transitions[item, h] (damped counts)
    score: float  # fused (reciprocal-rank) relatedness
    # the item's fused retrieval score minus its score with this item left out of the history
    # (0 when the item is no longer retrieved without it: the full score); None: not measured
    score_drop: float | None = None
    shared_genres: list[str] = Field(default_factory=list)
    same_decade: bool = False
    shared_attributes: dict[str, str] = Field(default_factory=dict)


class SharedAttribute(BaseModel):
    """One attribute of the explained item and the history items that have it too."""

    name: str  # "genre", "decade", or a catalog attribute key
    value: str  # "Comedy", "1990s", ...
    item_ids: list[str]  # history items sharing it, most recent first
    count: int
    history_size: int


class ItemScores(BaseModel):
    """The explained item's scores from retrieval and (when known) the ranker."""

    item_id: str
    in_candidates: bool  # among the user's top `pool` fused retrieval candidates
    pool: int  # how many candidates were searched
    retrieval_rank: int | None = None  # 1-based fused rank among the candidates
    fused_score: float | None = None
    source_scores: dict[str, float] = Field(default_factory=dict)
    source_ranks: dict[str, int] = Field(default_factory=dict)
    popularity: int = 0  # users who interacted with the item
    # From a RecommendationList (the ranker), when one was given and holds the item:
    recommended_rank: int | None = None
    recommended_of: int | None = None
    probability: float | None = None
    llm_score: float | None = None
    ranker_model: str | None = None
    ranker_note: str | None = None  # why ranker scores are missing, when they are


class Evidence(BaseModel):
    """Everything an explanation of one item for one user may cite."""

    user_id: str
    item: ItemRef
    history_size: int
    already_in_history: bool  # the user has interacted with the item already
    related: list[RelatedItem]  # most related first
    # How many of `related`, from the first, an answer's lead cites: the fewest whose removal
    # together moves the item down the user's retrieval candidates (all when none does).
    lead: int = 1
    shared: list[SharedAttribute]
    scores: ItemScores

    def record_ids(self) -> set[str]:
        """Every item id this evidence cites (the item, related and attribute-sharing items)."""
        ids = {self.item.item_id, *(r.item_id for r in self.related)}
        for attr in self.shared:
            ids.update(attr.item_ids)
        return ids

    def cited_item_ids(self) -> list[str]:
        """The items a prompt shows by title: the explained item, then the related ones."""
        return [self.item.item_id, *(r.item_id for r in self.related)]

    def history_item_ids(self) -> list[str]:
        return [r.item_id for r in self.related]


def decade(year: int | None) -> str | None:
    return None if year is None else f"{year // 10 * 10}s"


SHORTLIST = 8  # history items whose removal is tried when choosing the evidence


def _retrieval_runs(rec: Recommender, user_id: str, item_id: str,
                    histories: Sequence[Sequence[str]]) -> list[tuple[int | None, float]]:
    """For each history: the item's 1-based fused rank among the user's retrieval candidates and
    its fused score ((None, 0.0): not retrieved). One retriever run per history."""
    pool = max(rec.settings.retrieval.pool_size, rec.settings.n_candidates)
    out = []
    for history in histories:
        found = rec.candidates(user_id, pool, history=history)
        hit = next((c for c in found.candidates if c.item_id == item_id), None)
        out.append((hit.rank, hit.fused_score) if hit is not None else (None, 0.0))
    return out


def _without(history: Sequence[str], removed: Sequence[str]) -> list[str]:
    gone = set(removed)
    return [h for h in history if h not in gone]


def _lead_size(rec: Recommender, user_id: str, item_id: str, history: Sequence[str], chosen: Sequence[str],
               base_rank: int | None, rank_without_first: int | None) -> int:
    """How many of ``chosen`` (the most moving first) an answer's lead cites: the fewest whose
    removal together moves the item down the user's candidates (or out of them); all of them
    when none does. One retriever run per extra item tried."""
    def moved(rank: int | None) -> bool:
        return base_rank is not None and (rank is None or rank > base_rank)

    if not chosen or base_rank is None or moved(rank_without_first):
        return min(1, len(chosen))
    for m in range(2, len(chosen) + 1):
        (rank, _), = _retrieval_runs(rec, user_id, item_id, [_without(history, chosen[:m])])
        if moved(rank):
            return m
    return len(chosen)


def related_history_items(
    rec: Recommender, item_id: str, history: Sequence[str], k: int = 3, *,
    user_id: str | None = None, shortlist: int = SHORTLIST,
) -> list[RelatedItem]:
    """The k history items that explain ``item_id`` best (see the module doc): the ``shortlist``
    most related, ordered by the drop of the item's retrieval score without each (most first),
    when ``user_id`` is given and ``shortlist`` > 0; else the k most related."""
    item = rec.item(item_id)
    # Distinct history items, most recent first (an item seen twice counts at its last position).
    last_pos: dict[str, int] = {}
    for n, h in enumerate(history):
        if h != item.item_id:
            last_pos[h] = n
    recent_first = sorted(last_pos, key=lambda h: -last_pos[h])
    if not recent_first or k <= 0:
        return [], 0
    related = relatedness(rec.index, item.item_id, recent_first)
    text, behaviour, co = related["text"], related["behaviour"], related["co_occurrence"]
    signals = {"text": text, "behaviour": behaviour, "co_occurrence": co}
    rankings: dict[str, list[str]] = {}
    for name, values in signals.items():
        # Stable sort on recency-first input: equal values keep the more recent item first.
        order = sorted(range(len(recent_first)), key=lambda n: -values[n])
        if name == "co_occurrence":
            order = [n for n in order if values[n] > 0]
        rankings[name] = [recent_first[n] for n in order]
    fused = dict(reciprocal_rank_fusion(rankings, k=rec.settings.retrieval.rrf_k))
    index = {h: n for n, h in enumerate(recent_first)}
    by_relatedness = sorted(recent_first, key=lambda h: (-fused.get(h, 0.0), index[h], h))
    drops: dict[str, float] = {}
    if user_id is not None and shortlist > 0:
        listed = by_relatedness[: max(shortlist, k)]
        (base_rank, base), *runs = _retrieval_runs(rec, user_id, item.item_id,
                                                   [history, *(_without(history, [o]) for o in listed)])
        drops = {o: base - score for o, (_, score) in zip(listed, runs)}
        rank_without = {o: rank for o, (rank, _) in zip(listed, runs)}
        place = {h: n for n, h in enumerate(listed)}
        chosen = sorted(listed, key=lambda h: (-round(drops[h], 9), place[h]))[:k]
        lead = _lead_size(rec, user_id, item.item_id, history, chosen, base_rank, rank_without[chosen[0]])
    else:
        chosen = by_relatedness[:k]
        lead = 1
    item_decade = decade(item.year)
    out = []
    for h in chosen:
        other = rec.item(h)
        n = index[h]
        out.append(
            RelatedItem(
                **ItemRef.of(other).model_dump(),
                history_position=last_pos[h] + 1,
                items_ago=len(history) - 1 - last_pos[h],
                text_similarity=round(float(text[n]), 4),
                behaviour_similarity=round(float(behaviour[n]), 4),
                co_occurrence=round(float(co[n]), 4),
                score=round(float(fused.get(h, 0.0)), 6),
                score_drop=round(drops[h], 6) if h in drops else None,
                shared_genres=[g for g in item.genres if g in other.genres],
                same_decade=item_decade is not None and decade(other.year) == item_decade,
                shared_attributes={
                    key: value for key, value in sorted(item.attributes.items()) if other.attributes.get(key) == value
                },
            )
        )
    return out, lead


def shared_attributes(rec: Recommender, item_id: str, history: Sequence[str]) -> list[SharedAttribute]:
    """Each attribute of the item (genres, decade, catalog attributes) with the history items sharing it."""
    item = rec.item(item_id)
    recent_first: list[str] = []
    seen: set[str] = set()
    for h in reversed(history):
        if h not in seen and h != item.item_id:
            seen.add(h)
            recent_first.append(h)
    size = len(recent_first)
    others = [rec.item(h) for h in recent_first]
    out: list[SharedAttribute] = []

    def add(name: str, value: str, matches: list[str]) -> None:
        out.append(SharedAttribute(name=name, value=value, item_ids=matches, count=len(matches), history_size=size))

    for genre in item.genres:
        add("genre", genre, [o.item_id for o in others if genre in o.genres])
    item_decade = decade(item.year)
    if item_decade is not None:
        add("decade", item_decade, [o.item_id for o in others if decade(o.year) == item_decade])
    for key, value in sorted(item.attributes.items()):
        add(key, value, [o.item_id for o in others if o.attributes.get(key) == value])
    return out


def item_scores(
    rec: Recommender,
    user_id: str,
    item_id: str,
    recommendations: RecommendationList | None = None,
    pool: int | None = None,
    ranker_note: str | None = None,
) -> ItemScores:
    """The item's retrieval scores among the user's candidates, and the ranker's when given."""
    item = rec.item(item_id)
    pool = pool or max(rec.settings.retrieval.pool_size, rec.settings.n_candidates)
    popularity = rec.index.item_popularity(item.item_id)
    found = rec.candidates(user_id, pool)
    scores: dict[str, Any] = {"item_id": item.item_id, "in_candidates": False, "pool": pool, "popularity": popularity}
    for cand in found.candidates:
        if cand.item_id == item.item_id:
            scores.update(
                in_candidates=True,
                retrieval_rank=cand.rank,
                fused_score=round(cand.fused_score, 6),
                source_scores={k: round(v, 4) for k, v in sorted(cand.source_scores.items())},
                source_ranks=dict(sorted(cand.source_ranks.items())),
            )
            break
    if recommendations is not None:
        scores["ranker_model"] = recommendations.model_id
        for rec_item in recommendations.recommendations:
            if rec_item.item_id == item.item_id:
                scores.update(
                    recommended_rank=rec_item.rank,
                    recommended_of=len(recommendations.recommendations),
                    probability=rec_item.probability,
                    llm_score=rec_item.llm_score,
                )
                break
        else:
            ranker_note = ranker_note or "not in the ranked list"
        if recommendations.degraded and ranker_note is None:
            ranker_note = f"the ranker fell back to retrieval order ({recommendations.degraded_reason})"
    scores["ranker_note"] = ranker_note
    return ItemScores(**scores)


def build_evidence(
    rec: Recommender,
    user_id: str,
    item_id: str,
    *,
    k: int = 3,
    recommendations: RecommendationList | None = None,
    ranker_note: str | None = None,
    shortlist: int = SHORTLIST,
) -> Evidence:
    """The evidence for explaining ``item_id`` to ``user_id`` (unknown ids raise
    `UnknownUserError` / `UnknownItemError`); ``shortlist`` 0 chooses the related history
    items by relatedness alone, without the leave-one-out retrieval runs."""
    user_id = str(user_id)
    history = rec.history(user_id)
    item = rec.item(item_id)
    related, lead = related_history_items(rec, item.item_id, history, k, user_id=user_id, shortlist=shortlist)
    return Evidence(
        user_id=user_id,
        item=ItemRef.of(item),
        history_size=len(set(history)),
        already_in_history=item.item_id in set(history),
        related=related,
        lead=lead,
        shared=shared_attributes(rec, item.item_id, history),
        scores=item_scores(rec, user_id, item.item_id, recommendations, ranker_note=ranker_note),
    )
