"""``POST /events``, ``POST /items`` and ``DELETE /users/{user_id}``: writes to the live store
(`Recommender.add_interactions`, `add_items`, `forget_user`). Each answers after the write
committed; a bad row is a 422 (an unknown item a 404) naming its position and field, and nothing
of the batch is written."""

from __future__ import annotations

from fastapi import APIRouter
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from promptrec.data.schema import Interaction, Item
from promptrec.serve.http_errors import BODY_ERRORS, FieldError, call
from promptrec.serve.state import ServeState
from promptrec.store import ErasureReceipt, IngestReceipt

TOO_MANY = {413: {"description": "more rows than serve.max_batch", "content": {"application/json": {}}}}
router = APIRouter(tags=["live"], responses={**BODY_ERRORS, **TOO_MANY})


def _no_lone_surrogates(value: object) -> object:
    """Text a database can store: a lone surrogate (invalid UTF-16 from JSON) is refused."""
    texts = [value] if isinstance(value, str) else []
    if isinstance(value, BaseModel):
        texts = [str(v) for v in value.model_dump().values()]
    if any("\ud800" <= ch <= "\udfff" for text in texts for ch in text):
        raise ValueError("the text holds a lone surrogate (not valid Unicode)")
    return value


class EventsRequest(BaseModel):
    """A batch of interactions: user, item, and optionally timestamp (seconds), rating, behaviour."""

    events: list[Annotated[Interaction, AfterValidator(_no_lone_surrogates)]] = Field(min_length=1)


class ItemsRequest(BaseModel):
    """New or changed catalog entries."""

    items: list[Annotated[Item, AfterValidator(_no_lone_surrogates)]] = Field(min_length=1)


def _check_batch(state, rows: list, field: str) -> None:
    limit = state.recommender().settings.serve.max_batch
    if len(rows) > limit:
        raise FieldError(413, ("body", field), f"{len(rows)} {field} in one request; at most {limit} "
                         "(serve.max_batch): send them in several", "too_many")


@router.post("/events", response_model=IngestReceipt)
def add_events(body: EventsRequest, state: ServeState) -> IngestReceipt:
    """Append interactions; the users' next `/recommend` reads them. An event whose item is in no
    catalog is refused (404 naming it, as an unknown item is everywhere in the API), not dropped."""
    _check_batch(state, body.events, "events")
    rec = state.recommender()
    for position, event in enumerate(body.events):
        if event.item_id not in rec.catalog:
            raise FieldError(404, ("body", "events", position, "item_id"),
                             f"item {event.item_id!r} is in no catalog: add it with POST /items first; "
                             "nothing of this batch was written", "unknown_item")
    receipt = call(lambda: rec.add_interactions(body.events), rows=("body", "events"))
    state.metrics.events.inc(receipt.accepted)
    return receipt


@router.post("/items", response_model=IngestReceipt)
def add_items(body: ItemsRequest, state: ServeState) -> IngestReceipt:
    """Add or change catalog entries: retrievable at once through their text vectors, learned by
    the trained sources at the next index build."""
    _check_batch(state, body.items, "items")
    receipt = call(lambda: state.recommender().add_items(body.items), rows=("body", "items"))
    state.metrics.items.inc(receipt.accepted)
    return receipt


@router.delete("/users/{user_id}", response_model=ErasureReceipt)
def forget_user(user_id: str, state: ServeState) -> ErasureReceipt:
    """Erase a user: their stored events, their history, their open conversations; the next
    index build leaves them out of training."""
    receipt = call(lambda: state.recommender().forget_user(user_id), user=("path", "user_id"))
    closed = state.conversations.close_user(user_id, "the user was erased")
    return receipt.model_copy(update={"note": f"{receipt.note}; {closed} open conversation(s) closed"})
