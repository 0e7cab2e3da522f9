"""``POST /candidates`` and ``POST /recommend``: retrieval, and the reranked, calibrated list."""

from __future__ import annotations

from fastapi import APIRouter

from promptrec.errors import UnknownItemError
from promptrec.retrieval.schema import CandidateList
from promptrec.schema import RecommendationList
from promptrec.serve.http_errors import ERROR_DOC, FieldError, call
from promptrec.serve.schema import CandidatesRequest, RecommendRequest, UserQuery
from promptrec.serve.state import AppState, ServeState

router = APIRouter(tags=["recommend"], responses={404: ERROR_DOC})


def _history(state: AppState, query: UserQuery) -> list[str] | None:
    """The request's history, each item checked against the catalog (a 404 naming its position)."""
    if query.history is None:
        return None
    catalog = state.recommender().catalog
    for position, item_id in enumerate(query.history):
        if str(item_id) not in catalog:
            raise FieldError(404, ("body", "history", position), str(UnknownItemError(
                f"unknown item {item_id!r}: not in the catalog ({len(catalog)} items)")), "unknown_item")
    return list(query.history)


def _check_where(query: UserQuery) -> None:
    """Chroma's own check of a metadata filter, so a bad one is a 422 naming `where`."""
    if query.where:
        from chromadb.api.types import validate_where

        try:
            validate_where(query.where)
        except (ValueError, TypeError) as exc:
            raise FieldError(422, ("body", "where"), f"not a Chroma metadata filter: {exc}", "bad_filter") from None


@router.post("/candidates", response_model=CandidateList)
def candidates(body: CandidatesRequest, state: ServeState) -> CandidateList:
    """Retrieval candidates (history excluded) with each source's score and rank."""
    history = _history(state, body)
    _check_where(body)
    return call(lambda: state.recommender().candidates(body.who, body.n, where=body.where, history=history))


@router.post("/recommend", response_model=RecommendationList)
def recommend(body: RecommendRequest, state: ServeState) -> RecommendationList:
    """Top-k: retrieval, LLM rerank, calibrated P(relevant). A failing generator gives
    retrieval's order, flagged `degraded` with the reason."""
    history = _history(state, body)
    _check_where(body)
    rec = state.recommender()
    if history is None and body.where is None and body.n_candidates is None and body.template is None:
        # The user's default list: kept whole, so that a "why?" that follows explains it
        # with the ranks shown, without ranking again.
        full = call(lambda: rec.recommend(body.who, max(body.k, rec.settings.n_candidates)))
        state.recent.put(full)
        return full.model_copy(update={"recommendations": full.recommendations[: body.k]})
    return call(lambda: rec.recommend(
        body.who, body.k, history=history, where=body.where, n_candidates=body.n_candidates,
        template=body.template,
    ))
