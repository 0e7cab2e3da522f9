"""``POST /candidates`` and ``POST /recommend``: retrieval, and the reranked, calibrated list."""

from __future__ import annotations

import math

from fastapi import APIRouter

from promptrec.errors import UnknownItemError
from promptrec.ranker.backends.base import track_usage
from promptrec.retrieval.schema import CandidateList
from promptrec.schema import RecommendationList
from promptrec.serve.http_errors import BODY_ERRORS, FieldError, call
from promptrec.serve.schema import CandidatesRequest, RecommendRequest, UserQuery
from promptrec.serve.state import AppState, ServeState

router = APIRouter(tags=["recommend"], responses=BODY_ERRORS)


def _history(state: AppState, query: UserQuery) -> list[str] | None:
    """The request's history, each item checked against the catalog (a 404 naming its position)."""
    if query.history is None:
        return None
    catalog = state.recommender().catalog
    first: dict[str, int] = {}
    for position, item_id in enumerate(query.history):
        if str(item_id) not in catalog:
            raise FieldError(404, ("body", "history", position), str(UnknownItemError(
                f"unknown item {item_id!r}: not in the catalog ({len(catalog)} items)")), "unknown_item")
        if str(item_id) in first:
            raise FieldError(422, ("body", "history", position),
                             f"item {item_id!r} is already at position {first[str(item_id)]}: a history lists "
                             "each item once", "repeated_item")
        first[str(item_id)] = position
    return list(query.history)


MAX_FILTER_DEPTH = 8
MAX_FILTER_VALUES = 1000


def _check_where(query: UserQuery) -> None:
    """A metadata filter Chroma can run, or a 422 naming `where`: not empty, not too deep or
    large, keys that are text, finite numbers, and Chroma's own check."""
    if query.where is None:
        return
    if not query.where:
        raise FieldError(422, ("body", "where"), "an empty filter: leave `where` out to filter nothing", "bad_filter")
    problem = _filter_problem(query.where, 1, [0])
    if problem is None:
        from chromadb.api.types import validate_where

        try:
            validate_where(query.where)
        except (ValueError, TypeError) as exc:
            problem = f"not a Chroma metadata filter: {exc}"
    if problem:
        raise FieldError(422, ("body", "where"), problem, "bad_filter")


def _filter_problem(node: object, depth: int, values: list[int]) -> str | None:
    """What makes a filter unrunnable, walking it once (values[0] counts the leaf values)."""
    if depth > MAX_FILTER_DEPTH:
        return f"the filter nests more than {MAX_FILTER_DEPTH} levels"
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str) or not key.isprintable() or _has_surrogate(key):
                return f"filter key {key!r} is not printable text"
            problem = _filter_problem(value, depth + 1, values)
            if problem:
                return problem
    elif isinstance(node, list):
        for value in node:
            problem = _filter_problem(value, depth + 1, values)
            if problem:
                return problem
    else:
        values[0] += 1
        if values[0] > MAX_FILTER_VALUES:
            return f"the filter holds more than {MAX_FILTER_VALUES} values"
        if isinstance(node, float) and not math.isfinite(node):
            return f"filter value {node!r} is not a finite number"
        if isinstance(node, str) and _has_surrogate(node):
            return "a filter value is not valid text (a lone surrogate)"
    return None


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


@router.post("/candidates", response_model=CandidateList)
def candidates(body: CandidatesRequest, state: ServeState) -> CandidateList:
    """Retrieval candidates (history excluded) with each source's score and rank."""
    history = _history(state, body)
    _check_where(body)
    return call(lambda: state.recommender().candidates(body.who, body.n, where=body.where, history=history),
                **_fields(body))


@router.post("/recommend", response_model=RecommendationList)
def recommend(body: RecommendRequest, state: ServeState) -> RecommendationList:
    """Top-k: retrieval, LLM rerank, calibrated P(relevant). A failing generator gives
    retrieval's order, flagged `degraded` with the reason."""
    history = _history(state, body)
    _check_where(body)
    rec = state.recommender()
    with track_usage() as usage:
        if history is None and body.where is None and body.n_candidates is None and body.template is None:
            # The user's default list: kept whole, so that a "why?" that follows explains it
            # with the ranks shown, without ranking again.
            full = call(lambda: rec.recommend(body.who, max(body.k, rec.settings.n_candidates)), **_fields(body))
            state.recent.put(full)
            listed = full.model_copy(update={"recommendations": full.recommendations[: body.k]})
        else:
            listed = call(lambda: rec.recommend(
                body.who, body.k, history=history, where=body.where, n_candidates=body.n_candidates,
                template=body.template,
            ), **_fields(body))
    state.metrics.llm_tokens.inc(usage.computed)
    if listed.degraded:
        state.metrics.degraded.inc()
    return listed


def _fields(body: UserQuery) -> dict[str, tuple[str, ...]]:
    """The request fields an error may be about: only those the request gave."""
    return {name: ("body", name) for name in ("where", "n_candidates", "template") if getattr(body, name, None) is not None}
