"""`LLMReranker`: a typed component that reorders retrieved candidates by an LLM score.

Like Haystack's ``LLMRanker`` it does not fail the request when the generator fails: on a
timeout or an exception of the backend the result keeps the retrieval order, with ``scores``
None, ``degraded=True`` and the reason, and the failure is logged (logger ``promptrec``).
Configuration errors are not degradations: a template that does not render (`PromptError`,
checked when it loads), more candidates than a strategy can label, or a timeout <= 0 raise.

    reranker = LLMReranker(backend, "letters")          # a template name, path or RerankTemplate
    result = reranker.run(history_items, candidate_list)
    result.ranked_item_ids()                           # new order
    result.scores_in_input_order()                     # for calibration (None when degraded)

The timeout waits for a worker thread; torch cannot be interrupted, so a timed-out
computation finishes in the background, holding the backend. The next call on that backend
first waits for it to finish (the wait is not counted against the next call's timeout), so one
slow user does not make the users behind it time out too; `LLMReranker.timeouts` counts them.
Worker threads are not daemons: the interpreter waits for them at exit, instead of tearing
torch down under a running computation ("terminate called without an active exception").
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from promptrec.data.schema import Item
from promptrec.errors import InputError, PromptrecError
from promptrec.ranker.backends.base import LLMBackend, TokenUsage, track_usage
from promptrec.ranker.prompts import PromptError, RerankTemplate, load_template, sanitize_text
from promptrec.ranker.strategies import (
    ItemView,
    OutputHealth,
    ScoringStrategy,
    StrategyResult,
    make_strategy,
)
from promptrec.retrieval.schema import Candidate, CandidateList


class RerankedCandidate(BaseModel):
    """One candidate after reranking."""

    candidate: Candidate
    llm_score: float | None  # the strategy's raw score; None when degraded
    rank: int  # 1-based rank after reranking
    retrieval_rank: int  # 1-based position in the list as retrieved


class RerankResult(BaseModel):
    """What the reranker returns for one user."""

    user_id: str
    candidates: list[RerankedCandidate]  # best first
    strategy: str
    template_name: str
    template_hash: str
    model_id: str
    latency_s: float
    prompt_tokens: int = 0  # tokens of every prompt sent, each counted whole
    computed_tokens: int = 0  # positions the model actually ran (shared prefixes once, cache hits not)
    n_prompts: int = 0
    dtype: str | None = None  # the generator's dtype (float32 | bfloat16 | float16)
    degraded: bool = False
    degraded_reason: str | None = None
    health: OutputHealth | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    def ranked_item_ids(self) -> list[str]:
        return [c.candidate.item_id for c in self.candidates]

    def scores_in_input_order(self) -> list[float] | None:
        """LLM scores aligned with the input CandidateList order; None when degraded."""
        if self.degraded:
            return None
        ordered = sorted(self.candidates, key=lambda c: c.retrieval_rank)
        return [c.llm_score for c in ordered]  # type: ignore[misc]


log = logging.getLogger("promptrec")


class RerankTimeout(TimeoutError):
    pass


# Computations that timed out and still run, per backend (id): the next call waits for them.
_ABANDONED: dict[int, list[threading.Thread]] = {}
_ABANDONED_LOCK = threading.Lock()


def wait_for_abandoned(backend: Any) -> float:
    """Wait until the timed-out computations still running on ``backend`` finish; seconds waited."""
    with _ABANDONED_LOCK:
        threads = list(_ABANDONED.get(id(backend), ()))
    if not threads:
        return 0.0
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    with _ABANDONED_LOCK:
        alive = [t for t in _ABANDONED.get(id(backend), ()) if t.is_alive()]
        if alive:
            _ABANDONED[id(backend)] = alive
        else:
            _ABANDONED.pop(id(backend), None)
    return time.perf_counter() - started


def _run_with_timeout(fn: Any, timeout_s: float | None, backend: Any = None) -> Any:
    if timeout_s is None:
        return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=work, name="promptrec-rerank", daemon=False)
    thread.start()
    if not done.wait(timeout_s):
        with _ABANDONED_LOCK:
            _ABANDONED.setdefault(id(backend), []).append(thread)
        raise RerankTimeout(f"LLM scoring took longer than {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class LLMReranker:
    """Scores candidates with ``backend`` through ``template``'s strategy and reorders them."""

    def __init__(
        self,
        backend: LLMBackend,
        template: RerankTemplate | str | Path = "letters",
        *,
        strategy: ScoringStrategy | None = None,
        strategy_options: dict[str, Any] | None = None,
        prompts_dir: Path | None = None,
        timeout_s: float | None = 60.0,
        max_history: int = 10,
        max_item_chars: int = 200,
    ):
        self.backend = backend
        self.template = template if isinstance(template, RerankTemplate) else load_template(template, prompts_dir)
        if strategy is None:
            strategy = make_strategy(self.template.strategy, **(strategy_options or {}))
        elif strategy_options:
            raise ValueError("pass either strategy or strategy_options, not both")
        if strategy.name != self.template.strategy:
            raise ValueError(
                f"template {self.template.name} declares strategy {self.template.strategy!r}, "
                f"but a {strategy.name!r} strategy was given"
            )
        self.strategy = strategy
        if timeout_s is not None and not timeout_s > 0:
            raise PromptrecError(f"timeout_s must be > 0 (or None to wait), got {timeout_s}: set ranker.timeout_s")
        self.timeout_s = timeout_s
        self.timeouts = 0  # calls that timed out (their computation finished in the background)
        self.max_history = max_history
        self.max_item_chars = max_item_chars

    def _history_views(self, history: list[Item]) -> list[ItemView]:
        recent = history[-self.max_history :] if self.max_history > 0 else []
        return [
            ItemView(sanitize_text(it.display_title(), self.max_item_chars), sanitize_text(it.text(), self.max_item_chars))
            for it in recent
        ]

    def _candidate_views(self, candidates: list[Candidate]) -> list[ItemView]:
        return [
            ItemView(sanitize_text(c.title, self.max_item_chars), sanitize_text(c.text or c.title, self.max_item_chars))
            for c in candidates
        ]

    def _views(self, history: list[Item], candidates: CandidateList) -> tuple[list[ItemView], list[ItemView]]:
        return self._history_views(history), self._candidate_views(candidates.candidates)

    def score(self, history: list[Item], candidates: CandidateList) -> StrategyResult:
        """The strategy's raw result, without timeout or fallback (raises on failure)."""
        return self.strategy.score(self.backend, self.template, *self._views(history, candidates))

    def _common(self, user_id: str) -> dict[str, Any]:
        hardware = getattr(self.backend, "hardware", None)
        return dict(
            user_id=user_id,
            strategy=self.strategy.name,
            template_name=self.template.name,
            template_hash=self.template.hash,
            model_id=getattr(self.backend, "model_id", "unknown"),
            dtype=getattr(hardware, "dtype", None),
        )

    def _check_size(self, candidates: CandidateList) -> None:
        limit = getattr(self.strategy, "max_candidates", None)
        if limit is not None and len(candidates.candidates) > limit:
            raise InputError(
                f"the {self.strategy.name} strategy (template {self.template.origin}) labels {limit} candidates "
                f"at most, got {len(candidates.candidates)}: lower n_candidates or use a likelihood/yesno template"
            )

    def _fallback(self, candidates: CandidateList, exc: BaseException, latency_s: float) -> RerankResult:
        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, RerankTimeout):
            self.timeouts += 1
        log.warning("rerank of user %s degraded to retrieval order (%s, template %s): %s",
                    candidates.user_id, getattr(self.backend, "model_id", "?"), self.template.name, reason)
        return RerankResult(
            candidates=[
                RerankedCandidate(candidate=c, llm_score=None, rank=i + 1, retrieval_rank=i + 1)
                for i, c in enumerate(candidates.candidates)
            ],
            latency_s=latency_s,
            degraded=True,
            degraded_reason=reason,
            **self._common(candidates.user_id),
        )

    @staticmethod
    def _check_scores(candidates: CandidateList, result: StrategyResult) -> None:
        n = len(candidates.candidates)
        if len(result.scores) != n:
            raise ValueError(f"strategy returned {len(result.scores)} scores for {n} candidates")
        bad = [i for i, s in enumerate(result.scores) if s != s or s in (float("inf"), float("-inf"))]
        if bad:
            raise ValueError(f"strategy returned non-finite scores for {len(bad)} candidate(s)")

    def _result(self, candidates: CandidateList, result: StrategyResult, computed: int,
                latency_s: float) -> RerankResult:
        items = list(candidates.candidates)
        order = sorted(range(len(items)), key=lambda i: (-result.scores[i], i))
        ranked = [
            RerankedCandidate(candidate=items[i], llm_score=result.scores[i], rank=r + 1, retrieval_rank=i + 1)
            for r, i in enumerate(order)
        ]
        return RerankResult(
            candidates=ranked,
            latency_s=latency_s,
            prompt_tokens=result.prompt_tokens,
            computed_tokens=computed,
            n_prompts=result.n_prompts,
            health=result.health,
            details=result.details,
            **self._common(candidates.user_id),
        )

    def run(self, history: list[Item], candidates: CandidateList) -> RerankResult:
        start = time.perf_counter()
        if not candidates.candidates:
            return RerankResult(candidates=[], latency_s=time.perf_counter() - start, **self._common(candidates.user_id))
        self._check_size(candidates)
        start += wait_for_abandoned(self.backend)  # an earlier timed-out computation is not this call's latency

        def work() -> tuple[StrategyResult, TokenUsage]:
            with track_usage() as usage:
                result = self.score(history, candidates)
            self._check_scores(candidates, result)
            return result, usage

        try:
            result, usage = _run_with_timeout(work, self.timeout_s, self.backend)
        except PromptError:
            raise  # the template is wrong: a configuration error, not a generator failure
        except Exception as exc:  # noqa: BLE001 - a generator failure falls back to retrieval order
            return self._fallback(candidates, exc, time.perf_counter() - start)
        return self._result(candidates, result, usage.computed, time.perf_counter() - start)

    def run_many(self, requests: list[tuple[list[Item], CandidateList]]) -> list[RerankResult]:
        """`run` for several users through one grouped backend call (the vLLM backends batch them;
        on CPU transformers it equals one `run` after another). The time-out scales with the
        number of users; if the batch fails, each user is run alone, so a failure degrades only
        its own list. Latency and computed tokens are the batch's, shared equally by its users."""
        if len(requests) <= 1:
            return [self.run(h, c) for h, c in requests]
        for _, found in requests:
            self._check_size(found)
        start = time.perf_counter() + wait_for_abandoned(self.backend)
        live = [i for i, (_, c) in enumerate(requests) if c.candidates]

        def work() -> tuple[list[StrategyResult], TokenUsage]:
            with track_usage() as usage:
                views = [self._views(*requests[i]) for i in live]
                results = self.strategy.score_many(self.backend, self.template, views)
            for i, result in zip(live, results):
                self._check_scores(requests[i][1], result)
            return results, usage

        try:
            timeout = None if self.timeout_s is None else self.timeout_s * max(1, len(live))
            results, usage = _run_with_timeout(work, timeout, self.backend)
        except PromptError:
            raise
        except Exception as exc:  # noqa: BLE001 - retry one by one: only the failing users degrade
            log.warning("batched rerank of %d users failed (%s); reranking them one by one", len(requests), exc)
            return [self.run(h, c) for h, c in requests]
        share = (time.perf_counter() - start) / len(requests)
        by_index = dict(zip(live, results))
        return [
            self._result(found, by_index[i], round(usage.computed / len(live)), share) if i in by_index
            else RerankResult(candidates=[], latency_s=share, **self._common(found.user_id))
            for i, (_, found) in enumerate(requests)
        ]
