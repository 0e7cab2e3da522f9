"""Is an explanation faithful to the recommender? Measured counterfactually, as the
explainable-recommendation literature does: remove the history items the explanation cites,
run the served pipeline again (`Recommender.recommend` with that history: retrieval, the
ranker as `ranker.mode` serves it, the calibration) and record how far the explained item
falls, by its rank among the user's candidates and its calibrated probability. Then remove as
many random history items (not the cited ones), a few times: an explanation whose cited items
move the score no more than random ones is not why the recommender chose the item.

    f = measure_faithfulness(rec, "1", "50", ["181", "172"])
    f.lowered, f.cited_drop, f.random_drop
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from promptrec.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.recommender import Recommender


class ItemPlace(BaseModel):
    """Where the explained item stands in the served list for one history."""

    removed: list[str] = Field(default_factory=list)  # history items left out of this history
    rank: int | None  # 1-based, among the user's served candidates; None: no longer retrieved
    probability: float | None  # calibrated P(relevant); 0 when no longer retrieved; None uncalibrated

    @property
    def score(self) -> float:
        """The probability where the list is calibrated, else the reciprocal rank (0 when gone)."""
        if self.probability is not None:
            return self.probability
        return 1.0 / self.rank if self.rank else 0.0


class Faithfulness(BaseModel):
    """How far the explained item falls without the cited history items, against random ones."""

    user_id: str
    item_id: str
    cited: list[str]
    measure: str  # "probability" (calibrated lists) or "reciprocal rank"
    before: ItemPlace
    without_cited: ItemPlace | None = None  # None: the explanation cites no history item
    without_random: list[ItemPlace] = Field(default_factory=list)
    cited_drop: float | None = None  # score before - score without the cited items
    random_drop: float | None = None  # the same, averaged over the random removals
    lowered: bool | None = None  # removing the cited items lowered the item's score


def item_place(rec: Recommender, user_id: str, history: Sequence[str], item_id: str,
               removed: Sequence[str] = ()) -> ItemPlace:
    """The item's rank and probability in the list `recommend()` serves for this history."""
    listed = rec.recommend(user_id, k=rec.settings.n_candidates, history=list(history))
    for r in listed.recommendations:
        if r.item_id == item_id:
            return ItemPlace(removed=list(removed), rank=r.rank, probability=r.probability)
    return ItemPlace(removed=list(removed), rank=None, probability=0.0 if listed.calibrated else None)


def measure_faithfulness(rec: Recommender, user_id: str, item_id: str, cited: Sequence[str], *,
                         trials: int = 3, seed: int = 0) -> Faithfulness:
    """Remove the ``cited`` history items, then ``trials`` times as many random other history
    items, and record the item's place each time (see the module). The random draws are
    seeded by ``seed``, the user and the item."""
    if trials < 1:
        raise InputError(f"trials must be at least 1, got {trials}")
    history = rec.history(user_id)
    unknown = sorted(set(cited) - set(history))
    if unknown:
        raise InputError(f"cited item(s) {unknown} are not in user {user_id}'s history")
    before = item_place(rec, user_id, history, item_id)
    measure = "probability" if before.probability is not None else "reciprocal rank"
    out = Faithfulness(user_id=user_id, item_id=item_id, cited=list(cited), measure=measure, before=before)
    if not cited:
        return out
    gone = set(cited)
    out.without_cited = item_place(rec, user_id, [h for h in history if h not in gone], item_id, sorted(gone))
    others = sorted({h for h in history if h not in gone})
    rng = random.Random(f"{seed}:{user_id}:{item_id}")
    for _ in range(trials if len(others) >= len(gone) else 0):
        drawn = set(rng.sample(others, len(gone)))
        out.without_random.append(item_place(rec, user_id, [h for h in history if h not in drawn], item_id,
                                             sorted(drawn)))
    out.cited_drop = before.score - out.without_cited.score
    if out.without_random:
        out.random_drop = sum(before.score - p.score for p in out.without_random) / len(out.without_random)
    out.lowered = out.without_cited.score < before.score
    return out
