"""A "why this item?" conversation with one user, grounded in that user's own records.

    conv = explain(rec, "1", "50")
    conv.explanation.text                    # the answer
    conv.explanation.evidence.related        # the history items it rests on (real ids)
    conv.explanation.grounding               # "ok" | "trimmed" | "regenerated" | "fallback"
    conv.ask("What do they have in common?") # continues with the earlier turns in context
    conv.why("172")                          # switch to another item
    conv.recommend_more(5)                   # the next recommendations, not yet shown
    conv.refine("no horror, something lighter")  # a new list for a request, with its reasons

How one answer is made:

1. The evidence for the item in focus is built deterministically (`build_evidence`: the
   history items whose removal lowers the item's retrieval score most) and rendered into the
   system message of the template (``prompts/explain/*.j2``). It is the only record data the
   model sees, and it belongs to this conversation's user only.
2. A "why" answer starts with the template's ``answer_lead``, written from the evidence
   ("Because you watched" and the evidence item that moved the score most); the model
   continues it (greedy, ``max_new_tokens`` capped), so the answer cites the evidence by
   construction. On a backend that constrains decoding (transformers), text the model opens
   a double quote for can only be a title shown to it, each once.
   Each sentence is checked before it is kept or streamed: `TitleIndex.check`
   looks for catalog titles outside the allowed set (the items shown to the model in this
   conversation), invented titles and numbers, roles and words. The first sentence that
   fails ends the answer there (``trimmed``); an answer with no sentence that passes is
   regenerated once, with the allowed titles spelt out; if that fails too, the template's
   plain ``fallback`` explanation, built from the evidence alone, replaces it. Nothing shown
   is ever withdrawn. `Explanation.grounding` says which happened, ``offending`` names what
   failed and ``rejected`` keeps the failed texts. A question asking for other users'
   records, for the instructions or for a fact the item's record lacks ("who directed it?") is
   declined without a model call (`promptrec.explain.scope`; grounding ``declined``, the
   template's ``declined`` block: "the records don't say ...").
3. The turn joins the context. Before each call the context is trimmed oldest turn first
   to ``max_history_tokens`` / ``max_turns``; the system message (the evidence) and the
   current question are never trimmed.

Questions are untrusted text: empty ones and ones over ``max_question_chars`` are refused
(`QuestionError`), chat-template markers and control characters are removed.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from promptrec.errors import PromptrecError, UnknownItemError
from promptrec.explain.evidence import SHORTLIST, Evidence, build_evidence
from promptrec.explain.faithfulness import Faithfulness, measure_faithfulness
from promptrec.explain.grounding import GroundingCheck, TitleIndex
from promptrec.explain.prompts import (
    DEFAULT_TEMPLATE,
    ExplainTemplate,
    evidence_variables,
    load_explain_template,
    safe_title,
)
from promptrec.explain.refine import Refined, parse_refinement, refine
from promptrec.explain.scope import Declined, declined
from promptrec.ranker.prompts import CHAT_MARKERS, sanitize_text
from promptrec.schema import RecommendationList

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.ranker.backends.base import LLMBackend
    from promptrec.recommender import Recommender

Grounding = Literal["ok", "trimmed", "regenerated", "fallback", "declined"]

MAX_QUESTION_CHARS = 500
MAX_NEW_TOKENS = 120
MAX_ANSWER_CHARS = 1500
UNCITED = "(names no item of your history)"  # why a "why" answer citing no history item is redone
# A small model sometimes writes the next turn itself; the answer ends where one begins.
_FAKE_TURN = re.compile(r"\n\s*(?:user|human|question|q|assistant|system)\s*[:\n]", re.IGNORECASE)
_MARKERS = CHAT_MARKERS


class QuestionError(PromptrecError, ValueError):
    """A question is empty or longer than the cap."""


class Explanation(BaseModel):
    """One answer of a conversation and everything it rests on."""

    user_id: str
    item_id: str  # the item in focus
    question: str  # as asked (sanitised)
    kind: Literal["why", "free"]
    text: str  # the answer shown to the user
    evidence: Evidence
    grounding: Grounding
    offending: list[str] = Field(default_factory=list)  # titles that failed the check, as written
    rejected: list[str] = Field(default_factory=list)  # model answers that failed the check
    checks: list[GroundingCheck] = Field(default_factory=list)  # one per model answer
    cited_history_ids: list[str] = Field(default_factory=list)  # evidence history items the answer names
    model_id: str
    template: str
    template_hash: str
    attempts: int  # model calls made (1 or 2)
    prompt_tokens: int  # of the last model call
    trimmed_turns: int = 0  # turns dropped from the context so far
    latency_s: float = 0.0  # the whole answer: evidence (for why), generation, checks
    # counterfactual: the cited items removed vs random ones (`Conversation.measure_faithfulness`)
    faithfulness: Faithfulness | None = None
    declined: Declined | None = None  # a question about other users or the instructions (`scope`)

    @property
    def cites_history(self) -> bool:
        return bool(self.cited_history_ids)


class Suggestion(BaseModel):
    """One item of a "recommend more" list."""

    item_id: str
    title: str
    rank: int
    probability: float | None = None
    llm_score: float | None = None
    retrieval_rank: int | None = None


@dataclass
class StreamEvent:
    """What `Conversation.ask_stream` yields.

    ``delta``: the next sentence(s) of the answer, each shown only once it has passed the
    checks (nothing shown is withdrawn; a fallback answer comes as one delta); ``done``: the
    final `Explanation`, whose ``text`` is the deltas joined.
    """

    kind: Literal["delta", "done"]
    text: str = ""
    explanation: Explanation | None = None


@dataclass
class Turn:
    role: Literal["user", "assistant"]
    content: str


class ConversationState(BaseModel):
    """What a conversation has said and shown so far: all of `Conversation` that changes, as
    JSON, so that another process (any worker of a service) can go on with it
    (`Conversation.snapshot`, `Conversation.restore`)."""

    user_id: str
    evidence: Evidence | None = None
    turns: list[Turn] = Field(default_factory=list)
    explanations: list[Explanation] = Field(default_factory=list)
    shown: list[Suggestion] = Field(default_factory=list)
    allowed: list[str] = Field(default_factory=list)
    trimmed_turns: int = 0
    recommendations: RecommendationList | None = None
    ranker_note: str | None = None


def clean_answer(text: str, max_chars: int = MAX_ANSWER_CHARS) -> str:
    """Model output as shown: no chat markers or control characters, no invented next turn."""
    cut = _FAKE_TURN.search("\n" + text)
    if cut:
        text = ("\n" + text)[: cut.start()]
    lines = []
    for line in text.splitlines():
        line = _MARKERS.sub(" ", line)
        lines.append(sanitize_text(line, None))
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if len(text) > max_chars:
        text = sanitize_text(text, max_chars)
    return text


_SENTENCE_END = re.compile(r"[.!?][\"”')\]]*(?=\s|$)")
_SENTENCE_END_FOLLOWED = re.compile(r"[.!?][\"”')\]]*(?=\s)")


def resolve_backend(rec: Recommender, backend: LLMBackend | None = None) -> LLMBackend:
    """The backend to use: the one given, else the recommender's explainer (`Recommender.explainer`:
    `explain.generator`, or the ranker's generator, loaded once and shared)."""
    if backend is not None:
        return backend
    found = getattr(rec, "explainer", None)
    if found is None:
        raise PromptrecError("explanations need an LLM backend: pass backend=")
    return found


class Conversation:
    """A dialogue about one user's recommendations (see the module doc)."""

    def __init__(
        self,
        rec: Recommender,
        user_id: str,
        backend: LLMBackend | None = None,
        *,
        template: ExplainTemplate | str | Path = DEFAULT_TEMPLATE,
        recommendations: RecommendationList | None = None,
        use_ranker: bool = True,
        evidence_items: int = 3,
        evidence_shortlist: int = SHORTLIST,
        max_new_tokens: int = MAX_NEW_TOKENS,
        max_question_chars: int = MAX_QUESTION_CHARS,
        max_history_tokens: int = 600,
        max_turns: int = 8,
        titles: TitleIndex | None = None,
    ):
        self.rec = rec
        self.domain = rec.settings.resolved_domain()
        self.user_id = str(user_id)
        rec.history(self.user_id)  # an unknown user fails here, before any model is loaded
        self._backend = backend
        self.template = template if isinstance(template, ExplainTemplate) else load_explain_template(template, rec.settings.prompts_dir)
        self._recommendations = recommendations
        self._ranker_note: str | None = None
        self.use_ranker = use_ranker
        self.evidence_items = evidence_items
        self.evidence_shortlist = evidence_shortlist
        self.max_new_tokens = max_new_tokens
        self.max_question_chars = max_question_chars
        self.max_history_tokens = max_history_tokens
        self.max_turns = max_turns
        self.titles = titles or _title_index(rec)
        self.evidence: Evidence | None = None  # the item in focus
        self.turns: list[Turn] = []
        self.explanations: list[Explanation] = []
        self.shown: list[Suggestion] = []  # recommendations listed so far, in order
        self.allowed: set[str] = set()  # item ids shown to the model in this conversation
        self.trimmed_turns = 0

    # ------------------------------------------------------------------ public API

    @property
    def backend(self) -> LLMBackend:
        if self._backend is None:
            self._backend = resolve_backend(self.rec, None)
        return self._backend

    @property
    def explanation(self) -> Explanation:
        """The latest answer."""
        if not self.explanations:
            raise PromptrecError("nothing has been explained yet: call why(item) first")
        return self.explanations[-1]

    @property
    def text(self) -> str:
        return self.explanation.text

    @property
    def grounding(self) -> Grounding:
        return self.explanation.grounding

    def why(self, item_id: str) -> Explanation:
        """Explain why ``item_id`` was recommended; it becomes the item in focus."""
        return _last(self._why(item_id, stream=False))

    def why_stream(self, item_id: str) -> Iterator[StreamEvent]:
        """`why`, yielding the answer as it is generated (see `StreamEvent`)."""
        return self._why(item_id, stream=True)

    def _why(self, item_id: str, stream: bool) -> Iterator[StreamEvent]:
        started = time.perf_counter()
        self.focus(item_id)
        assert self.evidence is not None
        question = self.template.render("why_question", **evidence_variables(self.evidence, self.domain))
        yield from self._answer(question, "why", stream=stream, started=started)

    def ask(self, question: str) -> Explanation:
        """Ask a free question about the item in focus; earlier turns stay in context."""
        return _last(self._answer(self.check_question(question), "free", stream=False))

    def ask_stream(self, question: str) -> Iterator[StreamEvent]:
        """`ask`, yielding the answer as it is generated (see `StreamEvent`)."""
        return self._answer(self.check_question(question), "free", stream=True)

    def measure_faithfulness(self, trials: int = 3, seed: int = 0) -> Faithfulness:
        """How far the item in focus falls when the history items the latest answer cites are
        removed, against as many random history items (`promptrec.explain.faithfulness`); kept
        on the explanation. Each removal runs the served pipeline once."""
        e = self.explanation
        e.faithfulness = measure_faithfulness(self.rec, self.user_id, e.item_id, e.cited_history_ids,
                                              trials=trials, seed=seed)
        return e.faithfulness

    def focus(self, item_id: str) -> Evidence:
        """Build the evidence for ``item_id`` and make it the item in focus (no model call)."""
        item = self.rec.item(item_id)
        recs = self.recommendations()
        self.evidence = build_evidence(
            self.rec, self.user_id, item.item_id, k=self.evidence_items, recommendations=recs,
            ranker_note=self._ranker_note, shortlist=self.evidence_shortlist,
        )
        self.allowed.update(self.evidence.cited_item_ids())
        return self.evidence

    def recommendations(self) -> RecommendationList | None:
        """The ranker's list for this user (computed once), when a ranker is available."""
        if self._recommendations is None and self.use_ranker and self._ranker_note is None:
            recommend = getattr(self.rec, "recommend", None)
            if recommend is None:
                self._ranker_note = "no ranker scores: this recommender has no recommend()"
            else:
                try:
                    self._recommendations = recommend(self.user_id, k=self.rec.settings.n_candidates)
                except Exception as exc:  # noqa: BLE001 - an explanation does not need the ranker
                    self._ranker_note = f"no ranker scores: {type(exc).__name__}: {exc}"
        return self._recommendations

    def suggestions(self) -> list[Suggestion]:
        """This user's ranked list: the ranker's when available, else retrieval's."""
        recs = self.recommendations()
        if recs is not None:
            return [
                Suggestion(item_id=r.item_id, title=r.title, rank=r.rank, probability=r.probability,
                           llm_score=r.llm_score, retrieval_rank=r.retrieval_rank)
                for r in recs.recommendations
            ]
        found = self.rec.candidates(self.user_id, self.rec.settings.n_candidates)
        return [Suggestion(item_id=c.item_id, title=c.title, rank=c.rank, retrieval_rank=c.rank)
                for c in found.candidates]

    def recommend_more(self, k: int = 5) -> list[Suggestion]:
        """The next ``k`` recommendations not yet shown or explained; they join the context."""
        done = {s.item_id for s in self.shown} | {e.item_id for e in self.explanations}
        fresh = [s for s in self.suggestions() if s.item_id not in done][:k]
        self.shown.extend(fresh)
        self.allowed.update(s.item_id for s in fresh)
        if fresh:
            listing = "More recommendations: " + "; ".join(
                f'"{safe_title(s.title)}"' for s in fresh
            ) + "."
        else:
            listing = "There are no more recommendations for you."
        self.turns += [Turn("user", "Recommend more."), Turn("assistant", listing)]
        return fresh

    def refine(self, request: str, k: int = 5) -> Refined:
        """A new list for a request such as "something lighter", "more like this but newer" or
        "no horror" (`promptrec.explain.refine`): the user's candidates filtered and reordered,
        each with its reasons, leaving out what was shown or explained already; they join the
        shown list (so "why #N" reaches them) and the context. What the request asked that no
        rule understood is in ``note``."""
        focus = self.rec.item(self.evidence.item.item_id) if self.evidence is not None else None
        refinement = parse_refinement(request, self.rec.catalog, focus)
        done = {s.item_id for s in self.shown} | {e.item_id for e in self.explanations}
        if focus is not None:
            done.add(focus.item_id)
        refined = refine(self.rec, self.user_id, refinement, k=k, exclude=done)
        fresh = [Suggestion(item_id=r.item_id, title=r.title, rank=r.rank, retrieval_rank=r.retrieval_rank)
                 for r in refined.items]
        self.shown.extend(fresh)
        self.allowed.update(s.item_id for s in fresh)
        listing = "; ".join(f'"{safe_title(r.title)}" ({", ".join(r.reasons)})' for r in refined.items)
        self.turns += [Turn("user", refinement.request),
                       Turn("assistant", (f"Refined: {listing}." if listing else "Nothing fits that request.")
                            + (f" ({refined.note})" if refined.note else ""))]
        return refined

    def resolve_item(self, ref: str) -> str:
        """An item id from what a user typed: "#2" (the 2nd suggestion shown), an id, or a title."""
        ref = ref.strip().strip("\"'“”")
        if ref.startswith("#") and ref[1:].isdigit():
            n = int(ref[1:])
            if 1 <= n <= len(self.shown):
                return self.shown[n - 1].item_id
            raise UnknownItemError(f"no suggestion #{n}: {len(self.shown)} shown so far (say 'recommend more')")
        if ref in self.rec.catalog:
            return ref
        ids = self.titles.lookup(ref)
        if ids:
            preferred = [i for i in ids if i in self.allowed]
            return (preferred or ids)[0]
        raise UnknownItemError(f"no item {ref!r}: give an item id, a title, or #N for a suggestion shown")

    def check_question(self, question: str) -> str:
        if question is None or not str(question).strip():
            raise QuestionError("the question is empty")
        raw = str(question)
        if len(raw) > self.max_question_chars:
            raise QuestionError(
                f"the question is {len(raw)} characters; the limit is {self.max_question_chars}"
            )
        cleaned = sanitize_text(raw, None)
        if not cleaned:
            raise QuestionError("the question is empty once control characters are removed")
        return cleaned

    def messages(self, user_message: str) -> list[dict[str, str]]:
        """The context for one model call: the system message (evidence), kept turns, the question."""
        if self.evidence is None:
            raise PromptrecError("no item in focus: call why(item) first")
        system = self.template.render("system", **evidence_variables(self.evidence, self.domain))
        self._trim()
        msgs = [{"role": "system", "content": system}]
        msgs += [{"role": t.role, "content": t.content} for t in self.turns]
        msgs.append({"role": "user", "content": user_message})
        return msgs

    def snapshot(self) -> ConversationState:
        """The conversation's state so far (see `ConversationState`)."""
        return ConversationState(
            user_id=self.user_id, evidence=self.evidence, turns=list(self.turns),
            explanations=list(self.explanations), shown=list(self.shown),
            allowed=sorted(self.allowed, key=_id_key), trimmed_turns=self.trimmed_turns,
            recommendations=self._recommendations, ranker_note=self._ranker_note,
        )

    def restore(self, state: ConversationState) -> None:
        """Go on from a snapshot of a conversation with the same user."""
        if state.user_id != self.user_id:
            raise PromptrecError(f"a conversation of user {state.user_id!r} cannot go on for user {self.user_id!r}")
        self.evidence, self.turns = state.evidence, list(state.turns)
        self.explanations, self.shown = list(state.explanations), list(state.shown)
        self.allowed, self.trimmed_turns = set(state.allowed), state.trimmed_turns
        self._recommendations, self._ranker_note = state.recommendations, state.ranker_note

    # ------------------------------------------------------------------ internals

    def _trim(self) -> None:
        """Drop the oldest turns (a user turn and its answer together) past the budget."""
        def tokens() -> int:
            return sum(self.backend.count_tokens(t.content) for t in self.turns)

        while self.turns and (len(self.turns) > 2 * self.max_turns or tokens() > self.max_history_tokens):
            drop = 2 if len(self.turns) >= 2 else 1
            del self.turns[:drop]
            self.trimmed_turns += drop

    def _allowed_titles(self) -> list[str]:
        return [safe_title(self.rec.item(i).display_title()) for i in sorted(self.allowed, key=_id_key)]

    def ignore_phrases(self, question: str) -> list[str]:
        """Quoted phrases that are not titles: genres, decades, the question itself."""
        assert self.evidence is not None
        return [question, *self.evidence.item.genres, *(s.value for s in self.evidence.shared)]

    def _quoted_choices(self, kind: Literal["why", "free"]) -> list[str]:
        """What the model may write inside double quotes: the titles of the items shown to it in
        this conversation (with and without the year). A "why" answer leaves out the explained
        item itself: the question has named it, and a small model that quotes it again mostly
        says the user watched it. Genres are not quoted choices: quoted, a small model lists
        them as if they were items ('you watched "Drama"')."""
        assert self.evidence is not None
        out: set[str] = set()
        for item_id in self.allowed:
            if kind == "why" and item_id == self.evidence.item.item_id:
                continue
            item = self.rec.item(item_id)
            out.update((safe_title(item.display_title()), safe_title(item.title)))
        return sorted(out)

    def _generate(self, messages: list[dict[str, str]], stream: bool, kind: Literal["why", "free"]) -> Iterator[str]:
        # A backend that can constrain decoding (transformers: a logits processor; vLLM: structured
        # outputs) keeps quoted text to the evidence.
        extra = {"quoted": self._quoted_choices(kind)} if getattr(self.backend, "constrains_quotes", False) else {}
        if stream:
            yield from self.backend.chat_stream(messages, self.max_new_tokens, temperature=0.0, **extra)
        else:
            yield self.backend.chat(messages, self.max_new_tokens, temperature=0.0, **extra)

    def _gated_answer(
        self, msgs: list[dict[str, str]], lead: str, stream: bool, check: Callable[[str], GroundingCheck],
        must_cite: set[str], kind: Literal["why", "free"],
    ) -> Generator[StreamEvent, None, GatedAnswer]:
        """Generate an answer (continuing ``lead`` when given) and keep its sentences, in order,
        while each passes the check (``check`` of the text up to and including it; the first
        sentence must also name an item of ``must_cite`` when that is not empty). A sentence
        ends at "." "!" or "?" (maybe followed by a quote or bracket) and whitespace: "3." then
        "5" is no end yet. When streaming, each kept sentence is yielded as a "delta" as soon
        as it is checked, so nothing shown is ever withdrawn; the first failing sentence stops
        the generation. An answer cut off at the token cap loses its unfinished tail."""
        calls = msgs + [{"role": "assistant", "content": lead}] if lead else msgs
        pieces: list[str] = []
        kept = GatedAnswer()
        generator = self._generate(calls, stream, kind)

        def advance(text: str, final: bool) -> Iterator[StreamEvent]:
            pattern = _SENTENCE_END if final else _SENTENCE_END_FOLLOWED
            # a "." inside a quoted title ("People vs. Larry Flynt") ends no sentence
            ends = [m.end() for m in pattern.finditer(text, kept.end) if text.count('"', 0, m.end()) % 2 == 0]
            if final and not ends and kept.end == 0 and text.strip():
                ends = [len(text)]  # an answer with no sentence end at all is one sentence
            for end in ends:
                result = check(text[:end].strip())
                uncited = kept.end == 0 and bool(must_cite) and not result.cited_item_ids(must_cite)
                if not result.ok or uncited:
                    kept.failed = result
                    kept.uncited = uncited and result.ok
                    return
                if stream:
                    yield StreamEvent("delta", text[kept.end:end].lstrip() if kept.end == 0 else text[kept.end:end])
                kept.end, kept.check = end, result

        try:
            for piece in generator:
                pieces.append(piece)
                if stream:
                    yield from advance(_answer_text(lead, "".join(pieces)), final=False)
                    if kept.failed is not None:
                        break
        finally:
            close = getattr(generator, "close", None)
            if close is not None:
                close()  # stops the generation of a failed answer
        kept.raw = _answer_text(lead, "".join(pieces))
        if not "".join(pieces).strip():  # the model said nothing (or added nothing to the lead)
            kept.failed = check("")
        if kept.failed is None:
            yield from advance(kept.raw, final=True)
        kept.text = kept.raw[: kept.end].strip()
        return kept

    def _answer(
        self, question: str, kind: Literal["why", "free"], stream: bool, started: float | None = None
    ) -> Iterator[StreamEvent]:
        started = time.perf_counter() if started is None else started
        if self.evidence is None:
            raise PromptrecError("no item in focus: call why(item) first")
        evidence = self.evidence
        variables = evidence_variables(evidence, self.domain)
        ignore = self.ignore_phrases(question)
        history = self.rec.history(self.user_id)
        history_ids = set(evidence.history_item_ids())
        lead = self.template.render_optional("answer_lead", **variables) if kind == "why" else ""
        checks: list[GroundingCheck] = []
        rejected: list[str] = []
        offending: list[str] = []
        text = ""
        grounding: Grounding = "ok"
        final_check: GroundingCheck | None = None
        user_message = self.template.render("turn", **variables, question=question)
        prompt_tokens = 0
        refused = declined(question, self.rec.item(evidence.item.item_id).attributes) if kind == "free" else None
        for attempt in (() if refused else (1, 2)):
            msgs = self.messages(user_message)
            prompt_tokens = self.backend.count_tokens(self.backend.render_chat(msgs))
            facts, told = "\n".join(m["content"] for m in msgs), _instructions(msgs)

            def check(answer: str) -> GroundingCheck:
                return self.titles.check(answer, self.allowed, ignore=ignore, history=history, facts=facts,
                                         instructions=told)

            must_cite = history_ids if kind == "why" else set()
            kept = yield from self._gated_answer(msgs, lead, stream, check, must_cite, kind)
            checks.append(kept.failed or kept.check or check(kept.text))
            if kept.text:
                final_check = kept.check
                grounding = "trimmed" if kept.failed is not None else "ok" if attempt == 1 else "regenerated"
            if kept.failed is not None:
                rejected.append(kept.raw)
                for title in kept.failed.offending() or [UNCITED if kept.uncited else "(empty answer)"]:
                    if title not in offending:
                        offending.append(title)
            if kept.text:
                text = kept.text
                break
            if attempt == 1:
                user_message = self.template.render(
                    "retry", **variables, question=question, allowed_titles=self._allowed_titles(),
                    offending=[safe_title(t) for t in offending],
                )
        else:
            grounding = "declined" if refused else "fallback"
            text = (self.template.render_optional("declined", **variables, reason=refused.reason,
                                                  asked=refused.asked) if refused
                    else "") or self.template.render("fallback", **variables, question_kind=kind)
            final_check = self.titles.check(text, self.allowed, ignore=ignore, history=history)
            if stream:
                yield StreamEvent("delta", text)
        assert final_check is not None
        explanation = Explanation(
            user_id=self.user_id,
            item_id=evidence.item.item_id,
            question=question,
            kind=kind,
            text=text,
            evidence=evidence,
            grounding=grounding,
            offending=offending,
            rejected=rejected,
            checks=checks,
            cited_history_ids=final_check.cited_item_ids(history_ids),
            model_id=getattr(self.backend, "model_id", "unknown"),
            template=self.template.name,
            template_hash=self.template.hash,
            attempts=len(checks),
            prompt_tokens=prompt_tokens,
            trimmed_turns=self.trimmed_turns,
            latency_s=round(time.perf_counter() - started, 4),
            declined=refused,
        )
        self.turns += [Turn("user", question), Turn("assistant", text)]
        self.explanations.append(explanation)
        yield StreamEvent("done", text, explanation)


@dataclass
class GatedAnswer:
    """What `Conversation._gated_answer` kept of one model answer."""

    text: str = ""  # the sentences that passed, as shown
    end: int = 0  # where they end in ``raw``
    check: GroundingCheck | None = None  # the check of ``text``
    failed: GroundingCheck | None = None  # the check of the first failing sentence, if one failed
    uncited: bool = False  # it failed only because the first sentence names no history item
    raw: str = ""  # the whole answer as generated (lead included), cleaned


def _answer_text(lead: str, continuation: str) -> str:
    """The lead and the model's continuation as one cleaned answer; a continuation that starts
    with a word or a quote gets the space a backend may have stripped."""
    if lead and continuation.strip():
        rest = continuation.lstrip()
        joiner = "" if rest[0] in ",.;:!?)]" or continuation[0].isspace() else " "
        continuation = joiner + continuation
    return clean_answer(lead + continuation)


def _id_key(item_id: str) -> tuple[int, Any]:
    return (0, int(item_id)) if item_id.isdigit() else (1, item_id)


def _last(events: Iterator[StreamEvent]) -> Explanation:
    final = None
    for event in events:
        if event.kind == "done":
            final = event.explanation
    assert final is not None
    return final


_TITLE_INDEXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _title_index(rec: Recommender) -> TitleIndex:
    """One TitleIndex per recommender (its catalog is fixed at construction)."""
    index = _TITLE_INDEXES.get(rec)
    if index is None:
        index = _TITLE_INDEXES[rec] = TitleIndex(rec.catalog, rec.settings.resolved_domain())
    return index


def _instructions(messages: list[dict[str, str]]) -> list[str]:
    """What the model was told to do, apart from the facts it may restate: the system message's
    lines that are not fact lines ("- ..."), and the last user message (the question or the retry note)."""
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    told = [line for line in system.splitlines() if line.strip() and not line.lstrip().startswith("- ")]
    users = [m["content"] for m in messages if m["role"] == "user"]
    return told + users[-1:]


def explain(
    rec: Recommender,
    user_id: str,
    item_id: str,
    backend: LLMBackend | None = None,
    **options: Any,
) -> Conversation:
    """Explain why ``item_id`` is recommended to ``user_id``; returns the conversation, whose
    ``explanation`` holds the answer, its evidence and its grounding, and whose ``ask`` goes on.

    ``options`` go to `Conversation` (template, recommendations, use_ranker, evidence_items,
    evidence_shortlist, max_new_tokens, max_question_chars, max_history_tokens, max_turns).
    """
    conversation = Conversation(rec, user_id, backend, **options)
    conversation.why(item_id)
    return conversation
