"""How the server answers errors: a field error in FastAPI's validation-error shape, or a 503
when the generator failed; `call` maps the library's exceptions onto them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from promptrec.errors import IndexMismatchError, UnknownItemError, UnknownUserError
from promptrec.explain.conversation import QuestionError
from promptrec.ranker.prompts import PromptError
from promptrec.serve.conversations import ConversationBusy, ConversationNotFound

ERROR_DOC = {"description": "the field named in detail[].loc is unknown", "content": {"application/json": {}}}
Loc = tuple[str | int, ...]
T = TypeVar("T")


class FieldError(Exception):
    """An error about one request field, answered as FastAPI answers a validation error."""

    def __init__(self, status: int, loc: Loc, msg: str, kind: str):
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


def add_error_handlers(app: FastAPI) -> None:
    """Answer `FieldError` and `GeneratorUnavailable` with their own responses."""
    for error in (FieldError, GeneratorUnavailable):
        app.add_exception_handler(error, lambda request, exc: exc.response())


def classify(exc: BaseException, fields: dict[str, Loc]) -> Exception:
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


def call(fn: Callable[[], T], **fields: Loc) -> T:
    """`fn()`, its exception raised as the HTTP error `classify` gives it."""
    try:
        return fn()
    except Exception as exc:  # each answered with its status
        raise classify(exc, fields) from exc

