"""The rankers under evaluation, behind one small protocol, and the data they share.

A ranker is prepared once on the evaluation data (`EvalData`: the split, the catalog, the
users' histories) and then asked, user by user, for an ordered list:

    ranker.prepare(data)
    out = ranker.rank(user_id, history, length)   # -> RankOutput
    outs = ranker.rank_many([(user_id, history), ...], length)   # grouped where the ranker can
    ranker.close()

`RankOutput.ranked` is the final list (best first, at least ``length`` items where the ranker
can), the user's history excluded. Rankers that score a candidate list also return the
candidate ids, their raw scores and probabilities (see `LLMRanker` for the definitions), the
output-health fields and the prompt cost.

Rankers here: `RetrievalRanker` (promptrec's fused retrieval, no LLM) and `LLMRanker` (the
retrieved candidates reranked by a template and a model through `LLMReranker`, optionally
calibrated; an adapter over `Recommender`, ordered by `promptrec.pipeline` as `recommend()` is).
The trained baselines are in `promptrec.eval.baselines`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel

from promptrec.config import Settings
from promptrec.data.schema import Item
from promptrec.metrics import sigmoid, softmax
from promptrec.eval.suite import Suite, SuiteError
from promptrec.paths import slug

log = logging.getLogger(__name__)

__all__ = ["EvalData", "EvalRanker", "LLMRanker", "OneAtATime", "RankOutput", "RetrievalRanker", "prepare_data", "slug"]

ProgressFn = Callable[[str, int, int], None]


class RankOutput(BaseModel):
    """One ranker's answer for one user."""

    ranked: list[str]
    candidates: list[str] | None = None  # what a reranker was given (input order)
    scores: list[float] | None = None  # raw scores aligned with `candidates` (None: degraded)
    p_before: list[float] | None = None  # uncalibrated probabilities, aligned with `candidates`
    p_after: list[float] | None = None  # calibrated probabilities, aligned with `candidates`
    calibration_id: str | None = None  # which fitted calibration gave p_after
    ranked_raw: list[str] | None = None  # the order by raw score, when the final order is the calibrated one
    degraded: bool = False
    degraded_reason: str | None = None
    label_mass: float | None = None
    prompt_tokens: int = 0
    computed_tokens: int = 0  # positions the model ran (a shared prefix once)
    n_prompts: int = 0
    model_latency_s: float | None = None
    cold_start: bool = False


@runtime_checkable
class EvalRanker(Protocol):
    name: str
    kind: str  # "baseline", "retrieval" or "llm"

    def describe(self) -> dict[str, Any]: ...

    def prepare(self, data: "EvalData") -> None: ...

    def rank(self, user_id: str, history: Sequence[str], length: int) -> RankOutput: ...

    def rank_many(self, users: Sequence[tuple[str, Sequence[str]]], length: int) -> list[RankOutput]: ...

    def close(self) -> None: ...


class OneAtATime:
    """`rank_many` as one `rank` per user, for rankers without a grouped call."""

    def rank_many(self, users: Sequence[tuple[str, Sequence[str]]], length: int) -> list[RankOutput]:
        return [self.rank(user_id, history, length) for user_id, history in users]  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the data


class EvalData:
    """The split and everything the rankers share; the retrieval indexes are built on first use.

    Users are ordered by the project's id key (digit ids numerically). The evaluated users
    are all test users or a seeded sample; the LLM users a seeded sample of those; the
    calibration users a seeded sample of the users with a validation item.
    """

    def __init__(self, suite: Suite, settings: Settings, items: list[Item], frame: pd.DataFrame,
                 progress: ProgressFn | None = None):
        from promptrec.data.preprocess import id_rank, temporal_split
        from promptrec.data.schema import items_for_domain
        from promptrec.recommender import histories_from_frame

        self.suite = suite
        self.settings = settings
        self.progress = progress
        self.frame = frame
        tie = settings.split
        self.split = temporal_split(frame, tie.tie_rule, tie.tie_seed)
        seen = set(frame["item_id"])
        self.items = [it for it in items if it.item_id in seen] if suite.data.k_core or suite.data.log_users else list(items)
        self.items = items_for_domain(self.items, settings.resolved_domain().has_year)
        self.catalog = {it.item_id: it for it in self.items}
        ids = np.array([it.item_id for it in self.items], dtype=object)
        self.item_ids: list[str] = ids[np.argsort(id_rank(ids), kind="stable")].tolist() if len(ids) else []
        self.item_position = {item: n for n, item in enumerate(self.item_ids)}
        self.test_targets = self.split.test_items()
        self.validation_targets = self.split.validation_items()

        from promptrec.data.preprocess import ordered_ids as ordered, seeded_sample
        from promptrec.ranker.calibration import calibration_users

        seed = suite.seed
        self.users = seeded_sample(ordered(self.test_targets), suite.data.users, seed, 1)
        self.test_frame = self.split.history_for_test()
        self.validation_frame = self.split.history_for_validation()
        self.new_item_ids: set[str] = set()
        if suite.data.new_users:
            self.test_frame = self._as_new_users(suite.data.new_users)
        if suite.data.new_items:
            self._as_new_items(suite.data.new_items)
        self.test_histories = histories_from_frame(self.test_frame, tie)
        self.validation_histories = histories_from_frame(self.validation_frame, tie)
        self.llm_users = seeded_sample(self.users, suite.grid.users, seed, 2)
        # the sample `Recommender.fit_calibration` (`promptrec calibrate`) draws
        self.calibration_users = calibration_users(self.validation_targets, suite.calibration.users, seed)
        self._recommenders: dict[str, Any] = {}

    def _as_new_users(self, first: int) -> pd.DataFrame:
        """The new-user scenario (`DataSpec.new_users`): each evaluated user's history is their
        first ``first`` events and their target the event after them; the index's log holds only
        those first events of theirs (the rest of their log is unknown, as for a user who just
        arrived), the other users' logs whole. Users with no event after the cut drop out."""
        from promptrec.data.preprocess import sort_histories

        ordered = sort_histories(self.frame, self.settings.split.tie_rule, self.settings.split.tie_seed)
        ordered = ordered.assign(user_id=ordered["user_id"].astype(str))
        rank = ordered.groupby("user_id", sort=False).cumcount()
        evaluated = ordered["user_id"].isin(set(self.users))
        nxt = ordered[evaluated & (rank == first)]
        self.test_targets = {**self.test_targets, **dict(zip(nxt["user_id"], nxt["item_id"].astype(str)))}
        sampled = len(self.users)
        self.users = [u for u in self.users if u in set(nxt["user_id"])]
        if not self.users:
            raise SuiteError(f"suite {self.suite.name!r}: [data] new_users = {first} leaves no test user (none of "
                             f"the {sampled} sampled users has more than {first} events); lower new_users")
        known = self.split.history_for_test()
        known = known[~known["user_id"].astype(str).isin(set(ordered.loc[evaluated, "user_id"]))]
        return pd.concat([known, ordered[evaluated & (rank < first)]], ignore_index=True)

    def _as_new_items(self, share: float) -> None:
        """The new-item scenario (`DataSpec.new_items`): the latest ``share`` of the interacted
        items to appear (by first event; ties by item id) are new; their events leave both
        indexes' logs and every history, and the evaluated users are a seeded sample of those
        whose test target is a new item."""
        from promptrec.data.preprocess import id_rank, is_order_free, ordered_ids, seeded_sample

        if is_order_free(self.frame):
            raise SuiteError(f"suite {self.suite.name!r}: [data] new_items needs timestamps; this log has no time "
                             "order, so no item is newer than another")
        first = self.frame.assign(item_id=self.frame["item_id"].astype(str)).groupby("item_id")["timestamp"].min()
        ids = first.index.to_numpy(dtype=object)
        order = np.lexsort((id_rank(ids), first.to_numpy()))  # oldest first, ties by id
        count = max(1, int(round(share * len(ids))))
        self.new_item_ids = set(ids[order[-count:]].tolist())
        new = self.new_item_ids
        candidates = [u for u, item in self.test_targets.items() if item in new]
        if not candidates:
            raise SuiteError(f"suite {self.suite.name!r}: [data] new_items = {share:g} leaves no test user (no "
                             f"user's test item is among the {count} newest items); raise new_items")
        self.users = seeded_sample(ordered_ids(candidates), self.suite.data.users, self.suite.seed, 1)
        self.test_frame = self.test_frame[~self.test_frame["item_id"].astype(str).isin(new)]
        self.validation_frame = self.validation_frame[~self.validation_frame["item_id"].astype(str).isin(new)]

    def user_facts(self) -> dict[str, dict[str, float]]:
        """What the report's segments cut by, per evaluated user: the length of the test history,
        the target's training interactions and its popularity quantile (the share of catalog items
        with more interactions, ties by item id: 0 is the most popular item)."""
        counts = self.test_frame["item_id"].value_counts()
        interactions = np.array([int(counts.get(i, 0)) for i in self.item_ids])
        order = np.argsort(-interactions, kind="stable")  # item_ids are in id order: ties by id
        quantile = np.empty(len(order))
        quantile[order] = np.arange(len(order)) / max(1, len(order))
        facts = {}
        for user in self.users:
            target = self.test_targets[user]
            position = self.item_position.get(target)
            facts[user] = {"history_length": len(self.test_histories.get(user, [])),
                           "target_interactions": int(counts.get(target, 0)),
                           "target_popularity_quantile": float(quantile[position]) if position is not None else 1.0}
        return facts

    def run_order(self, users: Sequence[str]) -> list[str]:
        """``users`` in the seeded order a ranker goes through them (suite seed): every prefix of
        it, the rows of an interrupted or ``limit``-ed session, is a seeded random sample."""
        users = list(users)
        rng = np.random.default_rng([self.suite.seed, 4])
        return [users[n] for n in rng.permutation(len(users))]

    # ------------------------------------------------------------------ indexes

    def namespace(self, part: str) -> str:
        d = self.suite.data
        bits = [f"eval-{self.settings.dataset_name()}"]
        if d.log_users:
            bits.append(f"u{d.log_users}s{self.suite.seed}")
        if d.k_core:
            bits.append(f"k{d.k_core[0]}x{d.k_core[1]}")
        if d.min_rating is not None:
            bits.append(f"r{d.min_rating:g}")
        if d.tie_rule != "id":
            bits.append(f"t{d.tie_rule}{d.tie_seed}")
        if d.new_users and part == "test":
            bits.append(f"new{d.new_users}u{d.users}s{self.suite.seed}")
        if d.new_items:
            bits.append(f"newitems{d.new_items:g}")
        bits.append(part)
        return slug("-".join(bits))

    def recommender(self, part: str = "test"):
        """The retrieval index over the history known before the test item ("test") or before
        the validation item ("validation"), built (or updated) under the index folder."""
        if part not in self._recommenders:
            from promptrec.recommender import Recommender
            from promptrec.retrieval.sasrec import CheckpointMismatchError

            history = self.test_frame if part == "test" else self.validation_frame
            namespace = self.namespace(part)
            base = self.settings.index_dir or (self.settings.cache_dir / "index")
            # min_rating None: the suite's own threshold was applied by prepare_data
            settings = self.settings.model_copy(update={"index_dir": Path(base) / namespace, "min_rating": None})
            if part == "validation":  # calibrate on candidates fused as the test index serves them
                served = self.recommender("test").retriever.settings.model_copy(update={"fit_weights": False})
                settings = settings.model_copy(update={"retrieval": served})
            try:
                rec = Recommender.from_interactions(self.items, history, settings, namespace=namespace,
                                                    progress=self.progress)
            except CheckpointMismatchError as exc:
                # This index is the eval's own cache, not one the user trains with
                # `promptrec train retriever`: bring its model up to date here.
                log.warning("eval index %s: retraining its sequential model; the stored one does not fit (%s)",
                            namespace, exc)
                rec = Recommender.from_interactions(self.items, history, settings, namespace=namespace,
                                                    progress=self.progress, retrain=True)
            self._recommenders[part] = rec
        return self._recommenders[part]


def prepare_data(suite: Suite, settings: Settings, progress: ProgressFn | None = None) -> EvalData:
    """Load the suite's data set, apply its slicing and preprocessing, and split it."""
    from promptrec.data.named import load_dataset
    from promptrec.data.preprocess import apply_threshold, id_rank, k_core, seeded_sample

    d = suite.data
    dataset = load_dataset(settings.model_copy(update={"min_rating": None}))
    frame = dataset.interactions
    if d.min_rating is not None:
        frame = apply_threshold(frame, d.min_rating)
    if d.log_users:
        users = np.array(sorted(set(frame["user_id"])), dtype=object)
        users = users[np.argsort(id_rank(users), kind="stable")]
        keep = set(seeded_sample(users.tolist(), d.log_users, suite.seed, 0))
        frame = frame[frame["user_id"].isin(keep)].reset_index(drop=True)
    if d.k_core:
        frame = k_core(frame, d.k_core[0], d.k_core[1])
    return EvalData(suite, settings, dataset.items, frame, progress)


def top_items(scores: np.ndarray, exclude: Sequence[int], length: int, item_ids: Sequence[str]) -> list[str]:
    """The ``length`` best items by score (ties: id order), the excluded positions left out."""
    s = np.asarray(scores, dtype=np.float64).copy()
    if len(exclude):
        s[np.asarray(exclude, dtype=np.int64)] = -np.inf
    order = np.argsort(-s, kind="stable")
    out = []
    for pos in order:
        if s[pos] == -np.inf:
            break
        out.append(item_ids[pos])
        if len(out) == length:
            break
    return out


# --------------------------------------------------------------------------- retrieval


class RetrievalRanker(OneAtATime):
    """promptrec's fused retrieval (transitions, ALS vectors, text vectors), no LLM: the top of
    `Recommender.candidates` over the index of the history known before the test item."""

    kind = "retrieval"

    def __init__(self, n_candidates: int, name: str = "retrieval"):
        self.name = name
        self.n_candidates = n_candidates
        self._rec = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_candidates": self.n_candidates}

    def prepare(self, data: EvalData) -> None:
        self._rec = data.recommender("test")

    def rank(self, user_id: str, history: Sequence[str], length: int) -> RankOutput:
        found = self._rec.candidates(user_id, max(length, self.n_candidates), history=list(history))
        ids = [c.item_id for c in found.candidates]
        return RankOutput(ranked=ids, candidates=ids, cold_start=found.cold_start)

    def close(self) -> None:
        self._rec = None


class CalibratedRetrievalRanker(OneAtATime):
    """What ``ranker.mode = "retrieval"`` serves: retrieval's candidates ordered by the
    calibration of the retrieval features alone (no LLM), fitted on the suite's calibration
    users of the validation split; ordered by `promptrec.pipeline.rank_retrieval`, the function
    `Recommender.recommend` calls in that mode."""

    kind = "retrieval"

    def __init__(self, n_candidates: int, l2: float = 1e-4, name: str = "calibrated-retrieval"):
        self.name = name
        self.n_candidates = n_candidates
        self.l2 = l2
        self._rec = None
        self.calibrator = None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_candidates": self.n_candidates, "mode": "retrieval", "l2": self.l2}

    def _served(self, base):
        from promptrec.recommender import Recommender

        ranker = base.settings.ranker.model_copy(update={"mode": "retrieval", "calibrate": True})
        settings = base.settings.model_copy(update={"n_candidates": self.n_candidates, "ranker": ranker})
        return Recommender(base.items, base.histories, base.index, settings)

    def prepare(self, data: EvalData) -> None:
        validation = self._served(data.recommender("validation"))
        targets = {u: data.validation_targets[u] for u in data.calibration_users}
        self.calibrator = validation.fit_retrieval_calibration(targets, l2=self.l2)
        self._rec = self._served(data.recommender("test"))

    def rank(self, user_id: str, history: Sequence[str], length: int) -> RankOutput:
        from promptrec.pipeline import rank_retrieval

        found = self._rec.candidates(user_id, self.n_candidates, history=list(history))
        ranked = rank_retrieval(found, self.calibrator)
        return RankOutput(ranked=ranked.ranked_item_ids(), candidates=[c.item_id for c in found.candidates],
                          p_after=ranked.probabilities, cold_start=found.cold_start)

    def close(self) -> None:
        self._rec = None


# --------------------------------------------------------------------------- LLM


def uncalibrated_probabilities(scores: Sequence[float], strategy: str) -> np.ndarray:
    """The model's own probabilities before calibration ("before" in the report).

    * ``letters``: softmax of the scores over the list. The scores are the candidates' letter
      log-probabilities renormalised over the shown letters (averaged over permutations), so
      this is the model's choice distribution over the candidates.
    * ``likelihood``: softmax of the PMI scores over the list (same reading: which candidate).
    * ``yesno``: sigmoid of the score, the log-odds log P(Yes) - log P(No): the model's
      P(Yes) renormalised over {Yes, No}, per candidate.
    """
    if strategy == "yesno":
        return sigmoid(scores)
    return softmax(scores)


class LLMRanker:
    """Retrieved candidates reranked by an LLM through a template: an adapter over `Recommender`.

    The ranker asks a `Recommender` (over the eval's index, set up with this ranker's model,
    template and options) for the reranked lists, orders them with `rank_candidates` (the
    order `recommend()` serves) and converts them to `RankOutput`. Without calibration the final
    order is the raw LLM score's. With calibration (fitted on the validation split by the
    runner through `Recommender.calibration_records` and `fit_records`), the final order is by
    calibrated probability, which blends the LLM score with the retrieval features; the
    raw-score order is kept as ``ranked_raw``. A degraded answer keeps the retrieval order.
    """

    kind = "llm"

    def __init__(self, template: str, model: str, backend: str, *, n_candidates: int,
                 calibrate: bool, backend_factory: Callable[[str, str], Any], seed: int = 0,
                 permutations: int | None = None, history_items: int | None = None,
                 timeout_s: float | None = None, prompts_dir: Path | None = None):
        from promptrec.ranker.prompts import load_template

        self.template_name = template
        self.template = load_template(template, prompts_dir)
        self.strategy = self.template.strategy
        self.model = model
        self.backend_name = backend
        self.n_candidates = n_candidates
        self.calibrate = calibrate
        self.seed = seed
        self.permutations = permutations
        self.history_items = history_items
        self.timeout_s = timeout_s
        self._backend_factory = backend_factory
        self.name = f"llm:{self.template.name}@{model}/{backend}"
        self.calibrator = None
        self.calibration_id: str | None = None
        self.calibration_error: str | None = None
        self._backend = None
        self._recs: dict[str, Any] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "template": self.template.name,
            "template_hash": self.template.hash,
            "strategy": self.strategy,
            "model": self.model,
            "model_id": getattr(self._backend, "model_id", self.model) if self._backend is not None else self.model,
            "backend": self.backend_name,
            "n_candidates": self.n_candidates,
            "calibrate": self.calibrate,
            "permutations": self._options().get("permutations"),
            "history_items": self.history_items,
            "timeout_s": self.timeout_s,
            **self._hardware(),
        }

    def _hardware(self) -> dict[str, Any]:
        """Where the generator runs (device, the dtype "auto" chose, the CPU capability), once
        loaded; a server backend reports none (its process chose them)."""
        hardware = getattr(self._backend, "hardware", None)
        if hardware is None:
            return {}
        return hardware.model_dump(include={"device", "dtype", "cpu_capability", "torch_threads", "gpu"})

    def _options(self) -> dict[str, Any]:
        if self.strategy == "letters":
            return {"permutations": self.permutations or 3, "seed": self.seed}
        return {}

    def prepare(self, data: EvalData) -> None:
        s = data.settings.ranker
        self.permutations = self.permutations or s.permutations
        self.history_items = s.history_items if self.history_items is None else self.history_items
        self.timeout_s = self.timeout_s or s.timeout_s
        self._data = data
        self.template = self.template.with_domain(data.settings.resolved_domain())
        self._backend = self._backend_factory(self.model, self.backend_name)
        self._recs = {}
        self.recommender("test").reranker()  # a broken setup (letters over too many candidates) fails here

    def served_settings(self, settings: Settings) -> Settings:
        """``settings`` with this ranker's model, template, options and list length: what a
        `Recommender` serving this row is configured with."""
        ranker = settings.ranker.model_copy(update={
            "template": self.template_name, "backend": self.backend_name, "permutations": self.permutations,
            "history_items": self.history_items, "timeout_s": self.timeout_s, "seed": self.seed,
            "calibrate": self.calibrate,
        })
        return settings.model_copy(update={"generator": self.model, "n_candidates": self.n_candidates, "ranker": ranker})

    def recommender(self, part: str):
        """The `Recommender` this ranker asks: the eval's index of ``part`` ("test" or
        "validation"), served with this ranker's settings and loaded backend."""
        if part not in self._recs:
            from promptrec.recommender import Recommender

            base = self._data.recommender(part)
            rec = Recommender(base.items, base.histories, base.index, self.served_settings(base.settings))
            rec.use_backend(self._backend)
            self._recs[part] = rec
        return self._recs[part]

    def validation_records(self, users: Sequence[tuple[str, Sequence[str], str]]) -> list[dict[str, Any]]:
        """Calibration records (JSON-ready) on the validation split, one per (user, history, target);
        the histories are the validation index's own (`EvalData.validation_histories`)."""
        records = self.recommender("validation").calibration_records({u: t for u, _, t in users}, batch_users=len(users))
        return [
            {
                "candidates": r.candidates.model_dump(mode="json", exclude={"history"}) | {"history": []},
                "scores": r.scores,
                "first_order_scores": r.first_order_scores,
                "relevant_item_id": r.relevant_item_id,
                "degraded": r.scores is None,
            }
            for r in records
        ]

    def fit(self, records: list[dict[str, Any]], l2: float = 1e-4) -> None:
        """Fit the calibration on validation records; a failure is kept, not raised (the report says why)."""
        from promptrec.errors import PromptrecError

        clean = [{k: r[k] for k in ("candidates", "scores", "relevant_item_id")} for r in records]
        try:
            self.calibrator = self.recommender("test").fit_records(clean, l2=l2)
            self.calibration_error = None
            fitted = json.dumps([self.calibrator.means, self.calibrator.scales, self.calibrator.weights,
                                 self.calibrator.intercept])
            self.calibration_id = hashlib.sha256(fitted.encode()).hexdigest()[:12]
        except PromptrecError as exc:
            self.calibrator = None
            self.calibration_id = None
            self.calibration_error = str(exc)
            log.warning("%s: calibration not fitted: %s", self.name, exc)

    def decide_mode(self, records: list[dict[str, Any]], seed: int = 0, l2: float = 1e-4):
        """The ``ranker.mode = "auto"`` decision on validation records (`Recommender.decide_mode`)."""
        from promptrec.ranker.calibration import CalibrationRecord

        parsed = [CalibrationRecord.model_validate(
            {k: r.get(k) for k in ("candidates", "scores", "relevant_item_id", "first_order_scores")})
            for r in records]
        return self.recommender("validation").decide_mode(parsed, seed=seed, l2=l2)

    def rank(self, user_id: str, history: Sequence[str], length: int) -> RankOutput:
        return self.rank_many([(user_id, history)], length)[0]

    def rank_many(self, users: Sequence[tuple[str, Sequence[str]]], length: int) -> list[RankOutput]:
        """`rank` for several (user, history) pairs through one grouped LLM call."""
        from promptrec.pipeline import rank_candidates

        rec = self.recommender("test")
        scored = rec.rerank_many([u for u, _ in users], histories=[list(h) for _, h in users])
        calibrator = self.calibrator if self.calibrate else None
        return [self._output(rank_candidates(found, result, calibrator)) for found, result in scored]

    def _output(self, ranked) -> RankOutput:
        """The `RankOutput` of one ordered list (`RankedCandidates`)."""
        result, scores = ranked.result, ranked.scores
        calibrated = ranked.probabilities is not None
        health = result.health
        return RankOutput(
            ranked=ranked.ranked_item_ids(),
            candidates=[c.item_id for c in ranked.found.candidates],
            scores=scores,
            p_before=uncalibrated_probabilities(scores, self.strategy).tolist() if scores is not None else None,
            p_after=ranked.probabilities,
            calibration_id=self.calibration_id if calibrated else None,
            ranked_raw=result.ranked_item_ids() if calibrated else None,
            degraded=result.degraded,
            degraded_reason=result.degraded_reason,
            label_mass=health.label_mass if health is not None else None,
            prompt_tokens=result.prompt_tokens,
            computed_tokens=result.computed_tokens,
            n_prompts=result.n_prompts,
            model_latency_s=result.latency_s,
            cold_start=ranked.found.cold_start,
        )

    def close(self) -> None:
        self._recs = {}
        self._backend = None
