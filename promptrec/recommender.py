"""The Recommender: one object that holds a catalog, the users' histories and the retrieval
index, and answers `candidates(user)` (and, with the ranker, `recommend(user)`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from promptrec.config import Settings
from promptrec.data.schema import Interaction, Item, interactions_frame
from promptrec.errors import UnknownItemError, UnknownUserError
from promptrec.retrieval.index import ProgressFn, RetrievalIndex
from promptrec.retrieval.retriever import Retriever
from promptrec.retrieval.schema import CandidateList


def histories_from_frame(frame: pd.DataFrame) -> dict[str, list[str]]:
    """user id → item ids, oldest first, in the project's one order (see `sort_histories`)."""
    from promptrec.data.preprocess import sort_histories

    ordered = sort_histories(frame)
    return {
        str(user): group.tolist()
        for user, group in ordered.groupby("user_id", sort=False)["item_id"]
    }


class Recommender:
    """Candidates (and recommendations) for the users of one interaction log."""

    def __init__(
        self,
        items: Sequence[Item],
        histories: dict[str, list[str]],
        index: RetrievalIndex,
        settings: Settings,
    ):
        self.settings = settings
        self.items = list(items)
        self.catalog = {item.item_id: item for item in self.items}
        self.histories = histories
        self.index = index
        self.retriever = Retriever(index, self.catalog, settings.retrieval)

    @classmethod
    def from_interactions(
        cls,
        items: Sequence[Item],
        interactions: Sequence[Interaction] | pd.DataFrame,
        settings: Settings | None = None,
        namespace: str = "custom",
        progress: ProgressFn | None = None,
        rebuild: bool = False,
    ) -> Recommender:
        """Build (or update) an index from in-memory records and return a Recommender over it.

        The index lives in `settings.index_dir`, or `<cache_dir>/index/<namespace>`; building
        again with the same data re-encodes nothing.
        """
        settings = settings or Settings()
        if settings.index_dir is None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", namespace)
            settings = settings.model_copy(update={"index_dir": settings.cache_dir / "index" / slug})
        histories = histories_from_frame(interactions_frame(interactions))
        index = RetrievalIndex.build(items, histories, settings, namespace, progress=progress, rebuild=rebuild)
        return cls(items, histories, index, settings)

    @classmethod
    def open(
        cls,
        items: Sequence[Item],
        interactions: Sequence[Interaction] | pd.DataFrame,
        settings: Settings,
        namespace: str,
    ) -> Recommender:
        """Open the index built earlier for exactly this data; a stale index is an error."""
        histories = histories_from_frame(interactions_frame(interactions))
        index = RetrievalIndex.open(settings, namespace, items, histories)
        return cls(items, histories, index, settings)

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, build: bool = True, progress: ProgressFn | None = None,
        rebuild: bool = False,
    ) -> Recommender:
        """The recommender over the configured named data set (fetched on first use)."""
        from promptrec.data.named import load_named_dataset

        settings = settings or Settings()
        dataset = load_named_dataset(settings.dataset, settings)
        if build:
            return cls.from_interactions(
                dataset.items, dataset.interactions, settings, namespace=settings.dataset,
                progress=progress, rebuild=rebuild,
            )
        if settings.index_dir is None:
            settings = settings.model_copy(update={"index_dir": settings.resolved_index_dir()})
        return cls.open(dataset.items, dataset.interactions, settings, settings.dataset)

    def history(self, user_id: str) -> list[str]:
        """The user's item ids, oldest first; an unknown user is an error."""
        user_id = str(user_id)
        if user_id not in self.histories:
            raise UnknownUserError(
                f"unknown user {user_id!r}: not in the interaction log "
                f"({len(self.histories)} users; e.g. {', '.join(list(self.histories)[:3])})"
            )
        return self.histories[user_id]

    def item(self, item_id: str) -> Item:
        try:
            return self.catalog[str(item_id)]
        except KeyError:
            raise UnknownItemError(f"unknown item {item_id!r}: not in the catalog ({len(self.catalog)} items)") from None

    def candidates(
        self,
        user_id: str,
        n: int | None = None,
        where: dict[str, Any] | None = None,
        history: Sequence[str] | None = None,
    ) -> CandidateList:
        """Top-n retrieval candidates for a user, their history excluded.

        `history` overrides the stored history (e.g. to evaluate a split); a user with an
        empty history gets the popular items, flagged `cold_start`. `where` is a Chroma
        metadata filter (e.g. `{"genre_Comedy": True}`) applied to every source.
        """
        n = n or self.settings.n_candidates
        if history is None:
            history = self.history(user_id)
        else:
            history = [self.item(i).item_id for i in history]
        found = self.retriever.candidates(history, n, where)
        return CandidateList(
            user_id=str(user_id), candidates=found, history=list(history), cold_start=not history
        )
