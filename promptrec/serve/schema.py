"""Request and status bodies of the HTTP API (responses are the library's own models:
`CandidateList`, `RecommendationList`, `Explanation`, `Evidence`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from promptrec.explain.conversation import MAX_QUESTION_CHARS, Explanation, Suggestion
from promptrec.explain.refine import MAX_REQUEST_CHARS
from promptrec.serve.retrain import RetrainStatus

ANONYMOUS = "anonymous"


class _Request(BaseModel):
    """A request body: an unknown (e.g. misspelt) field is a 422 naming it, never ignored."""

    model_config = ConfigDict(extra="forbid")


class UserQuery(_Request):
    """Who to retrieve for: a known user, or an anonymous history (item ids, oldest first)."""

    # The rule below in the schema too: a body with neither is not schema-valid.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
        {"required": ["history"], "properties": {"history": {"type": "array"}}},
    ]})

    user_id: str | None = Field(None, description="A user of the interaction log.")
    history: list[str] | None = Field(
        None, max_length=2000,
        description="Item ids, oldest first: overrides the stored history; alone, an anonymous user.",
    )
    where: dict[str, Any] | None = Field(
        None, description='A Chroma metadata filter applied to every source, e.g. {"genre_Comedy": true}.'
    )

    @model_validator(mode="after")
    def _someone(self) -> UserQuery:
        if self.user_id is None and self.history is None:
            raise ValueError("give user_id, or history for an anonymous user")
        return self

    @property
    def who(self) -> str:
        return self.user_id if self.user_id is not None else ANONYMOUS


class CandidatesRequest(UserQuery):
    n: int | None = Field(None, ge=1, le=500, description="How many candidates (default: settings.n_candidates).")


class RecommendRequest(UserQuery):
    k: int = Field(10, ge=1, le=100, description="How many recommendations.")
    n_candidates: int | None = Field(None, ge=1, le=500, description="Candidates to rerank.")
    template: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,100}$", description="A rerank template name (`promptrec prompts list`; default: settings)."
    )


class WhyRequest(_Request):
    """Explain why an item is recommended; starts a conversation unless one is given."""

    user_id: str
    item_id: str
    conversation_id: str | None = Field(None, description="Continue this conversation (it must be the user's).")
    stream: bool = Field(True, description="Server-sent events (evidence, delta, done); false: one JSON body.")


class AskRequest(_Request):
    """A follow-up question about the item in focus of a conversation."""

    user_id: str
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=r"\w",
                          description="Holds at least one letter or digit (control characters are removed).")
    stream: bool = True


class RefineRequest(_Request):
    """A request that changes the conversation's list ("no horror", "something lighter")."""

    user_id: str
    request: str = Field(min_length=1, max_length=MAX_REQUEST_CHARS, pattern=r"\w",
                         description="What to change, in words: genres to leave out or keep to, "
                                     "'newer'/'older', a mood ('lighter', 'darker'), 'like this'.")
    k: int = Field(5, ge=1, le=50, description="How many items the new list holds.")


class NewConversation(_Request):
    user_id: str


class ConversationInfo(BaseModel):
    conversation_id: str
    user_id: str
    item_id: str | None  # the item in focus
    explanations: list[Explanation] = Field(default_factory=list)
    suggestions: list[Suggestion] = Field(default_factory=list)


class Answer(BaseModel):
    """A non-streamed answer (`stream: false`)."""

    conversation_id: str
    explanation: Explanation


class UserList(BaseModel):
    total: int
    users: list[str]


class IndexStatus(BaseModel):
    namespace: str
    items: int
    users: int
    encoder: str


class ModelStatus(BaseModel):
    generator: str  # settings.generator
    backend: str  # settings.ranker.backend
    model_id: str | None
    loaded: bool
    dtype: str | None  # the backend's compute dtype, when it has one
    server_url: str | None = None  # ranker.backend = vllm-server


class CalibrationStatus(BaseModel):
    template: str
    fitted: bool  # a calibration matching this model, template and encoder is in use
    detail: str | None = None  # why not


class DependencyStatus(BaseModel):
    """One thing the service needs, checked when /health is asked."""

    name: str  # "index files", "vector store", "generator server"
    ok: bool
    detail: str | None = None  # what is wrong and what to do


class Health(BaseModel):
    status: str  # "ok" | "degraded" (a dependency fails, the generator is not loaded or the calibration mismatches)
    dependencies: list[DependencyStatus]
    index: IndexStatus
    model: ModelStatus
    calibration: CalibrationStatus | None
    adapter: str | None = None  # the LoRA adapter the generator runs with; None: the base model
    conversations: int  # open ones (in the live store: every worker's)
    retraining: RetrainStatus | None = None  # serve.retrain_every_s: the last turn, the last failure
