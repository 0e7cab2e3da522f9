"""The HTTP API: `create_app(rec)` (or `create_app()` from the settings, as a uvicorn factory).

Endpoints (OpenAPI at ``/docs``): ``GET /health``, ``GET /users``, ``POST /candidates``,
``POST /recommend``, ``POST /why`` (server-sent events), ``POST /conversations``,
``GET|DELETE /conversations/{id}``, ``POST /conversations/{id}/ask`` (server-sent events),
and the chat page at ``/``.

* The model is loaded once, at start-up, and shared: blocking work runs in threads, and the
  Recommender's and the backend's locks serialise what must be serialised.
* Errors name the field: an unknown user or item is a 404 and a bad value a 422, both with
  FastAPI's ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` body; a busy
  conversation is a 409.
* A failing generator never hangs a request: `/recommend` returns retrieval's order flagged
  ``degraded`` (the reranker's own timeout); an answer (`/why`, `/ask`) waits at most
  ``ranker.timeout_s`` for each piece, and a generator that fails or stalls before the first
  piece is a 503 whose ``detail`` says why; after it, an ``error`` event ends the stream.
* Conversations are bound to a user: every conversation request carries the ``user_id``, and
  an id used with another user's id is a 404, like an unknown one. A conversation only ever
  holds its own user's evidence. They live in the worker process that created them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from promptrec.errors import IndexMismatchError, PromptrecError, UnknownItemError, UnknownUserError
from promptrec.explain.conversation import Conversation, Explanation, QuestionError
from promptrec.ranker.prompts import PromptError
from promptrec.recommender import Recommender
from promptrec.retrieval.schema import CandidateList
from promptrec.schema import RecommendationList
from promptrec.serve.conversations import ConversationBusy, ConversationNotFound, ConversationStore, Entry
from promptrec.serve.schema import (
    Answer,
    AskRequest,
    CalibrationStatus,
    CandidatesRequest,
    ConversationInfo,
    Health,
    IndexStatus,
    ModelStatus,
    NewConversation,
    RecommendRequest,
    UserList,
    UserQuery,
    WhyRequest,
)

log = logging.getLogger("promptrec.serve")

_MODEL_OUTPUT = frozenset({"delta", "retract", "done"})
_ERROR_DOC = {"description": "the field named in detail[].loc is unknown", "content": {"application/json": {}}}
_SSE_DOC = {"content": {"text/event-stream": {}}, "description": "server-sent events, or an Answer with stream=false"}


class FieldError(Exception):
    """An error about one request field, answered as FastAPI answers a validation error."""

    def __init__(self, status: int, loc: tuple[str | int, ...], msg: str, kind: str):
        super().__init__(msg)
        self.status, self.loc, self.msg, self.kind = status, loc, msg, kind

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": list(self.loc), "msg": self.msg, "type": self.kind}]}, status_code=self.status
        )


class GeneratorUnavailable(Exception):
    """The generator failed or stalled: a 503 with the reason."""

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": str(self)}, status_code=503)


def _classify(exc: BaseException, fields: dict[str, tuple[str | int, ...]]) -> Exception:
    """The HTTP error for an exception raised while answering (`fields`: where user and item came from)."""
    if isinstance(exc, (FieldError, GeneratorUnavailable)):
        return exc
    if isinstance(exc, UnknownUserError):
        return FieldError(404, fields.get("user", ("body", "user_id")), str(exc), "unknown_user")
    if isinstance(exc, UnknownItemError):
        return FieldError(404, fields.get("item", ("body", "item_id")), str(exc), "unknown_item")
    if isinstance(exc, ConversationNotFound):
        return FieldError(404, fields.get("conversation", ("path", "conversation_id")), str(exc), "unknown_conversation")
    if isinstance(exc, ConversationBusy):
        return FieldError(409, fields.get("conversation", ("path", "conversation_id")), str(exc), "conversation_busy")
    if isinstance(exc, QuestionError):
        return FieldError(422, ("body", "question"), str(exc), "bad_question")
    if isinstance(exc, PromptError):
        from promptrec.ranker.prompts import list_templates

        return FieldError(422, ("body", "template"),
                          f"no such rerank template (available: {', '.join(list_templates('rerank'))})", "bad_template")
    if isinstance(exc, TimeoutError):
        return GeneratorUnavailable(f"the generator did not answer in time: {exc or 'timed out'}")
    if isinstance(exc, IndexMismatchError):
        return GeneratorUnavailable(f"the server's index or calibration does not match its model: {exc}")
    return GeneratorUnavailable(f"the generator failed: {type(exc).__name__}: {exc}")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _pump(make_events: Callable[[], Iterator[tuple[str, Any]]], timeout_s: float | None,
                on_finish: Callable[[], None]) -> AsyncIterator[tuple[str, Any]]:
    """Run a blocking event iterator in its own thread; wait at most `timeout_s` for each
    event (TimeoutError past it). Leaving early stops the iterator at its next event."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone (server shutting down)
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        events = None
        try:
            events = make_events()
            for event in events:
                put(("event", event))
                if stop.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            put(("error", exc))
        finally:
            with contextlib.suppress(Exception):
                if events is not None and hasattr(events, "close"):
                    events.close()  # closing a model stream stops its generation
            on_finish()
            put(("end", None))

    threading.Thread(target=work, name="promptrec-serve-answer", daemon=True).start()
    try:
        while True:
            kind, value = await asyncio.wait_for(queue.get(), timeout_s)
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    except asyncio.TimeoutError:
        raise TimeoutError(f"no output for ranker.timeout_s = {timeout_s:g} s") from None
    finally:
        stop.set()


class RecentLists:
    """Each user's latest default recommendation list (all candidates ranked), for a while:
    the conversation that explains it starts from it instead of ranking again."""

    def __init__(self, max_users: int = 1000, ttl_s: float = 600.0):
        self.max_users, self.ttl_s = max_users, ttl_s
        self._lists: OrderedDict[str, tuple[float, RecommendationList]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, result: RecommendationList) -> None:
        if result.degraded:  # a degraded list is not worth explaining from
            return
        with self._lock:
            self._lists[result.user_id] = (time.monotonic(), result)
            self._lists.move_to_end(result.user_id)
            while len(self._lists) > self.max_users:
                self._lists.popitem(last=False)

    def get(self, user_id: str) -> RecommendationList | None:
        with self._lock:
            found = self._lists.get(str(user_id))
        if found is None or time.monotonic() - found[0] > self.ttl_s:
            return None
        return found[1]


def create_app(rec: Recommender | None = None, *, preload: bool = True,
               store: ConversationStore | None = None,
               conversation_options: dict[str, Any] | None = None) -> FastAPI:
    """The API over `rec` (default: `Recommender.from_settings(build=False)`, the configured
    index, which must have been built: `promptrec index`). `preload` loads the generator at
    start-up, so the first request does not pay for it. `conversation_options` go to every
    `Conversation` (e.g. ``max_new_tokens``)."""
    options = dict(conversation_options or {})
    recent = RecentLists()
    conversations = store or ConversationStore()
    state: dict[str, Any] = {"rec": rec}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state["rec"] is None:
            state["rec"] = await run_in_threadpool(Recommender.from_settings, None, False)
        if preload:
            await run_in_threadpool(_load_model)
        yield

    def _rec() -> Recommender:
        assert state["rec"] is not None, "the app has not started (use it as a context manager)"
        return state["rec"]

    def _load_model() -> None:
        r = _rec()
        reranker = r.reranker()  # loads the backend, shared by every request
        state["backend"] = reranker.backend
        with contextlib.suppress(PromptrecError):  # reported by /health
            r.calibrator(reranker)

    app = FastAPI(
        title="promptrec",
        summary="LLM-reranked recommendations with calibrated probabilities, and grounded 'why this item?' answers.",
        lifespan=lifespan,
    )
    app.state.conversations = conversations

    for error in (FieldError, GeneratorUnavailable):
        app.add_exception_handler(error, lambda request, exc: exc.response())

    def _history(query: UserQuery) -> list[str] | None:
        if query.history is None:
            return None
        r = _rec()
        for position, item_id in enumerate(query.history):
            if str(item_id) not in r.catalog:
                raise FieldError(404, ("body", "history", position), str(UnknownItemError(
                    f"unknown item {item_id!r}: not in the catalog ({len(r.catalog)} items)")), "unknown_item")
        return list(query.history)

    def _where(query: UserQuery) -> None:
        """Chroma's own check of a metadata filter, so a bad one is a 422 naming `where`."""
        if query.where:
            from chromadb.api.types import validate_where

            try:
                validate_where(query.where)
            except (ValueError, TypeError) as exc:
                raise FieldError(422, ("body", "where"), f"not a Chroma metadata filter: {exc}", "bad_filter") from None

    def _call(fn: Callable[[], Any], **fields: tuple[str | int, ...]) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - each answered with its status
            raise _classify(exc, fields) from exc

    # ------------------------------------------------------------------ status

    @app.get("/health", response_model=Health, tags=["status"])
    def health() -> Health:
        """Index, generator (dtype, loaded or not), calibration and adapter status."""
        r = _rec()
        settings = r.settings
        manifest = r.index.manifest
        backend = state.get("backend")
        dtype = getattr(backend, "dtype", None)
        calibration, mismatch = None, False
        if backend is not None:
            reranker = r.reranker()
            try:
                fitted = r.calibrator(reranker) is not None
                detail = None if fitted else "no calibration fitted: run `promptrec calibrate` (order by LLM score)"
            except PromptrecError as exc:
                fitted, detail, mismatch = False, str(exc), True
            if not settings.ranker.calibrate:
                fitted, detail, mismatch = False, "ranker.calibrate is off", False
            calibration = CalibrationStatus(template=reranker.template.name, fitted=fitted, detail=detail)
        return Health(
            status="ok" if backend is not None and not mismatch else "degraded",
            index=IndexStatus(namespace=manifest.namespace, items=len(manifest.item_ids), users=manifest.n_users,
                              encoder=settings.encoder),
            model=ModelStatus(
                generator=settings.generator, backend=settings.ranker.backend,
                model_id=getattr(backend, "model_id", None), loaded=backend is not None,
                dtype=None if dtype is None else str(dtype).removeprefix("torch."),
                server_url=settings.ranker.server_url if settings.ranker.backend == "vllm-server" else None,
            ),
            calibration=calibration,
            adapter=getattr(backend, "adapter", None),
            conversations=len(conversations),
        )

    @app.get("/users", response_model=UserList, tags=["status"])
    def users(limit: int = Query(100, ge=1, le=10000), offset: int = Query(0, ge=0)) -> UserList:
        """User ids of the interaction log (ids only, no records)."""
        ids = list(_rec().histories)
        return UserList(total=len(ids), users=ids[offset: offset + limit])

    # ------------------------------------------------------------------ retrieval and ranking

    @app.post("/candidates", response_model=CandidateList, tags=["recommend"], responses={404: _ERROR_DOC})
    def candidates(body: CandidatesRequest) -> CandidateList:
        """Retrieval candidates (history excluded) with each source's score and rank."""
        history, _ = _history(body), _where(body)
        return _call(lambda: _rec().candidates(body.who, body.n, where=body.where, history=history))

    @app.post("/recommend", response_model=RecommendationList, tags=["recommend"], responses={404: _ERROR_DOC})
    def recommend(body: RecommendRequest) -> RecommendationList:
        """Top-k: retrieval, LLM rerank, calibrated P(relevant). A failing generator gives
        retrieval's order, flagged `degraded` with the reason."""
        history, _ = _history(body), _where(body)
        r = _rec()
        if history is None and body.where is None and body.n_candidates is None and body.template is None:
            # The user's default list: kept whole, so that a "why?" that follows explains it
            # with the ranks shown, without ranking again.
            full = _call(lambda: r.recommend(body.who, max(body.k, r.settings.n_candidates)))
            recent.put(full)
            return full.model_copy(update={"recommendations": full.recommendations[: body.k]})
        return _call(lambda: r.recommend(
            body.who, body.k, history=history, where=body.where, n_candidates=body.n_candidates,
            template=body.template,
        ))

    # ------------------------------------------------------------------ conversations

    def _conversation(user_id: str) -> Conversation:
        return Conversation(_rec(), user_id, **{"recommendations": recent.get(user_id), **options})

    def _info(entry: Entry, with_suggestions: bool = False) -> ConversationInfo:
        conv = entry.conversation
        return ConversationInfo(
            conversation_id=entry.conversation_id, user_id=conv.user_id,
            item_id=conv.evidence.item.item_id if conv.evidence else None,
            explanations=list(conv.explanations),
            suggestions=conv.suggestions() if with_suggestions else [],
        )

    @app.post("/conversations", response_model=ConversationInfo, status_code=201, tags=["explain"],
              responses={404: _ERROR_DOC})
    def new_conversation(body: NewConversation) -> ConversationInfo:
        """Start a conversation for a user; returns its id and the user's ranked suggestions."""
        entry = _call(lambda: conversations.add(_conversation(body.user_id)))
        return _call(lambda: _info(entry, with_suggestions=True))

    @app.get("/conversations/{conversation_id}", response_model=ConversationInfo, tags=["explain"],
             responses={404: _ERROR_DOC})
    def get_conversation(conversation_id: str, user_id: str = Query(...)) -> ConversationInfo:
        """The conversation's answers so far (only with the user it belongs to)."""
        return _info(_call(lambda: conversations.get(conversation_id, user_id), user=("query", "user_id")))

    @app.delete("/conversations/{conversation_id}", status_code=204, tags=["explain"], responses={404: _ERROR_DOC})
    def end_conversation(conversation_id: str, user_id: str = Query(...)) -> None:
        _call(lambda: conversations.remove(conversation_id, user_id))

    async def _answer(entry: Entry, events: Callable[[], Iterator[tuple[str, Any]]], stream: bool,
                      fields: dict[str, tuple[str | int, ...]]) -> Any:
        """Claim the conversation, run `events` in a thread, and answer: SSE, or one Answer."""
        try:
            entry.claim()
        except ConversationBusy as exc:
            raise _classify(exc, fields) from exc
        timeout = _rec().settings.ranker.timeout_s
        headers = {"X-Conversation-Id": entry.conversation_id}
        source = _pump(events, timeout, entry.release)
        buffered: list[tuple[str, Any]] = [("conversation", {"conversation_id": entry.conversation_id,
                                                             "user_id": entry.conversation.user_id})]
        try:  # up to the model's first output: a failure here is still an HTTP status
            async for event in source:
                buffered.append(event)
                if event[0] in _MODEL_OUTPUT:
                    break
            if not stream:
                async for event in source:
                    buffered.append(event)
        except Exception as exc:  # noqa: BLE001
            await source.aclose()
            raise _classify(exc, fields) from exc
        if not stream:
            done = next(data for kind, data in buffered if kind == "done")
            return JSONResponse(Answer(conversation_id=entry.conversation_id,
                                       explanation=Explanation.model_validate(done)).model_dump(mode="json"),
                                headers=headers)

        async def body() -> AsyncIterator[bytes]:
            try:
                for kind, data in buffered:
                    yield _sse(kind, data)
                async for kind, data in source:
                    yield _sse(kind, data)
            except Exception as exc:  # noqa: BLE001 - the status is sent already: say it in the stream
                error = _classify(exc, fields)
                status = getattr(error, "status", 503)
                log.warning("answer for conversation %s failed: %s", entry.conversation_id, error)
                yield _sse("error", {"status": status, "detail": str(error)})
            finally:
                await source.aclose()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def _stream_events(conv: Conversation, events: Iterator[Any], evidence_first: bool) -> Iterator[tuple[str, Any]]:
        if evidence_first and conv.evidence is not None:
            yield "evidence", conv.evidence.model_dump(mode="json")
        for event in events:
            if event.kind == "done":
                yield "done", event.explanation.model_dump(mode="json")
            else:
                yield event.kind, {"text": event.text}

    @app.post("/why", tags=["explain"], responses={200: _SSE_DOC, 404: _ERROR_DOC, 503: {"description": "generator failed"}})
    async def why(body: WhyRequest) -> Any:
        """Why this item for this user: the grounded answer streamed as server-sent events
        (`conversation`, `evidence`, `delta`…, `retract`, `done` with the Explanation; `error`),
        in a new conversation unless `conversation_id` names one of the user's."""
        r = _rec()
        fields: dict[str, tuple[str | int, ...]] = {"conversation": ("body", "conversation_id")}
        if body.conversation_id is not None:
            entry = _call(lambda: conversations.get(body.conversation_id, body.user_id), **fields)
        else:
            _call(lambda: r.history(body.user_id))
        _call(lambda: r.item(body.item_id))
        if body.conversation_id is None:
            entry = conversations.add(await run_in_threadpool(_conversation, body.user_id))
        conv = entry.conversation

        def events() -> Iterator[tuple[str, Any]]:
            conv.focus(body.item_id)
            yield from _stream_events(conv, conv.why_stream(body.item_id), evidence_first=True)

        return await _answer(entry, events, body.stream, fields)

    @app.post("/conversations/{conversation_id}/ask", tags=["explain"],
              responses={200: _SSE_DOC, 404: _ERROR_DOC, 409: {"description": "no item in focus, or busy"}})
    async def ask(conversation_id: str, body: AskRequest) -> Any:
        """A follow-up question about the conversation's item in focus, streamed like /why."""
        entry = _call(lambda: conversations.get(conversation_id, body.user_id))
        conv = entry.conversation
        if conv.evidence is None:
            raise FieldError(409, ("path", "conversation_id"),
                             "no item in focus: ask POST /why with this conversation_id first", "no_focus")
        question = _call(lambda: conv.check_question(body.question))

        def events() -> Iterator[tuple[str, Any]]:
            yield from _stream_events(conv, conv.ask_stream(question), evidence_first=False)

        return await _answer(entry, events, body.stream, {})

    # ------------------------------------------------------------------ the page

    static = resources.files("promptrec.serve") / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (static / "index.html").read_text(encoding="utf-8")

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app
