"""Explanation templates (``prompts/explain/*.j2``) and the variables they see.

One file is one explanation style, with these blocks (each rendered on its own, stripped):

* ``system``: the instructions and the evidence (the only facts the model may use);
* ``why_question``: the question a "why this item?" turn asks;
* ``turn``: the user message of a turn, from ``question`` (already sanitised and capped);
* ``retry``: the user message when an answer failed the grounding check and is regenerated
  once (sees ``question``, ``allowed_titles`` and ``offending``; the shipped template does
  not repeat the offending titles: a small model tends to copy what it is told to avoid);
* ``fallback``: a plain explanation built from the evidence alone, used when the
  regenerated answer fails too (sees ``question_kind``: ``"why"`` or ``"free"``);
* ``answer_lead`` (optional): the opening words of a "why" answer, written from the evidence
  (the shipped template: "Because you watched" and ``lead``, the history items that moved the
  score most, as many as it takes to move the item down the list when removed together); the
  model continues them, so every answer cites the evidence by construction. It may render
  empty (no related history item): the model then writes the whole answer;
* ``declined`` (optional): the answer to a question about other users' records or about the
  instructions or for a fact the item's record lacks, which no model sees (sees ``reason``:
  ``"other users"``, ``"instructions"`` or ``"not in the records"``, and ``asked``);
  without it, the ``fallback`` block answers.

Templates render in the ranker's sandboxed Jinja2 environment (StrictUndefined, no
include/extends), and every string from item records is sanitised with the ranker's
`sanitize_text` (chat markers, control characters, newlines removed; length capped) and
double quotes in titles become single quotes, so an item's text cannot break the layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from promptrec.domain import DOMAIN_PRESETS, Domain
from promptrec.explain.evidence import Evidence
from promptrec.ranker.prompts import (
    PromptError,
    domain_namespace,
    make_environment,
    resolve_template_path,
    sanitize_text,
    template_hash,
)

REQUIRED_BLOCKS = ("system", "why_question", "turn", "retry", "fallback")
OPTIONAL_BLOCKS = ("answer_lead", "declined")
DEFAULT_TEMPLATE = "grounded"
MAX_TITLE_CHARS = 120

_ENV = make_environment()


def safe_title(text: Any, max_chars: int = MAX_TITLE_CHARS) -> str:
    """An untrusted title (or genre, attribute) as a prompt shows it: one sanitised line."""
    return sanitize_text(text, max_chars).replace('"', "'").replace("«", "'").replace("»", "'")


def _english_list(values: list[str]) -> str:
    if len(values) <= 1:
        return "".join(values)
    return ", ".join(values[:-1]) + " and " + values[-1]


def evidence_variables(evidence: Evidence, domain: Domain | None = None) -> dict[str, Any]:
    """What a template sees of the evidence (all strings sanitised), and ``domain``: the
    catalog's nouns and verbs (`promptrec.config.Domain`; the generic words when None)."""
    item = evidence.item
    related = []
    for r in evidence.related:
        related.append(
            {
                "title": safe_title(r.title),
                "genres": [safe_title(g, 40) for g in r.genres],
                "shared_genres": [safe_title(g, 40) for g in r.shared_genres],
                "same_decade": r.same_decade,
                "items_ago": r.items_ago,
                "text_similarity": r.text_similarity,
                "behaviour_similarity": r.behaviour_similarity,
                "co_occurrence": r.co_occurrence,
                # Plain-language flags a small model can use (domain-neutral names):
                "same_audience": r.behaviour_similarity >= 0.3 or r.co_occurrence > 0,
                "often_together": r.co_occurrence > 0,
                "similar_description": r.text_similarity >= 0.5,
            }
        )
    shared = [
        {"name": safe_title(s.name, 40), "value": safe_title(s.value, 60), "count": s.count,
         "history_size": s.history_size}
        for s in evidence.shared
    ]
    s = evidence.scores
    scores = {
        "in_candidates": s.in_candidates,
        "pool": s.pool,
        "retrieval_rank": s.retrieval_rank,
        "sources": [{"name": k, "rank": v} for k, v in sorted(s.source_ranks.items(), key=lambda kv: kv[1])],
        "popularity": s.popularity,
        "recommended_rank": s.recommended_rank,
        "recommended_of": s.recommended_of,
        "probability": None if s.probability is None else round(s.probability, 2),
        "llm_score": None if s.llm_score is None else round(s.llm_score, 3),
    }
    words = (domain or DOMAIN_PRESETS["generic"]).template_vars()
    return {
        "domain": domain_namespace({k: safe_title(v, 40) if isinstance(v, str) else v for k, v in words.items()}),
        "item": {
            "title": safe_title(item.title),
            "genres": [safe_title(g, 40) for g in item.genres],
            "year": item.year,
        },
        "related": related,
        "related_titles": _english_list([r["title"] for r in related]),
        "lead": related[: max(evidence.lead, 1)] if related else [],
        "shared": shared,
        "scores": scores,
        "history_size": evidence.history_size,
        "already_in_history": evidence.already_in_history,
    }


@dataclass(frozen=True)
class ExplainTemplate:
    """One explanation style: a sandboxed Jinja2 template with the blocks in REQUIRED_BLOCKS."""

    name: str
    source: str
    hash: str
    path: Path | None = None
    _template: jinja2.Template = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @classmethod
    def from_string(cls, source: str, name: str = "<string>", path: Path | None = None) -> ExplainTemplate:
        origin = str(path) if path is not None else name
        try:
            compiled = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"{origin}: line {exc.lineno}: {exc.message}") from exc
        missing = [b for b in REQUIRED_BLOCKS if b not in compiled.blocks]
        if missing:
            raise PromptError(f"{origin}: an explain template needs the blocks {', '.join(missing)}")
        return cls(name=name, source=source, hash=template_hash(source), path=path, _template=compiled)

    @property
    def origin(self) -> str:
        return str(self.path) if self.path is not None else self.name

    def render_optional(self, block: str, **variables: Any) -> str:
        """An optional block (OPTIONAL_BLOCKS): "" when the template lacks it or it renders empty."""
        if block not in self._template.blocks:
            return ""
        return self._render(block, variables, allow_empty=True)

    def render(self, block: str, **variables: Any) -> str:
        """One block, stripped; a block that renders empty is a template error."""
        return self._render(block, variables, allow_empty=False)

    def _render(self, block: str, variables: dict[str, Any], allow_empty: bool) -> str:
        tmpl = self._template
        try:
            text = "".join(tmpl.blocks[block](tmpl.new_context(variables))).strip()
        except KeyError:
            raise PromptError(f"{self.origin}: no block {block!r}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise PromptError(f"{self.origin}: unsafe template operation: {exc}") from exc
        except jinja2.TemplateError as exc:
            raise PromptError(f"{self.origin}: block {block!r}: {exc}") from exc
        except (TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError,
                RecursionError) as exc:
            raise PromptError(f"{self.origin}: block {block!r}: rendering failed: {type(exc).__name__}: {exc}") from exc
        if not text and not allow_empty:
            raise PromptError(f"{self.origin}: block {block!r} rendered empty")
        return text


def load_explain_template(name_or_path: str | Path = DEFAULT_TEMPLATE, prompts_dir: Path | None = None) -> ExplainTemplate:
    """An explanation template by name (``grounded``) from ``prompts/explain/``, or by path."""
    path = resolve_template_path(name_or_path, prompts_dir, "explain")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot read template: {exc}") from exc
    return ExplainTemplate.from_string(source, name=path.stem, path=path)
