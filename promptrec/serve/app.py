"""The HTTP API: `create_app(rec)` (or `create_app()` from the settings, as a uvicorn factory).

Endpoints (OpenAPI at ``/docs``): ``GET /health``, ``GET /users``, ``POST /candidates``,
``POST /recommend``, ``POST /why`` (server-sent events), ``POST /conversations``,
``GET|DELETE /conversations/{id}``, ``POST /conversations/{id}/ask`` (server-sent events),
``POST /events``, ``POST /items``, ``DELETE /users/{id}`` (the live store), ``GET /metrics``
(Prometheus), and the chat page at ``/``. API keys and the body limit: `promptrec.serve.guard`.

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
  holds its own user's evidence. They live in the live store (``serve.conversations``), so
  any worker goes on with any of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.trustedhost import TrustedHostMiddleware

from promptrec.config import Settings
from promptrec.recommender import Recommender
from promptrec.serve.conversations import ConversationStore
from promptrec.serve.http_errors import add_error_handlers
from promptrec.serve.guard import install_guard
from promptrec.serve.retrain import RetrainSchedule
from promptrec.serve.routes import explain, live, page, recommend, status
from promptrec.serve.state import AppState


def create_app(rec: Recommender | None = None, *, preload: bool = True,
               store: ConversationStore | None = None,
               conversation_options: dict[str, Any] | None = None) -> FastAPI:
    """The API over `rec` (default: `Recommender.from_settings(build=False)`, the configured
    index, which must have been built: `promptrec index`). `preload` loads the generator at
    start-up, so the first request does not pay for it. `store`: where conversations live
    (default: as ``serve.conversations`` says). `conversation_options` go to every
    `Conversation` (e.g. ``max_new_tokens``)."""
    state = AppState(rec, conversations=store, options=dict(conversation_options or {}))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.rec is None:
            state.rec = await run_in_threadpool(Recommender.from_settings, None, False)
        await run_in_threadpool(state.open_conversations)
        if preload:
            await run_in_threadpool(state.load_model)
        every = state.recommender().settings.serve.retrain_every_s
        if every is not None:
            state.retraining = RetrainSchedule(state, every)
            state.retraining.start()
        try:
            yield
        finally:
            if state.retraining is not None:
                state.retraining.stop()

    app = FastAPI(
        title="promptrec",
        summary="LLM-reranked recommendations with calibrated probabilities, and grounded 'why this item?' answers.",
        lifespan=lifespan,
    )
    app.state.serve = state
    settings = rec.settings if rec is not None else Settings()
    install_guard(app, settings.serve, state.metrics)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.serve.allowed_hosts)
    add_error_handlers(app)
    for router in (status.router, recommend.router, explain.router, live.router, page.router):
        app.include_router(router)
    page.mount_static(app)
    return app
