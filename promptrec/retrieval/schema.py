"""What retrieval hands to the ranker."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Candidate(BaseModel):
    """One retrieved item: each source's score and rank, and the fused score and rank."""

    item_id: str
    title: str
    text: str  # the item text a prompt shows ("title (year) — genres")
    fused_score: float
    rank: int  # 1-based rank after fusion
    source_scores: dict[str, float] = Field(default_factory=dict)
    source_ranks: dict[str, int] = Field(default_factory=dict)
    popularity: int = 0  # interactions with this item in the index's log


class CandidateList(BaseModel):
    """The candidates for one user, best first."""

    user_id: str
    candidates: list[Candidate]
    history: list[str]  # the user's item ids, oldest first
    cold_start: bool = False  # True: the user has no history; the list is the popular items
