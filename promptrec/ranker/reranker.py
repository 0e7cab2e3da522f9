"""`LLMReranker`: a typed component that reorders retrieved candidates by an LLM score.

Like Haystack's ``LLMRanker`` it never fails the request: on a timeout or any exception the
result keeps the retrieval order, with ``scores`` None, ``degraded=True`` and the reason.

    reranker = LLMReranker(backend, "letters")          # a template name, path or RerankTemplate
    result = reranker.run(history_items, candidate_list)
    result.ranked_item_ids()                           # new order
    result.scores_in_input_order()                     # for calibration (None when degraded)

The timeout waits for a worker thread; torch cannot be interrupted, so a timed-out
computation finishes in the background (holding the backend's lock meanwhile).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from promptrec.data.schema import Item
from promptrec.ranker.backends.base import LLMBackend, TokenUsage, track_usage
from promptrec.ranker.prompts import RerankTemplate, load_template, sanitize_text
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


class RerankTimeout(TimeoutError):
    pass


def _run_with_timeout(fn: Any, timeout_s: float | None) -> Any:
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

    thread = threading.Thread(target=work, name="promptrec-rerank", daemon=True)
    thread.start()
    if not done.wait(timeout_s):
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
        self.timeout_s = timeout_s
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

    def _fallback(self, candidates: CandidateList, exc: BaseException, latency_s: float) -> RerankResult:
        reason = f"{type(exc).__name__}: {exc}"
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

    def _result(self, candidates: CandidateList, result: StrategyResult, usage: TokenUsage,
                latency_s: float) -> RerankResult:
        items = list(candidates.candidates)
        if len(result.scores) != len(items):
            raise ValueError(f"strategy returned {len(result.scores)} scores for {len(items)} candidates")
        bad = [i for i, s in enumerate(result.scores) if s != s or s in (float("inf"), float("-inf"))]
        if bad:
            raise ValueError(f"strategy returned non-finite scores for {len(bad)} candidate(s)")
        order = sorted(range(len(items)), key=lambda i: (-result.scores[i], i))
        ranked = [
            RerankedCandidate(candidate=items[i], llm_score=result.scores[i], rank=r + 1, retrieval_rank=i + 1)
            for r, i in enumerate(order)
        ]
        return RerankResult(
            candidates=ranked,
            latency_s=latency_s,
            prompt_tokens=result.prompt_tokens,
            computed_tokens=usage.computed,
            n_prompts=result.n_prompts,
            health=result.health,
            details=result.details,
            **self._common(candidates.user_id),
        )

    def run(self, history: list[Item], candidates: CandidateList) -> RerankResult:
        start = time.perf_counter()
        if not candidates.candidates:
            return RerankResult(candidates=[], latency_s=time.perf_counter() - start, **self._common(candidates.user_id))

        def work() -> tuple[StrategyResult, TokenUsage]:
            with track_usage() as usage:
                return self.score(history, candidates), usage

        try:
            result, usage = _run_with_timeout(work, self.timeout_s)
            return self._result(candidates, result, usage, time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - any failure falls back to retrieval order
            return self._fallback(candidates, exc, time.perf_counter() - start)

    def run_many(self, requests: list[tuple[list[Item], CandidateList]]) -> list[RerankResult]:
        """`run` for several users through one grouped backend call (the vLLM backends batch them;
        on CPU transformers it equals one `run` after another). The time-out scales with the
        number of users; if the batch fails, each user is run alone, so one failure degrades
        only its own list. Latency is the batch's time shared equally among its users."""
        if len(requests) <= 1:
            return [self.run(h, c) for h, c in requests]
        start = time.perf_counter()
        live = [i for i, (_, c) in enumerate(requests) if c.candidates]

        def work() -> tuple[list[StrategyResult], TokenUsage]:
            with track_usage() as usage:
                views = [self._views(*requests[i]) for i in live]
                return self.strategy.score_many(self.backend, self.template, views), usage

        try:
            timeout = None if self.timeout_s is None else self.timeout_s * max(1, len(live))
            results, usage = _run_with_timeout(work, timeout)
            share = (time.perf_counter() - start) / max(1, len(requests))
            out: list[RerankResult] = []
            by_index = dict(zip(live, results))
            for i, (_, found) in enumerate(requests):
                if i not in by_index:
                    out.append(RerankResult(candidates=[], latency_s=share, **self._common(found.user_id)))
                    continue
                mine = TokenUsage(computed=round(usage.computed / len(live)))
                out.append(self._result(found, by_index[i], mine, share))
            return out
        except Exception:  # noqa: BLE001 - retry one by one: only the failing users degrade
            return [self.run(h, c) for h, c in requests]
