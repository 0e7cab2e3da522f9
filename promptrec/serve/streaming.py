"""Answers as server-sent events: a blocking event iterator run in its own thread, with a
time limit for each event; a failure before the model's first output is still an HTTP status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from promptrec.explain.conversation import Conversation, Explanation
from promptrec.serve.conversations import Entry
from promptrec.serve.http_errors import Loc, classify
from promptrec.serve.schema import Answer

log = logging.getLogger("promptrec.serve")

SSE_DOC = {"content": {"text/event-stream": {}}, "description": "server-sent events, or an Answer with stream=false"}
_MODEL_OUTPUT = frozenset({"delta", "done"})
Events = Callable[[], Iterator[tuple[str, Any]]]


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _pump(make_events: Events, timeout_s: float | None,
                on_finish: Callable[[], None]) -> AsyncGenerator[tuple[str, Any], None]:
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


def conversation_events(conv: Conversation, events: Iterator[Any], evidence_first: bool) -> Iterator[tuple[str, Any]]:
    """A conversation's stream events as (event name, JSON data); the evidence first if asked."""
    if evidence_first and conv.evidence is not None:
        yield "evidence", conv.evidence.model_dump(mode="json")
    for event in events:
        if event.kind == "done":
            yield "done", event.explanation.model_dump(mode="json")
        else:
            yield event.kind, {"text": event.text}


async def answer(entry: Entry, events: Events, stream: bool, timeout_s: float | None,
                 fields: dict[str, Loc]) -> Any:
    """Claim the conversation, run `events` in a thread, and answer: SSE, or one Answer."""
    try:
        await run_in_threadpool(entry.claim)  # a stored conversation: the store marks it busy
    except Exception as exc:  # busy (409), or closed meanwhile (404)
        raise classify(exc, fields) from exc
    headers = {"X-Conversation-Id": entry.conversation_id}
    source = _pump(events, timeout_s, entry.release)
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
    except Exception as exc:
        await source.aclose()
        raise classify(exc, fields) from exc
    if not stream:
        done = next(data for kind, data in buffered if kind == "done")
        return JSONResponse(Answer(conversation_id=entry.conversation_id,
                                   explanation=Explanation.model_validate(done)).model_dump(mode="json"),
                            headers=headers)
    return StreamingResponse(_event_stream(entry, buffered, source, fields), media_type="text/event-stream",
                             headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _event_stream(entry: Entry, buffered: list[tuple[str, Any]], source: AsyncGenerator[tuple[str, Any], None],
                        fields: dict[str, Loc]) -> AsyncIterator[bytes]:
    try:
        for kind, data in buffered:
            yield _sse(kind, data)
        async for kind, data in source:
            yield _sse(kind, data)
    except Exception as exc:  # noqa: BLE001 - the status is sent already: say it in the stream
        error = classify(exc, fields)
        status = getattr(error, "status", 503)
        log.warning("answer for conversation %s failed: %s", entry.conversation_id, error)
        yield _sse("error", {"status": status, "detail": str(error)})
    finally:
        await source.aclose()
