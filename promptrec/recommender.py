"""The Recommender: one object that holds a catalog, the users' histories and the retrieval
index, and answers `candidates(user)` (and, with the ranker, `recommend(user)`)."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from promptrec.config import Settings
from promptrec.data.schema import Interaction, Item, interactions_frame
from promptrec.errors import UnknownItemError, UnknownUserError
from promptrec.retrieval.index import ProgressFn, RetrievalIndex
from promptrec.retrieval.retriever import Retriever
from promptrec.retrieval.schema import CandidateList
from promptrec.schema import Recommendation, RecommendationList

if TYPE_CHECKING:
    from promptrec.explain.conversation import Conversation
    from promptrec.ranker.backends.base import LLMBackend
    from promptrec.ranker.calibration import Calibrator, CalibrationKey
    from promptrec.ranker.reranker import LLMReranker, RerankResult


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
        self._lock = threading.Lock()
        self._backend: LLMBackend | None = None
        self._rerankers: dict[str, LLMReranker] = {}
        self._calibrators: dict[str, Calibrator | None] = {}

    @classmethod
    def from_interactions(
        cls,
        items: Sequence[Item],
        interactions: Sequence[Interaction] | pd.DataFrame,
        settings: Settings | None = None,
        namespace: str = "custom",
        progress: ProgressFn | None = None,
        rebuild: bool = False,
        retrain: bool = False,
    ) -> Recommender:
        """Build (or update) an index from in-memory records and return a Recommender over it.

        The index lives in `settings.index_dir`, or `<cache_dir>/index/<namespace>`; building
        again with the same data re-encodes nothing. The sequential model is trained when the
        index has no checkpoint, or with `retrain`; one for other data is refused.
        """
        settings = settings or Settings()
        if settings.index_dir is None:
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", namespace)
            settings = settings.model_copy(update={"index_dir": settings.cache_dir / "index" / slug})
        from promptrec.data.preprocess import has_time_order

        frame = interactions_frame(interactions)
        histories = histories_from_frame(frame)
        index = RetrievalIndex.build(
            items, histories, settings, namespace, progress=progress, rebuild=rebuild,
            time_ordered=has_time_order(frame), retrain=retrain,
        )
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
        rebuild: bool = False, retrain: bool = False,
    ) -> Recommender:
        """The recommender over the configured named data set (fetched on first use)."""
        from promptrec.data.named import load_named_dataset

        settings = settings or Settings()
        dataset = load_named_dataset(settings.dataset, settings)
        if build:
            return cls.from_interactions(
                dataset.items, dataset.interactions, settings, namespace=settings.dataset,
                progress=progress, rebuild=rebuild, retrain=retrain,
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

    # ------------------------------------------------------------------ rerank and recommend

    @property
    def backend(self) -> LLMBackend:
        """The configured generator, loaded on first use and shared by every call and thread."""
        with self._lock:
            if self._backend is None:
                from promptrec.ranker.factory import make_backend

                self._backend = make_backend(self.settings)
            return self._backend

    def use_backend(self, backend: LLMBackend) -> None:
        """Rerank with an already loaded backend (e.g. one shared by several recommenders)."""
        with self._lock:
            self._backend = backend
            self._rerankers.clear()
            self._calibrators.clear()

    def reranker(self, template: str | None = None) -> LLMReranker:
        """The LLMReranker for a template (default: `settings.ranker.template`)."""
        name = template or self.settings.ranker.template
        backend = self.backend
        with self._lock:
            if name not in self._rerankers:
                from promptrec.ranker.factory import make_reranker

                self._rerankers[name] = make_reranker(self.settings, backend, name)
            return self._rerankers[name]

    def calibration_key(self, reranker: LLMReranker) -> CalibrationKey:
        from promptrec.ranker.calibration import calibration_key

        return calibration_key(reranker, self.settings.encoder)

    def calibration_file(self, reranker: LLMReranker) -> Path:
        """Where the calibration for this template and model lives, beside the index."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{reranker.template.name}-{reranker.backend.model_id}")
        return self.settings.resolved_index_dir() / "calibration" / f"{slug}.json"

    def calibrator(self, reranker: LLMReranker) -> Calibrator | None:
        """The saved calibration for this reranker; None when none was fitted. One fitted for
        another model, template, encoder or strategy raises CalibrationMismatchError."""
        from promptrec.ranker.calibration import Calibrator

        path = self.calibration_file(reranker)
        with self._lock:
            if str(path) not in self._calibrators:
                self._calibrators[str(path)] = (
                    Calibrator.load(path, self.calibration_key(reranker)) if path.is_file() else None
                )
            return self._calibrators[str(path)]

    def rerank(
        self,
        user_id: str,
        *,
        history: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        n_candidates: int | None = None,
        template: str | None = None,
    ) -> tuple[CandidateList, RerankResult]:
        """Retrieve candidates and score them with the LLM (retrieval order if it fails)."""
        found = self.candidates(user_id, n_candidates, where=where, history=history)
        reranker = self.reranker(template)
        result = reranker.run([self.catalog[i] for i in found.history], found)
        return found, result

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        history: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        n_candidates: int | None = None,
        template: str | None = None,
    ) -> RecommendationList:
        """Top-k items for a user: retrieval, LLM rerank, calibrated P(relevant).

        With a matching calibration (`promptrec calibrate`) the order is by probability;
        without one, by the LLM score (probabilities None). If the LLM fails or times out the
        list keeps the retrieval order and says so (`degraded`, `degraded_reason`).
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        started = time.perf_counter()
        found, result = self.rerank(
            user_id, history=history, where=where, n_candidates=n_candidates, template=template
        )
        reranker = self.reranker(template)
        calibrator = self.calibrator(reranker) if self.settings.ranker.calibrate else None
        scores = result.scores_in_input_order()
        items = found.candidates
        if calibrator is not None and items:
            probabilities = calibrator.predict_proba(found, scores).tolist()
            order = sorted(range(len(items)), key=lambda i: (-probabilities[i], i))
        else:
            probabilities = [None] * len(items)
            order = sorted(
                range(len(items)), key=lambda i: (-(scores[i] if scores else 0.0), i)
            ) if scores else list(range(len(items)))
        recommendations = [
            Recommendation(
                item_id=items[i].item_id,
                title=items[i].title,
                rank=rank,
                probability=probabilities[i],
                llm_score=scores[i] if scores else None,
                retrieval_score=items[i].fused_score,
                retrieval_rank=items[i].rank,
            )
            for rank, i in enumerate(order[:k], start=1)
        ]
        return RecommendationList(
            user_id=str(user_id),
            recommendations=recommendations,
            strategy=result.strategy,
            template=result.template_name,
            template_hash=result.template_hash,
            model_id=result.model_id,
            calibrated=calibrator is not None,
            degraded=result.degraded,
            degraded_reason=result.degraded_reason,
            cold_start=found.cold_start,
            latency_s=time.perf_counter() - started,
            prompt_tokens=result.prompt_tokens,
        )

    def fit_calibration(
        self,
        targets: dict[str, str],
        *,
        users: int | None = None,
        seed: int = 0,
        template: str | None = None,
        on_user: Callable[[], None] | None = None,
    ) -> Calibrator:
        """Fit the logistic calibration on held-out items (`targets`: user → the item that
        followed this recommender's histories, e.g. the validation split), on a seeded sample
        of `users` users (all by default). Users whose item was not retrieved still count:
        their candidates are all negatives."""
        from promptrec.ranker.calibration import CalibrationRecord, fit_calibration

        chosen = sorted(u for u in targets if u in self.histories)
        if users is not None and users < len(chosen):
            chosen = sorted(random.Random(seed).sample(chosen, users))
        reranker = self.reranker(template)
        records = []
        for user in chosen:
            found, result = self.rerank(user, template=template)
            records.append(
                CalibrationRecord(
                    candidates=found, scores=result.scores_in_input_order(), relevant_item_id=targets[user]
                )
            )
            if on_user:
                on_user()
        return fit_calibration(records, self.calibration_key(reranker))

    def save_calibration(self, calibrator: Calibrator, template: str | None = None) -> Path:
        """Store a calibration beside this recommender's index, where recommend() finds it."""
        reranker = self.reranker(template)
        calibrator.check_key(self.calibration_key(reranker))
        path = calibrator.save(self.calibration_file(reranker))
        with self._lock:
            self._calibrators.pop(str(path), None)
        return path

    # ------------------------------------------------------------------ explain

    def explain(self, user_id: str, item_id: str, **options: Any) -> Conversation:
        """Why `item_id` for `user_id`: a conversation whose `explanation` holds the answer,
        the evidence it rests on (real history items, shared attributes, the item's scores)
        and how grounding went; `ask(question)` continues it. See promptrec.explain."""
        from promptrec.explain.conversation import explain

        return explain(self, str(user_id), str(item_id), **options)
