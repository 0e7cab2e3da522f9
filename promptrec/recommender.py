"""The Recommender: one object that holds a catalog, the users' histories and the retrieval
index, and answers `candidates(user)` (and, with the ranker, `recommend(user)`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from promptrec.config import Settings, SplitSettings
from promptrec.data.schema import Interaction, Item, interactions_frame, items_for_domain
from promptrec.errors import FilterError, InputError, PromptrecError, UnknownItemError, UnknownUserError
from promptrec.paths import slug
from promptrec.retrieval.index import ProgressFn, RetrievalIndex
from promptrec.retrieval.retriever import Retriever
from promptrec.retrieval.schema import CandidateList
from promptrec.schema import RecommendationList
from promptrec.store import LiveStore
from promptrec.store.events import (
    ErasureReceipt,
    IngestReceipt,
    LiveCatalog,
    checked_row,
    live_store_url,
    merged_log,
)

if TYPE_CHECKING:
    from promptrec.pipeline import RankedCandidates
    from promptrec.ranker.backends.base import LLMBackend
    from promptrec.ranker.calibration import Calibrator, CalibrationKey, CalibrationRecord
    from promptrec.ranker.mode import ModeDecision
    from promptrec.ranker.reranker import LLMReranker, RerankResult


def histories_from_frame(frame: pd.DataFrame, split: SplitSettings | None = None) -> dict[str, list[str]]:
    """user id → item ids, oldest first, in the project's one order (see `sort_histories`),
    same-timestamp ties by `split`'s tie rule (default: settings' default, "id")."""
    from promptrec.data.preprocess import sort_histories

    split = split or SplitSettings()
    ordered = sort_histories(frame, split.tie_rule, split.tie_seed)
    return {
        str(user): group.tolist()
        for user, group in ordered.groupby("user_id", sort=False)["item_id"]
    }


def prepared_frame(interactions: Sequence[Interaction] | pd.DataFrame, settings: Settings,
                   name: str = "interactions") -> pd.DataFrame:
    """Records or a frame after the one preprocessing path (`prepare_interactions`: repeated
    (user, item) rows removed, the configured rating threshold), as named data sets get."""
    from promptrec.data.preprocess import prepare_interactions

    return prepare_interactions(interactions_frame(interactions), settings.min_rating, name)


def _for_order(settings: Settings, frame: pd.DataFrame) -> tuple[Settings, str]:
    """Order-free logs (no timestamps, or all equal) have no transitions: their histories are
    in item id order only, so the transitions source is switched off. Returns the settings to
    use and the history order recorded in the index manifest ("time" or "none")."""
    from promptrec.data.preprocess import is_order_free

    if not is_order_free(frame):
        return settings, "time"
    weights = dict(settings.retrieval.weights)
    if weights.get("transitions", 0.0) == 0.0:
        return settings, "none"
    weights["transitions"] = 0.0
    retrieval = settings.retrieval.model_copy(update={"weights": weights})
    return settings.model_copy(update={"retrieval": retrieval}), "none"


def _as_built(settings: Settings, items: Sequence[Item], interactions: Any, store: LiveStore) -> tuple[Sequence[Item], Any]:
    """The data the served index version was built from: these records plus the live store as
    that build read it (its manifest's mark)."""
    from promptrec.retrieval.index import read_version_manifest

    built = read_version_manifest(settings.index_layout().live())
    if built is None:
        return items, interactions
    items, interactions, _ = merged_log(items, interactions, store, (built.store_seq, built.store_until))
    return items, interactions


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
        self.domain = settings.resolved_domain()
        self.items = items_for_domain(list(items), self.domain.has_year)
        self.catalog: dict[str, Item] = {item.item_id: item for item in self.items}
        self.histories = histories
        self.index = index
        # The index's fitted fusion weights, unless the settings pin their own.
        weights = index.served_weights(settings.retrieval) if index is not None else settings.retrieval.weights
        served = settings.retrieval.model_copy(update={"weights": weights})
        self.retriever = Retriever(index, self.catalog, served)
        self._lock = threading.Lock()
        self._backend: LLMBackend | None = None
        self._owns_backend = False  # close() closes only a backend this recommender loaded
        self._explainer: LLMBackend | None = None  # `explain.generator`, when it is another model
        self._rerankers: dict[str, LLMReranker] = {}
        self._calibrators: dict[str, Calibrator | None] = {}
        self._live: LiveStore | None = None
        self.live_store()  # when there is one, items added after the build are found through it
        # The data the index was built from, before the live store's events and items joined it:
        # (items, interactions), or a function loading them; what `retrained` and `reopened` merge
        # the store into. None: unknown (the recommender cannot retrain itself).
        self._source: tuple[Sequence[Item], Any] | Callable[[], tuple[Sequence[Item], Any]] | None = None

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
        store_mark: tuple[int, float] = (0, 0.0),
    ) -> Recommender:
        """Build (or update) an index from in-memory records and return a Recommender over it.

        The index lives in `settings.index_dir`, or `<cache_dir>/index/<namespace>`; building
        again with the same data re-encodes nothing. The sequential model is trained when the
        index has no checkpoint, or with `retrain`; one for other data is refused.
        """
        settings = settings or Settings()
        given_items = items
        if settings.index_dir is None:
            settings = settings.model_copy(update={"index_dir": settings.cache_dir / "index" / slug(namespace)})
        frame = prepared_frame(interactions, settings, namespace)
        settings, order = _for_order(settings, frame)
        items = items_for_domain(list(items), settings.resolved_domain().has_year)
        histories = histories_from_frame(frame, settings.split)
        index = RetrievalIndex.build(items, histories, settings, namespace, progress=progress, rebuild=rebuild,
                                     history_order=order, retrain=retrain, store_mark=store_mark)
        rec = cls(items, histories, index, settings)
        rec._source = (given_items, interactions) if store_mark == (0, 0.0) else None
        return rec

    @classmethod
    def open(
        cls,
        items: Sequence[Item],
        interactions: Sequence[Interaction] | pd.DataFrame,
        settings: Settings,
        namespace: str,
    ) -> Recommender:
        """Open the index built earlier for exactly this data; a stale index is an error."""
        frame = prepared_frame(interactions, settings, namespace)
        settings, _ = _for_order(settings, frame)
        items = items_for_domain(list(items), settings.resolved_domain().has_year)
        histories = histories_from_frame(frame, settings.split)
        given_items = items
        index = RetrievalIndex.open(settings, namespace, items, histories)
        rec = cls(items, histories, index, settings)
        if index.manifest.store_seq == 0 and index.manifest.store_until == 0.0:
            rec._source = (given_items, interactions)
        return rec

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, build: bool = True, progress: ProgressFn | None = None,
        rebuild: bool = False, retrain: bool = False,
    ) -> Recommender:
        """The recommender over the configured data: the `[data]` files, or the named data set
        (fetched on first use)."""
        from promptrec.data.named import load_dataset

        settings = settings or Settings()
        dataset = load_dataset(settings)
        namespace = settings.dataset_name()
        items, interactions, mark = dataset.items, dataset.interactions, (0, 0.0)
        url = live_store_url(settings)
        store = LiveStore(url) if url is not None else None
        try:
            if build:  # the events, items and erasures written through the API join the build
                if store is not None:
                    items, interactions, mark = merged_log(items, interactions, store)
                rec = cls.from_interactions(items, interactions, settings, namespace=namespace,
                                            progress=progress, rebuild=rebuild, retrain=retrain, store_mark=mark)
            else:
                if settings.index_dir is None:
                    settings = settings.model_copy(update={"index_dir": settings.resolved_index_dir()})
                if store is not None:  # the data the served version was built from
                    items, interactions = _as_built(settings, items, interactions, store)
                rec = cls.open(items, interactions, settings, namespace)
        finally:
            if store is not None:
                store.close()

        def reload() -> tuple[Sequence[Item], Any]:
            data = load_dataset(settings)
            return data.items, data.interactions

        rec._source = reload
        return rec

    def retrained(self, progress: ProgressFn | None = None) -> Recommender:
        """Train the sequential model again and refit the index on the data this recommender
        was built from plus the live store (every stored event and item, the erased users left
        out), as a new index version; returns the Recommender over it. This one goes on serving
        the old version (`promptrec train retriever` does the same from the settings)."""
        items, interactions = self._base_data()
        mark = (0, 0.0)
        store = self.live_store()
        if store is not None:
            items, interactions, mark = merged_log(items, interactions, store)
        rec = Recommender.from_interactions(items, interactions, self.settings, self.index.manifest.namespace,
                                            progress=progress, retrain=True, store_mark=mark)
        rec._source = self._source
        return rec

    def _base_data(self) -> tuple[Sequence[Item], Any]:
        if self._source is None:
            raise PromptrecError("this recommender does not know the data its index was built from (it was "
                                 "opened on data that already held live-store events): retrain with "
                                 "`promptrec train retriever`")
        return self._source() if callable(self._source) else self._source

    def reopened(self) -> Recommender:
        """This recommender over the index version served now (after a build switched to a new
        one): the same data when the new version was built for it, else the data loaded again
        from the settings. The loaded generator (and its ownership) moves to the new recommender."""
        from promptrec.errors import IndexMismatchError

        try:
            index = RetrievalIndex.open(self.settings, self.index.manifest.namespace, self.items, self.histories)
            rec = Recommender(self.items, self.histories, index, self.settings)
            rec._source = self._source
        except IndexMismatchError:  # built for a changed catalog or log (or the live store's part of it)
            if self._source is None:
                rec = Recommender.from_settings(self.settings, build=False)
            else:
                items, interactions = self._base_data()
                store = self.live_store()
                if store is not None:
                    items, interactions = _as_built(self.settings, items, interactions, store)
                rec = Recommender.open(items, interactions, self.settings, self.index.manifest.namespace)
                rec._source = self._source
        with self._lock:
            rec._backend, rec._owns_backend = self._backend, self._owns_backend
            self._owns_backend = False
        return rec

    @property
    def served_settings(self) -> Settings:
        """The settings with the fusion weights this recommender serves (the index's fitted ones,
        unless pinned): what a calibration fitted on its candidates is keyed by."""
        return self.settings.model_copy(update={"retrieval": self.retriever.settings})

    def history(self, user_id: str) -> list[str]:
        """The user's item ids, oldest first: the built log's, then the events written to the live
        store since the build (read now, so an acknowledged event counts at once); an erased
        user's built history is gone. An unknown user is an error."""
        user_id = str(user_id)
        built = self.histories.get(user_id)
        store = self.live_store()
        erased = False
        if store is not None:
            if built is not None and store.is_erased(user_id):
                built, erased = None, True
            after = self.index.manifest.store_seq if self.index is not None else 0
            low = self.settings.min_rating
            live = [e["item_id"] for e in store.user_events(user_id, after)
                    if low is None or e["rating"] is None or e["rating"] >= low]
            if live:
                return [*(built or []), *live]
        if built is None:
            if erased:
                raise UnknownUserError(f"unknown user {user_id!r}: the user was erased (forget_user)")
            raise UnknownUserError(
                f"unknown user {user_id!r}: not in the interaction log "
                f"({len(self.histories)} users; e.g. {', '.join(list(self.histories)[:3])})"
            )
        return built

    # ------------------------------------------------------------------ the live store
    def live_store(self, create: bool = False) -> LiveStore | None:
        """The live store (`store.url`, else SQLite in the index folder); None when the embedded
        one was never written and ``create`` is false."""
        if self._live is None:
            url = live_store_url(self.settings, create)
            if url is None:
                return None
            with self._lock:
                if self._live is None:
                    self._live = LiveStore(url)
            if not isinstance(self.catalog, LiveCatalog):
                self.catalog = LiveCatalog(self.catalog, self._live)
                self.retriever.catalog = self.catalog
                if self.index is not None:
                    self.index.attach_store(self._live)
        return self._live

    def add_interactions(self, events: Sequence[Interaction | Mapping[str, Any]]) -> IngestReceipt:
        """Write events to the live store (one transaction: all or none) and return once they
        are durable; each user's next `recommend()` reads them. A row that is not an event, or
        whose item is in no catalog, is refused with its position and field, and nothing is written."""
        checked = [checked_row(Interaction, row, n, "event") for n, row in enumerate(events)]
        for n, event in enumerate(checked):
            if event.item_id not in self.catalog:
                raise UnknownItemError(f"event {n}: item_id {event.item_id!r} is in no catalog "
                                       f"(add it first with add_items / POST /items); nothing was written")
        first, last = self.live_store(create=True).add_events(checked)
        return IngestReceipt(accepted=len(checked), first_seq=first, last_seq=last)

    def add_items(self, items: Sequence[Item | Mapping[str, Any]]) -> IngestReceipt:
        """Write new or changed catalog entries to the live store and upsert their text vectors,
        so the text source can retrieve them at once (the trained sources learn them at the next
        build). A malformed entry is refused with its position and field; nothing is written."""
        checked = [checked_row(Item, row, n, "item") for n, row in enumerate(items)]
        checked = items_for_domain(checked, self.domain.has_year)
        store = self.live_store(create=True)
        self.index.upsert_text(checked)
        store.put_items(checked)
        for item in checked:
            self.catalog[item.item_id] = item
        return IngestReceipt(accepted=len(checked))

    def forget_user(self, user_id: str) -> ErasureReceipt:
        """Erase a user: their stored events are deleted, their built history is hidden from now
        on, and the next build (`promptrec index`) leaves their events out."""
        user_id = str(user_id)
        self.history(user_id)  # an unknown user is an error
        deleted = self.live_store(create=True).erase_user(user_id)
        return ErasureReceipt(user_id=user_id, events_deleted=deleted,
                              note="the user's events are deleted from the live store and their history is "
                                   "hidden; the next index build leaves them out of training")

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
        n = self.settings.n_candidates if n is None else n
        if not isinstance(n, int) or n <= 0:
            raise InputError(f"n (the number of candidates) must be a positive integer, got {n!r}")
        if where:
            self.check_filter(where)
        if history is None:
            history = self.history(user_id)
        else:
            history = [self.item(i).item_id for i in history]
        found = self.retriever.candidates(history, n, where)
        return CandidateList(
            user_id=str(user_id), candidates=found, history=list(history), cold_start=not history
        )

    def check_filter(self, where: dict[str, Any]) -> None:
        """Raise a PromptrecError when a metadata filter matches no item of the catalog (a typo such
        as ``genre_comedy`` for ``genre_Comedy`` would otherwise give an empty list), or is invalid."""
        if self.index.text.ids_matching(where):
            return
        keys = sorted({k for item in self.items for k in item.metadata()})
        wanted = [k for k in _filter_keys(where)]
        hints = [f"{w!r} → did you mean {k!r}?" for w in wanted if w not in keys
                 for k in keys if k.lower() == w.lower()]
        raise FilterError(
            f"the filter {where!r} matches no item of the catalog"
            + (f" ({'; '.join(hints)})" if hints else f"; metadata keys: {', '.join(keys[:30])}")
        )

    # ------------------------------------------------------------------ rerank and recommend

    @property
    def backend(self) -> LLMBackend:
        """The configured generator, loaded on first use and shared by every call and thread."""
        with self._lock:
            if self._backend is None:
                from promptrec.ranker.factory import make_backend

                self._backend = make_backend(self.settings)
                self._owns_backend = True
            return self._backend

    @property
    def explainer(self) -> LLMBackend:
        """The generator that answers "why this item?": `explain.generator` when it names another
        model than the ranker's (loaded on first use, without the ranker's adapter), else `backend`."""
        name = self.settings.explain.generator
        if name is None or name == self.settings.generator:
            return self.backend
        with self._lock:
            if self._explainer is None:
                from promptrec.ranker.factory import make_backend

                ranker = self.settings.ranker.model_copy(update={"adapter": "none"})
                self._explainer = make_backend(self.settings.model_copy(update={"generator": name, "ranker": ranker}))
            return self._explainer

    def use_backend(self, backend: LLMBackend) -> None:
        """Rerank with an already loaded backend (e.g. one shared by several recommenders)."""
        with self._lock:
            self._backend = backend
            self._owns_backend = False
            self._rerankers.clear()
            self._calibrators.clear()

    def reranker(self, template: str | None = None, orders: int | None = None) -> LLMReranker:
        """The LLMReranker for a template (default: `settings.ranker.template`); ``orders``
        overrides `ranker.permutations` (what an auto decision for fewer orders serves)."""
        name = template or self.settings.ranker.template
        backend = self.backend
        cache = name if orders is None else f"{name}#orders={orders}"
        with self._lock:
            if cache not in self._rerankers:
                from promptrec.ranker.factory import make_reranker

                settings = self.settings
                if orders is not None:
                    ranker = settings.ranker.model_copy(update={"permutations": orders})
                    settings = settings.model_copy(update={"ranker": ranker})
                self._rerankers[cache] = make_reranker(settings, backend, name)
            return self._rerankers[cache]

    def calibration_key(self, reranker: LLMReranker, n_candidates: int | None = None) -> CalibrationKey:
        from promptrec.ranker.calibration import calibration_key

        return calibration_key(reranker, self.served_settings, n_candidates)

    def calibration_file(self, reranker: LLMReranker) -> Path:
        """Where the calibration for this template and model lives, beside the index."""
        return self.settings.index_layout().calibration(reranker.template.name, reranker.backend.model_id)

    def calibrator(self, reranker: LLMReranker, n_candidates: int | None = None) -> Calibrator | None:
        """The saved calibration for this reranker; None when none was fitted. One fitted for
        another model, template, encoder, strategy, list length or retrieval setup raises
        CalibrationMismatchError."""
        from promptrec.ranker.calibration import Calibrator

        path = self.calibration_file(reranker)
        key = self.calibration_key(reranker, n_candidates)
        with self._lock:
            if str(path) not in self._calibrators:
                self._calibrators[str(path)] = Calibrator.load(path) if path.is_file() else None
            calibrator = self._calibrators[str(path)]
        if calibrator is not None:
            calibrator.check_key(key, path)
        return calibrator

    def rerank(
        self,
        user_id: str,
        *,
        history: Sequence[str] | None = None,
        where: dict[str, Any] | None = None,
        n_candidates: int | None = None,
        template: str | None = None,
        orders: int | None = None,
    ) -> tuple[CandidateList, RerankResult]:
        """Retrieve candidates and score them with the LLM (retrieval order if it fails);
        ``orders`` overrides `ranker.permutations`."""
        found = self.candidates(user_id, n_candidates, where=where, history=history)
        reranker = self.reranker(template, orders)
        result = reranker.run([self.catalog[i] for i in found.history], found)
        return found, result

    def rerank_many(
        self,
        user_ids: Sequence[str],
        *,
        histories: Sequence[Sequence[str]] | None = None,
        template: str | None = None,
    ) -> list[tuple[CandidateList, RerankResult]]:
        """`rerank` for several users (their stored histories, or ``histories``) in one grouped
        LLM call: the vLLM backends batch the users; on CPU transformers it equals calling
        `rerank` in turn."""
        given = [None] * len(user_ids) if histories is None else list(histories)
        found = [self.candidates(u, history=h) for u, h in zip(user_ids, given, strict=True)]
        reranker = self.reranker(template)
        results = reranker.run_many([([self.catalog[i] for i in f.history], f) for f in found])
        return list(zip(found, results))

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
        return self._recommend_group([user_id], k, histories=[history], where=where,
                                     n_candidates=n_candidates, template=template)[0]

    def recommend_many(
        self,
        user_ids: Sequence[str],
        k: int = 10,
        *,
        n_candidates: int | None = None,
        template: str | None = None,
    ) -> list[RecommendationList]:
        """`recommend` for several users with their stored histories, the LLM called once for the
        group (the vLLM backends batch it; on CPU transformers the users run in turn). Each list
        equals what `recommend` returns for its user; ``latency_s`` is the group's time shared."""
        return self._recommend_group(list(user_ids), k, histories=[None] * len(user_ids),
                                     n_candidates=n_candidates, template=template)

    def _recommend_group(
        self,
        user_ids: list[str],
        k: int,
        *,
        histories: list[Sequence[str] | None],
        where: dict[str, Any] | None = None,
        n_candidates: int | None = None,
        template: str | None = None,
    ) -> list[RecommendationList]:
        if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
            raise InputError(f"k (the number of recommendations) must be positive, got {k!r}")
        if not user_ids:
            return []
        started = time.perf_counter()
        mode, reason, decision = self.settings.ranker.mode, None, None
        if mode == "auto":
            decision = self.mode_decision(self.reranker(template), n_candidates)
            mode = decision.mode if decision is not None else "llm"
            reason = decision.reason if decision is not None else (
                "no ranker.mode = \"auto\" decision yet: serving the LLM rerank; run `promptrec calibrate` to decide")
        orders = decision.orders if decision is not None else None
        found = [self.candidates(u, n_candidates, where=where, history=h) for u, h in zip(user_ids, histories, strict=True)]
        if mode == "retrieval":
            ranked = [self.rank_retrieval(f, n_candidates) for f in found]
        else:
            from promptrec.pipeline import rank_candidates

            reranker = self.reranker(template, orders)
            results = reranker.run_many([([self.catalog[i] for i in f.history], f) for f in found])
            calibrator = None
            if self.settings.ranker.calibrate:
                # an auto decision for fewer orders carries the calibration fitted for them
                if orders is None:
                    calibrator = self.calibrator(self.reranker(template), n_candidates)
                else:
                    calibrator = decision.calibration
                    calibrator.check_key(self.calibration_key(reranker, n_candidates),
                                         self.mode_decision_file(self.reranker(template)))
            ranked = [rank_candidates(f, r, calibrator) for f, r in zip(found, results, strict=True)]
        latency = (time.perf_counter() - started) / len(user_ids)
        lists = [r.recommendation_list(k, latency_s=latency) for r in ranked]
        return [listed.model_copy(update={"mode_reason": reason}) for listed in lists] if reason else lists

    def mode_decision_file(self, reranker: LLMReranker) -> Path:
        """Where the ``ranker.mode = "auto"`` decision for this template and model lives."""
        return self.settings.index_layout().mode_decision(reranker.template.name, reranker.backend.model_id)

    def mode_decision(self, reranker: LLMReranker, n_candidates: int | None = None) -> ModeDecision | None:
        """The saved auto-mode decision (None when none was made); one made for another model,
        template or retrieval setup raises CalibrationMismatchError."""
        from promptrec.ranker.mode import ModeDecision

        path = self.mode_decision_file(reranker)
        with self._lock:
            if str(path) not in self._calibrators:
                self._calibrators[str(path)] = ModeDecision.load(path) if path.is_file() else None
            decision = self._calibrators[str(path)]
        if decision is not None:
            decision.check_key(self.calibration_key(reranker, n_candidates), path)
        return decision

    def decide_mode(self, records: Sequence[CalibrationRecord], *, template: str | None = None, seed: int = 0,
                    l2: float = 1e-4) -> ModeDecision:
        """Decide ``ranker.mode = "auto"`` on calibration records (`calibration_records` of
        validation users): the LLM only where it beats the calibrated retrieval features."""
        from promptrec.ranker.mode import decide_mode

        return decide_mode(records, self.calibration_key(self.reranker(template)), self.served_settings, seed=seed,
                           l2=l2)

    def save_mode_decision(self, decision: ModeDecision, template: str | None = None) -> Path:
        """Store an auto-mode decision beside this recommender's index, where recommend() finds it."""
        reranker = self.reranker(template)
        decision.check_key(self.calibration_key(reranker), "the decision")
        path = decision.save(self.mode_decision_file(reranker))
        with self._lock:
            self._calibrators.pop(str(path), None)
        return path

    def rank_retrieval(self, found: CandidateList, n_candidates: int | None = None) -> RankedCandidates:
        """One user's candidates ordered without the LLM, as ``ranker.mode = "retrieval"`` serves
        them: by the retrieval calibration (`fit_retrieval_calibration`) when one matches, else
        in retrieval order."""
        from promptrec.pipeline import rank_retrieval

        calibrator = self.retrieval_calibrator(n_candidates) if self.settings.ranker.calibrate else None
        return rank_retrieval(found, calibrator)

    def retrieval_calibration_file(self) -> Path:
        """Where the calibration of the retrieval features alone lives, beside the index."""
        from promptrec.ranker.calibration import RETRIEVAL_MODE

        return self.settings.index_layout().calibration(RETRIEVAL_MODE, "none")

    def retrieval_calibrator(self, n_candidates: int | None = None) -> Calibrator | None:
        """The saved calibration of the retrieval features (None when none was fitted); one
        fitted for another encoder, list length or retrieval setup raises CalibrationMismatchError."""
        from promptrec.ranker.calibration import Calibrator, retrieval_calibration_key

        path = self.retrieval_calibration_file()
        with self._lock:
            if str(path) not in self._calibrators:
                self._calibrators[str(path)] = Calibrator.load(path) if path.is_file() else None
            calibrator = self._calibrators[str(path)]
        if calibrator is not None:
            calibrator.check_key(retrieval_calibration_key(self.served_settings, n_candidates), path)
        return calibrator

    def fit_retrieval_calibration(self, targets: dict[str, str], *, users: int | str | None = None, seed: int = 0,
                                  l2: float = 1e-4) -> Calibrator:
        """Fit the calibration of the retrieval features alone (no LLM: seconds) on held-out items,
        on the same seeded sample of users as `fit_calibration`."""
        from promptrec.ranker.calibration import fit_retrieval_calibration, retrieval_calibration_key

        lists = [(self.candidates(u), item) for u, item in self.calibration_targets(targets, users, seed).items()]
        return fit_retrieval_calibration(lists, retrieval_calibration_key(self.served_settings), l2=l2)

    def save_retrieval_calibration(self, calibrator: Calibrator) -> Path:
        """Store a retrieval calibration beside this recommender's index, where recommend() finds it."""
        from promptrec.ranker.calibration import retrieval_calibration_key

        calibrator.check_key(retrieval_calibration_key(self.served_settings))
        path = calibrator.save(self.retrieval_calibration_file())
        with self._lock:
            self._calibrators.pop(str(path), None)
        return path

    def calibration_records(
        self,
        targets: Mapping[str, str],
        *,
        template: str | None = None,
        on_user: Callable[[], None] | None = None,
        batch_users: int = 8,
    ) -> list[CalibrationRecord]:
        """Score the users of ``targets`` (user → held-out item, in that order) with their stored
        histories, ``batch_users`` at a time (`rerank_many`): one record per user, LLM scores
        None where the LLM was degraded."""
        from promptrec.ranker.calibration import CalibrationRecord

        users = list(targets)
        records = []
        for start in range(0, len(users), max(1, batch_users)):
            batch = users[start : start + max(1, batch_users)]
            for user, (found, result) in zip(batch, self.rerank_many(batch, template=template)):
                scores = result.scores_in_input_order()
                first = result.details.get("first_order_scores") if scores is not None else None
                records.append(CalibrationRecord(candidates=found, scores=scores, relevant_item_id=targets[user],
                                                 first_order_scores=first))
                if on_user:
                    on_user()
        return records

    def fit_records(
        self, records: Sequence[CalibrationRecord | dict[str, Any]], *, template: str | None = None, l2: float = 1e-4
    ) -> Calibrator:
        """Fit the calibration of this recommender's reranker on records (`calibration_records`);
        records without LLM scores are skipped."""
        from promptrec.ranker.calibration import fit_calibration

        return fit_calibration(records, self.calibration_key(self.reranker(template)), l2=l2)

    def fit_calibration(
        self,
        targets: dict[str, str],
        *,
        users: int | str | None = None,
        seed: int = 0,
        template: str | None = None,
        on_user: Callable[[], None] | None = None,
        batch_users: int = 8,
        l2: float = 1e-4,
    ) -> Calibrator:
        """Fit the logistic calibration on held-out items (`targets`: user → the item that
        followed this recommender's histories, e.g. the validation split), on a seeded sample
        of `users` users (all by default; `calibration_users`), `batch_users` at a time through
        the LLM. Users whose item was not retrieved still count: their candidates are all negatives."""
        records = self.calibration_records(self.calibration_targets(targets, users, seed), template=template,
                                           on_user=on_user, batch_users=batch_users)
        return self.fit_records(records, template=template, l2=l2)

    def calibration_targets(self, targets: Mapping[str, str], users: int | str | None = None,
                            seed: int = 0) -> dict[str, str]:
        """The seeded sample of ``users`` users (all by default) of ``targets`` that this
        recommender knows, with their held-out items: whom every calibration is fitted on."""
        from promptrec.ranker.calibration import calibration_users

        chosen = calibration_users((u for u in targets if u in self.histories), users, seed)
        return {u: targets[u] for u in chosen}

    def save_calibration(self, calibrator: Calibrator, template: str | None = None) -> Path:
        """Store a calibration beside this recommender's index, where recommend() finds it."""
        reranker = self.reranker(template)
        calibrator.check_key(self.calibration_key(reranker))
        path = calibrator.save(self.calibration_file(reranker))
        with self._lock:
            self._calibrators.pop(str(path), None)
        return path

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Release the generator (a vLLM engine's worker processes, an HTTP client); a later
        call loads it again. Also `with Recommender... as rec:`."""
        with self._lock:
            backend, self._backend = self._backend, None
            owned, self._owns_backend = self._owns_backend, False
            explainer, self._explainer = self._explainer, None
            self._rerankers.clear()
            self._calibrators.clear()
        close_explainer = getattr(explainer, "close", None)
        if callable(close_explainer):
            close_explainer()
        if self._live is not None:
            self._live.close()  # its connections; it reconnects when used again
        if backend is not None and owned:
            from promptrec.ranker.reranker import wait_for_abandoned

            wait_for_abandoned(backend)
            close = getattr(backend, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _filter_keys(where: Any) -> list[str]:
    """The metadata keys a Chroma `where` filter names ($and/$or lists walked)."""
    if isinstance(where, dict):
        keys = []
        for key, value in where.items():
            if key in ("$and", "$or") and isinstance(value, list):
                for part in value:
                    keys.extend(_filter_keys(part))
            elif not key.startswith("$"):
                keys.append(key)
        return keys
    return []
