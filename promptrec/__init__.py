"""promptrec: an LLM-prompting recommender with retrieval.

    from promptrec import recommend, Recommender
    recommend("196", k=10)                      # the default Recommender (built on first use)
    rec = Recommender.from_interactions(items, interactions)
"""

from __future__ import annotations

import threading

from promptrec.config import Settings
from promptrec.data.schema import Interaction, Item
from promptrec.recommender import Recommender
from promptrec.retrieval.schema import Candidate, CandidateList
from promptrec.schema import Recommendation, RecommendationList

__all__ = [
    "Candidate",
    "CandidateList",
    "Interaction",
    "Item",
    "Recommendation",
    "RecommendationList",
    "Recommender",
    "Settings",
    "default_recommender",
    "recommend",
]

_default: Recommender | None = None
_default_lock = threading.Lock()


def default_recommender() -> Recommender:
    """The Recommender of the current settings (data set fetched and indexed on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Recommender.from_settings(Settings())
        return _default


def recommend(user_id: str, k: int = 10, **options) -> RecommendationList:
    """Top-k recommendations for a user from the default Recommender (see Recommender.recommend)."""
    return default_recommender().recommend(user_id, k, **options)
