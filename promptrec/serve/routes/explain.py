"""Conversations about a user's recommendations: ``POST /why`` and
``POST /conversations/{id}/ask`` (server-sent events), ``POST /conversations/{id}/refine`` (a new
list for a request), and a conversation's start, transcript and end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool

from promptrec.serve.conversations import Entry
from promptrec.serve.http_errors import BODY_ERRORS, FieldError, Loc, call
from promptrec.explain.conversation import Suggestion
from promptrec.explain.refine import Refined
from promptrec.serve.schema import (
    AskRequest,
    ConversationInfo,
    NewConversation,
    RefineRequest,
    WhyRequest,
)
from promptrec.serve.state import ServeState
from promptrec.serve.streaming import SSE_DOC, answer, conversation_events

router = APIRouter(tags=["explain"], responses=BODY_ERRORS)


def _info(entry: Entry, suggestions: list[Suggestion] | None = None) -> ConversationInfo:
    conv = entry.conversation
    return ConversationInfo(
        conversation_id=entry.conversation_id, user_id=conv.user_id,
        item_id=conv.evidence.item.item_id if conv.evidence else None,
        explanations=list(conv.explanations),
        suggestions=suggestions or [],
    )


_CONVERSATION = {"conversation_id": "$response.body#/conversation_id", "user_id": "$response.body#/user_id"}
#: OpenAPI links: how a client (and the contract test's stateful phase) goes on from a response.
_STARTED_LINKS = {
    "GetConversation": {"operationId": "get_conversation", "parameters": _CONVERSATION,
                        "description": "The conversation's answers so far."},
    "EndConversation": {"operationId": "end_conversation", "parameters": _CONVERSATION,
                        "description": "End the conversation."},
    "Ask": {"operationId": "ask", "description": "A question (answered once an item is in focus: POST /why first).",
            "parameters": {"conversation_id": "$response.body#/conversation_id"},
            "requestBody": {"user_id": "$response.body#/user_id"}},
    "WhyFirstSuggestion": {
        "operationId": "why", "description": "Ask why the first suggestion, in this conversation.",
        "requestBody": {**_CONVERSATION, "item_id": "$response.body#/suggestions/0/item_id", "stream": False},
    },
}
_ANSWERED_LINKS = {
    "AskFollowUp": {"operationId": "ask", "description": "A follow-up question about the item in focus.",
                    "parameters": {"conversation_id": "$response.body#/conversation_id"},
                    "requestBody": {"user_id": "$request.body#/user_id", "question": "What else is it like?",
                                    "stream": False}},
}


@router.post("/conversations", response_model=ConversationInfo, status_code=201, operation_id="new_conversation",
             responses={201: {"description": "The conversation started", "links": _STARTED_LINKS}})
def new_conversation(body: NewConversation, state: ServeState) -> ConversationInfo:
    """Start a conversation for a user; returns its id and the user's ranked suggestions."""
    conv = call(lambda: state.conversation(body.user_id))
    suggestions = call(conv.suggestions)  # before it is stored: the ranked list is part of its state
    entry = state.conversations.add(conv)
    return _info(entry, suggestions)


@router.get("/conversations/{conversation_id}", response_model=ConversationInfo, operation_id="get_conversation")
def get_conversation(conversation_id: str, state: ServeState, user_id: str = Query(...)) -> ConversationInfo:
    """The conversation's answers so far (only with the user it belongs to)."""
    return _info(call(lambda: state.conversations.get(conversation_id, user_id), user=("query", "user_id")))


@router.delete("/conversations/{conversation_id}", status_code=204, operation_id="end_conversation")
def end_conversation(conversation_id: str, state: ServeState, user_id: str = Query(...)) -> None:
    call(lambda: state.conversations.remove(conversation_id, user_id))


@router.post("/why", operation_id="why",
             responses={200: {**SSE_DOC, "links": _ANSWERED_LINKS}, 503: {"description": "generator failed"}})
async def why(body: WhyRequest, state: ServeState) -> Any:
    """Why this item for this user: the grounded answer streamed as server-sent events
    (`conversation`, `evidence`, `delta`… (sentences that passed the checks), `done` with the Explanation; `error`),
    in a new conversation unless `conversation_id` names one of the user's."""
    rec = state.recommender()
    fields: dict[str, Loc] = {"conversation": ("body", "conversation_id")}
    if body.conversation_id is not None:
        entry = await run_in_threadpool(call, lambda: state.conversations.get(body.conversation_id, body.user_id),
                                        **fields)
    else:
        call(lambda: rec.history(body.user_id))
    call(lambda: rec.item(body.item_id))
    if body.conversation_id is None:
        conv = await run_in_threadpool(state.conversation, body.user_id)
        entry = await run_in_threadpool(state.conversations.add, conv)
    conv = entry.conversation

    def events() -> Iterator[tuple[str, Any]]:
        conv.focus(body.item_id)
        yield from conversation_events(conv, conv.why_stream(body.item_id), evidence_first=True)

    return await answer(entry, events, body.stream, rec.settings.ranker.timeout_s, fields)


@router.post("/conversations/{conversation_id}/ask", operation_id="ask",
             responses={200: SSE_DOC, 409: {"description": "no item in focus, or busy"}})
async def ask(conversation_id: str, body: AskRequest, state: ServeState) -> Any:
    """A follow-up question about the conversation's item in focus, streamed like /why."""
    entry = await run_in_threadpool(call, lambda: state.conversations.get(conversation_id, body.user_id))
    conv = entry.conversation
    if conv.evidence is None:
        raise FieldError(409, ("path", "conversation_id"),
                         "no item in focus: ask POST /why with this conversation_id first", "no_focus")
    question = call(lambda: conv.check_question(body.question))

    def events() -> Iterator[tuple[str, Any]]:
        yield from conversation_events(conv, conv.ask_stream(question), evidence_first=False)

    return await answer(entry, events, body.stream, state.recommender().settings.ranker.timeout_s, {})


@router.post("/conversations/{conversation_id}/refine", response_model=Refined, operation_id="refine",
             responses={409: {"description": "busy"}})
def refine(conversation_id: str, body: RefineRequest, state: ServeState) -> Refined:
    """A new list for a request such as "no horror", "something lighter" or "more like this but
    newer": the user's candidates filtered and reordered, each item with its reasons; what the
    request asked that was not understood is in `note`. The items join the conversation's list."""
    entry = call(lambda: state.conversations.get(conversation_id, body.user_id))
    call(entry.claim)
    try:
        return call(lambda: entry.conversation.refine(body.request, body.k))
    finally:
        entry.release()
