"""How the server answers errors: a field error in FastAPI's validation-error shape, or a 503
when the generator failed; `call` maps the library's exceptions onto them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI
from fastapi.responses import JSONResponse

import logging
import re

from promptrec.errors import (
    FilterError,
    IndexMismatchError,
    InputError,
    SettingsError,
    UnknownItemError,
    UnknownUserError,
)
from promptrec.explain.conversation import QuestionError
from promptrec.ranker.prompts import PromptError
from promptrec.serve.conversations import ConversationBusy, ConversationNotFound
from promptrec.store import StoreError

log = logging.getLogger("promptrec")
_PATH = re.compile(r"(?<![\w.:/])/(?:[^/\s'\"]+/)+([^/\s'\"]+)")


def public(message: str) -> str:
    """A message for an HTTP client: machine paths shortened to their last part ("…/manifest.json")."""
    return _PATH.sub(r"…/\1", message)


ERROR_DOC = {"description": "the field named in detail[].loc is unknown", "content": {"application/json": {}}}
NOT_JSON_DOC = {"description": "the body is not JSON (or not UTF-8 text)", "content": {"application/json": {}}}
#: What every operation with a request body may answer besides its own statuses.
BODY_ERRORS = {400: NOT_JSON_DOC, 404: ERROR_DOC}
Loc = tuple[str | int, ...]
T = TypeVar("T")


class FieldError(Exception):
    """An error about one request field, answered as FastAPI answers a validation error."""

    def __init__(self, status: int, loc: Loc, msg: str, kind: str):
        super().__init__(msg)
        self.status, self.loc, self.msg, self.kind = status, loc, msg, kind

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"detail": [{"loc": list(self.loc), "msg": public(self.msg), "type": self.kind}]}, status_code=self.status
        )


class GeneratorUnavailable(Exception):
    """The generator failed or stalled: a 503 with the reason."""

    status = 503

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": public(str(self))}, status_code=self.status)


class ServerMisconfigured(GeneratorUnavailable):
    """The server's own settings or templates are broken: a 500 that says so (not the client's fault)."""

    status = 500


def _internal_error(request: object, exc: Exception) -> JSONResponse:
    log.exception("unhandled error answering a request")
    return JSONResponse({"detail": "internal server error (logged on the server)"}, status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """Answer `FieldError` and `GeneratorUnavailable` with their own responses, anything else
    with a JSON 500 that carries no traceback or path."""
    for error in (FieldError, GeneratorUnavailable):
        app.add_exception_handler(error, lambda request, exc: exc.response())
    app.add_exception_handler(Exception, _internal_error)


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
        if "template" not in fields:  # the server's own template: its configuration, not the request
            return ServerMisconfigured(f"the server's prompt template is broken (its configuration): {exc}")
        from promptrec.ranker.prompts import list_templates

        return FieldError(422, fields["template"],
                          f"no such rerank template (available: {', '.join(list_templates('rerank'))})", "bad_template")
    if isinstance(exc, FilterError):
        return FieldError(422, fields.get("where", ("body", "where")), str(exc), "bad_filter")
    if isinstance(exc, (SettingsError, InputError)) and "n_candidates" in fields and "n_candidates" in str(exc):
        return FieldError(422, fields["n_candidates"], str(exc), "bad_n_candidates")
    if isinstance(exc, SettingsError):
        return ServerMisconfigured(f"the server's settings are invalid: {exc}")
    if isinstance(exc, TimeoutError):
        return GeneratorUnavailable(f"the generator did not answer in time: {exc or 'timed out'}")
    if isinstance(exc, StoreError):
        return GeneratorUnavailable(f"the live store is unavailable: {exc}")
    if isinstance(exc, InputError) and "rows" in fields:
        return FieldError(422, fields["rows"], str(exc), "bad_row")
    if isinstance(exc, IndexMismatchError):
        return GeneratorUnavailable(f"the server's index or calibration does not match its model: {exc}")
    return GeneratorUnavailable(f"the generator failed: {type(exc).__name__}: {exc}")


def call(fn: Callable[[], T], **fields: Loc) -> T:
    """`fn()`, its exception raised as the HTTP error `classify` gives it."""
    try:
        return fn()
    except Exception as exc:  # each answered with its status
        raise classify(exc, fields) from exc

