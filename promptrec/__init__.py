"""promptrec: an LLM-prompting recommender with retrieval.

    from promptrec import recommend, Recommender
    recommend("196", k=10)                      # the default Recommender (built on first use)
    rec = Recommender.from_interactions(items, interactions)

`import promptrec` is light (no torch, chromadb or transformers): the public names below are
imported on first use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from promptrec.lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.config import Settings
    from promptrec.data.schema import Interaction, Item
    from promptrec.recommender import Recommender
    from promptrec.retrieval.schema import Candidate, CandidateList
    from promptrec.schema import Recommendation, RecommendationList

#: Public name → the module that defines it (imported on first access, PEP 562).
_LAZY = {
    "Candidate": "promptrec.retrieval.schema",
    "CandidateList": "promptrec.retrieval.schema",
    "Interaction": "promptrec.data.schema",
    "Item": "promptrec.data.schema",
    "Recommendation": "promptrec.schema",
    "RecommendationList": "promptrec.schema",
    "Recommender": "promptrec.recommender",
    "Settings": "promptrec.config",
}

__all__ = [
    "Candidate",
    "CandidateList",
    "Interaction",
    "Item",
    "Recommendation",
    "RecommendationList",
    "Recommender",
    "Settings",
    "__version__",
    "default_recommender",
    "recommend",
]


_lazy_getattr, __dir__ = lazy_exports(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("promptrec")
        except PackageNotFoundError:  # a checkout on sys.path, not installed
            return "0+unknown"
    return _lazy_getattr(name)


_default: Recommender | None = None
_default_lock = threading.Lock()


def default_recommender() -> Recommender:
    """The Recommender of the current settings (data set fetched and indexed on first use)."""
    from promptrec.config import Settings
    from promptrec.recommender import Recommender

    global _default
    with _default_lock:
        if _default is None:
            _default = Recommender.from_settings(Settings())
        return _default


def recommend(user_id: str, k: int = 10, **options: Any) -> RecommendationList:
    """Top-k recommendations for a user from the default Recommender (see Recommender.recommend)."""
    return default_recommender().recommend(user_id, k, **options)
