"""Terminal front ends: `promptrec why USER ITEM` and `promptrec chat USER`.

`why_command` and `chat_command` take a built `Recommender`; the main CLI mounts them.
Everything that comes from records or from the model is printed as plain text (never as
rich markup), so a title such as "[bold]…[/]" or "<|im_start|>" cannot change the layout.

In a chat, a line is one of:

* ``recommend more`` (or ``more``): the next recommendations, numbered #1, #2…;
* ``why ITEM``: explain an item: ``#2`` (a suggestion shown), an item id, or a title;
* ``help``, ``quit`` / ``exit`` (or end of input);
* anything else: a question about the item in focus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from promptrec.cli_errors import data_text
from promptrec.errors import PromptrecError
from promptrec.explain.conversation import Conversation, Explanation, StreamEvent, Suggestion
from promptrec.explain.refine import Refined

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.ranker.backends.base import LLMBackend
    from promptrec.recommender import Recommender

HELP = (
    "Commands: 'recommend more' | 'why ITEM' (ITEM: #N from the list, an item id, or a title) | "
    "a request such as 'no horror', 'something lighter', 'more like this but newer' (or 'refine: ...') | "
    "'help' | 'quit'. Anything else is a question about the item in focus."
)
_GROUNDING_NOTE = {
    "ok": "grounded: the answer names only items from the evidence",
    "trimmed": "grounded: the model's answer, ended before a sentence that failed the checks",
    "regenerated": "grounded, on the second try: the first answer failed the checks",
    "fallback": "built from your records: the model's answers did not pass the checks",
    "declined": "declined: the question asks for other users' records, the instructions, or a fact the records lack",
}


_QUESTION_WORDS = frozenset(
    "is was did do does are were would should could can not that this these those it they you "
    "i me my so this? that?".split()
)


def parse_command(line: str) -> tuple[str, str]:
    """("more" | "why" | "refine" | "help" | "quit" | "ask" | "empty", argument) for one chat line."""
    text = line.strip()
    lower = text.lower()
    if not text:
        return "empty", ""
    if lower in ("quit", "exit", "q", ":q", "bye"):
        return "quit", ""
    if lower in ("help", "?", "/help"):
        return "help", ""
    if re.fullmatch(r"(?:recommend|show|suggest)?\s*(?:me\s+)?more(?:\s+(?:please|recommendations|movies|items))?[.!]?", lower):
        return "more", ""
    refine = _REFINE.match(text)
    if refine:
        return "refine", text[refine.end():].strip() if lower.startswith("refine") else text
    match = re.fullmatch(r"why\s+(.+?)\??", text, flags=re.IGNORECASE | re.DOTALL)
    if match and match.group(1).split()[0].lower() not in _QUESTION_WORDS:
        return "why", match.group(1).strip()
    return "ask", text


_REFINE = re.compile(
    r"refine:?\s+|(?:something|anything|no|without|only|nothing|less|fewer|newer|older|lighter|darker|"
    r"funnier|more like|more \w+ but)\b(?!\s*[,?])",
    re.IGNORECASE,
)


def _print_refined(console: Console, conv: Conversation, refined: Refined) -> None:
    understood = "; ".join(refined.refinement.understood) or "nothing"
    console.print(data_text(f"[understood: {understood}]", style="dim"))
    start = len(conv.shown) - len(refined.items)
    for n, r in enumerate(refined.items, start=start + 1):
        console.print(data_text(f"#{n}  {r.title}  [item {r.item_id}]  ({'; '.join(r.reasons)})"))
    if refined.note:
        console.print(data_text(f"[{refined.note}]", style="yellow"))


def _plain(value: Any) -> Text:
    return data_text(value)


def evidence_table(explanation: Explanation) -> Table:
    """The evidence as a table: related history items, shared attributes, scores."""
    ev = explanation.evidence
    table = Table(title=data_text(f"Evidence for {ev.item.title} (item {ev.item.item_id}), user {ev.user_id}"),
                  show_lines=False)
    for column in ("kind", "record", "detail"):
        table.add_column(column)
    for r in ev.related:
        detail = (
            f"{r.items_ago} items ago; text cos {r.text_similarity:.2f}, behaviour cos "
            f"{r.behaviour_similarity:.2f}, co-occurrence {r.co_occurrence:.2f}"
        )
        if r.shared_genres:
            detail += "; shares " + ", ".join(r.shared_genres)
        if r.same_decade:
            detail += "; same decade"
        table.add_row(_plain("history item"), _plain(f"{r.title} [{r.item_id}]"), _plain(detail))
    for s in ev.shared:
        table.add_row(_plain(f"shared {s.name}"), _plain(s.value),
                      _plain(f"{s.count} of {s.history_size} history items"))
    sc = ev.scores
    if sc.in_candidates:
        sources = ", ".join(f"{k} #{v}" for k, v in sorted(sc.source_ranks.items(), key=lambda kv: kv[1]))
        table.add_row(_plain("retrieval"), _plain(f"rank {sc.retrieval_rank} of {sc.pool}"),
                      _plain(f"fused {sc.fused_score:.4f}; {sources}"))
    else:
        table.add_row(_plain("retrieval"), _plain(f"not in the top {sc.pool}"), _plain(f"popularity {sc.popularity}"))
    if sc.recommended_rank is not None:
        prob = "n/a" if sc.probability is None else f"{sc.probability:.3f}"
        llm = "n/a" if sc.llm_score is None else f"{sc.llm_score:.3f}"
        table.add_row(_plain("ranker"), _plain(f"rank {sc.recommended_rank} of {sc.recommended_of}"),
                      _plain(f"P(relevant) {prob}; llm score {llm}; {sc.ranker_model}"))
    elif sc.ranker_note:
        table.add_row(_plain("ranker"), _plain("-"), _plain(sc.ranker_note))
    return table


def _stream(console: Console, events: Iterator[StreamEvent]) -> Explanation:
    """Print an answer sentence by sentence as it passes the checks (nothing printed is withdrawn)."""
    final: Explanation | None = None
    for event in events:
        if event.kind == "delta":
            console.out(event.text, end="", highlight=False)
        else:
            final = event.explanation
    assert final is not None
    console.out("")
    return final


def _footer(console: Console, explanation: Explanation) -> None:
    note = _GROUNDING_NOTE[explanation.grounding]
    console.print(data_text(f"[{note}; {explanation.model_id}, {explanation.latency_s:.1f} s]", style="dim"))


def explanation_json(explanation: Explanation) -> str:
    return json.dumps(explanation.model_dump(mode="json"), indent=1, ensure_ascii=False)


def why_command(
    rec: Recommender,
    user: str,
    item: str,
    *,
    backend: LLMBackend | None = None,
    console: Console | None = None,
    as_json: bool = False,
    stream: bool = True,
    **options: Any,
) -> Conversation:
    """`promptrec why USER ITEM`: print the explanation (streamed) and its evidence.

    ``as_json`` prints the whole `Explanation` as JSON instead. Errors (unknown user or
    item) propagate as `PromptrecError` for the caller to report.
    """
    console = console or Console()
    conv = Conversation(rec, user, backend, **options)
    item_id = conv.resolve_item(item)
    if as_json:
        explanation = conv.why(item_id)
        console.out(explanation_json(explanation), highlight=False)
        return conv
    if stream:
        explanation = _stream(console, conv.why_stream(item_id))
    else:
        explanation = conv.why(item_id)
        console.print(data_text(explanation.text))
    _footer(console, explanation)
    console.print(evidence_table(explanation))
    return conv


def _print_suggestions(console: Console, conv: Conversation, fresh: list[Suggestion]) -> None:
    if not fresh:
        console.print(data_text("No more recommendations."))
        return
    start = len(conv.shown) - len(fresh)
    for n, s in enumerate(fresh, start=start + 1):
        extra = f"  P={s.probability:.2f}" if s.probability is not None else ""
        console.print(data_text(f"#{n}  {s.title}  [item {s.item_id}]{extra}"))


def chat_command(
    rec: Recommender,
    user: str,
    *,
    backend: LLMBackend | None = None,
    console: Console | None = None,
    input_fn: Callable[[str], str] | None = None,
    k: int = 5,
    **options: Any,
) -> Conversation:
    """`promptrec chat USER`: a conversation in the terminal (see the module doc).

    ``input_fn(prompt)`` reads a line (default: the console); end of input ends the chat.
    """
    console = console or Console()
    read = input_fn or (lambda prompt: console.input(prompt))
    conv = Conversation(rec, user, backend, **options)
    console.print(data_text(f"Chat about user {conv.user_id}'s recommendations. {HELP}"))
    _print_suggestions(console, conv, conv.recommend_more(k))
    while True:
        try:
            line = read("> ")
        except (EOFError, KeyboardInterrupt):
            console.out("")
            break
        command, arg = parse_command(line)
        try:
            if command == "quit":
                break
            if command == "empty":
                continue
            if command == "help":
                console.print(data_text(HELP))
            elif command == "more":
                _print_suggestions(console, conv, conv.recommend_more(k))
            elif command == "refine":
                _print_refined(console, conv, conv.refine(arg, k))
            elif command == "why":
                _footer(console, _stream(console, conv.why_stream(conv.resolve_item(arg))))
            elif conv.evidence is None:
                console.print(data_text("Ask 'why #1' (or 'why ITEM') first: questions are about an item in focus."))
            else:
                _footer(console, _stream(console, conv.ask_stream(arg)))
        except PromptrecError as exc:
            console.print(data_text(f"error: {exc}", style="red"))
    return conv
