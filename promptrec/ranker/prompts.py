"""Rerank prompt templates: Jinja2 in a sandbox, one file a prompt, each declaring its scoring strategy.

Template format (``prompts/rerank/*.j2``)::

    {# strategy: letters #}
    {% block system %}You are a movie recommender.{% endblock %}
    {% block user %}The user watched, oldest first:
    {% for item in history %}- {{ item.text }}
    {% endfor %}...{% endblock %}
    {% block assistant %}Answer:{% endblock %}

* The first non-blank line is a Jinja comment declaring the scoring strategy:
  ``letters``, ``likelihood`` or ``yesno``. A missing or unknown declaration is a
  `PromptError` that names the file.
* Blocks, each rendered on its own and stripped of surrounding whitespace:
  ``system`` (optional; absent, the model's chat template supplies its default),
  ``user`` (the user message; a template without blocks is all user message),
  ``assistant`` (optional; text the model's reply starts with, e.g. ``Answer:``) and, for
  ``likelihood`` templates, ``continuation`` (the text scored per candidate; default
  ``{{ candidate.title }}``).
* The backend applies the model's chat template to the system and user messages
  (`LLMBackend.render_chat`), then the assistant prefix is appended verbatim.
* Variables: ``domain`` (the catalog's words: ``item``, ``items``, ``Item``, ``a_item``,
  ``verb_past``, ``verb_present``, ``audience``, ``has_year``; `promptrec.config.Domain`,
  bound with `RerankTemplate.with_domain`, the generic words when unbound),
  ``history`` (list of ``{title, text}``, oldest first, may be empty),
  ``candidates`` (list of ``{label, index, title, text}``; letters), ``candidate``
  (one such entry; yesno and likelihood), ``n_candidates``. Every string is already
  sanitised (`sanitize_text`): item text is untrusted.
* Rendering uses a `SandboxedEnvironment` (no attribute access to Python internals) with
  `StrictUndefined` (a misspelt variable is an error, not an empty string). Templates are
  self-contained: ``{% include %}`` and ``{% extends %}`` are not available.
* A template is identified in results by its name and ``hash`` (first 12 hex digits of
  the sha256 of its source), so calibration can be keyed to the exact prompt text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import unicodedata
from importlib import resources
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jinja2
from jinja2 import StrictUndefined, nodes
from jinja2.sandbox import SandboxedEnvironment

from promptrec.errors import PromptrecError

STRATEGIES: tuple[str, ...] = ("letters", "likelihood", "yesno")
BLOCKS: tuple[str, ...] = ("system", "user", "assistant", "continuation")

_DECLARATION = re.compile(r"^\{#-?\s*strategy\s*:\s*([A-Za-z0-9_-]*)\s*-?#\}")


class PromptError(PromptrecError):
    """A prompt template cannot be found, parsed or rendered; the message names the file."""


def default_prompts_dir() -> Path:
    """The templates shipped inside the package (``promptrec/prompts/``, package data)."""
    return Path(str(resources.files("promptrec") / "prompts"))


# --------------------------------------------------------------------------- sanitiser

# Chat-template control markers of common model families: ChatML/Llama-3 style "<|...|>",
# Llama-2 "[INST]"/"<<SYS>>"/"<s>", Gemma "<start_of_turn>" and friends.
_SPECIAL_MARKERS = re.compile(
    r"<\|[^<>|\s]{0,64}\|>"
    r"|</?s>"
    r"|\[/?INST\]"
    r"|<</?SYS>>"
    r"|<(?:start|end)_of_turn>"
    r"|<(?:bos|eos|pad|unk|mask)>",
    re.IGNORECASE,
)
CHAT_MARKERS = _SPECIAL_MARKERS  # the one chat-marker pattern (the explain answers are cleaned with it too)
_WHITESPACE = re.compile(r"\s+")
_ELLIPSIS = "…"


def sanitize_text(text: Any, max_chars: int | None = 200) -> str:
    """Make untrusted item text safe to place in a prompt.

    NFKC-normalises (so full-width look-alikes of markers are caught), turns newlines and
    other whitespace controls into spaces, drops remaining control/format characters
    (e.g. zero-width and bidi overrides), removes chat-template markers such as
    ``<|im_start|>`` (repeatedly, then any stray ``<|`` / ``|>``, so nested markers cannot
    reassemble), collapses
    whitespace, and caps the result at ``max_chars`` characters (cut at a word boundary
    when one is near, ending with "…"). ``max_chars=None`` disables the cap.
    """
    value = unicodedata.normalize("NFKC", "" if text is None else str(text))
    chars = []
    for ch in value:
        category = unicodedata.category(ch)
        if ch.isspace():
            chars.append(" ")
        elif category in ("Cc", "Cf", "Cs", "Co"):
            continue
        else:
            chars.append(ch)
    value = "".join(chars)
    while True:
        stripped = _SPECIAL_MARKERS.sub(" ", value)
        if stripped == value:
            break
        value = stripped
    value = value.replace("<|", " ").replace("|>", " ")  # leftovers of broken-up markers
    value = _WHITESPACE.sub(" ", value).strip()
    if max_chars is not None and len(value) > max_chars:
        if max_chars <= 1:
            return _ELLIPSIS[:max_chars]
        cut = value[: max_chars - 1]
        space = cut.rfind(" ")
        if space >= max(1, len(cut) - 20):
            cut = cut[:space]
        value = cut.rstrip(" ,;:-—") + _ELLIPSIS
    return value


# --------------------------------------------------------------------------- templates


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered template, before the model's chat template is applied."""

    user: str
    system: str | None = None
    assistant_prefix: str = ""
    continuation: str | None = None

    def messages(self) -> list[dict[str, str]]:
        msgs = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.append({"role": "user", "content": self.user})
        return msgs


def make_environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


_ENV = make_environment()


def parse_strategy(source: str, origin: str = "<template>") -> str:
    """The strategy a template declares on its first non-blank line."""
    first = next((line.strip() for line in source.splitlines() if line.strip()), "")
    match = _DECLARATION.match(first)
    if match is None:
        raise PromptError(
            f"{origin}: the first line must declare the scoring strategy, e.g. "
            f"'{{# strategy: letters #}}' (one of {', '.join(STRATEGIES)})"
        )
    strategy = match.group(1)
    if strategy not in STRATEGIES:
        raise PromptError(
            f"{origin}: declares unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
        )
    return strategy


def template_hash(source: str) -> str:
    """Short identity of a template: the first 12 hex digits of sha256(source)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class RerankTemplate:
    """One rerank prompt: its name, declared strategy, source hash and compiled Jinja template."""

    name: str
    source: str
    strategy: str
    hash: str
    path: Path | None = None
    _template: jinja2.Template = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    domain: dict[str, Any] | None = field(default=None, compare=False)  # None: the generic words

    def with_domain(self, domain: Any) -> "RerankTemplate":
        """This template with the domain's words bound (a `Domain` or its `template_vars()`);
        the hash then covers them too, since they change the prompt text."""
        words = domain.template_vars() if hasattr(domain, "template_vars") else dict(domain)
        digest = template_hash(self.source + "\x1e" + json.dumps(words, sort_keys=True))
        return dataclasses.replace(self, domain=words, hash=digest)

    @classmethod
    def from_string(cls, source: str, name: str = "<string>", path: Path | None = None) -> "RerankTemplate":
        origin = str(path) if path is not None else name
        strategy = parse_strategy(source, origin)
        try:
            tree = _ENV.parse(source)
            compiled = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise PromptError(f"{origin}: line {exc.lineno}: {exc.message}") from exc
        for node in tree.find_all((nodes.Include, nodes.Extends, nodes.Import, nodes.FromImport)):
            tag = {nodes.Include: "include", nodes.Extends: "extends"}.get(type(node), "import")
            raise PromptError(
                f"{origin}: line {node.lineno}: {{% {tag} %}} is not available: templates are self-contained "
                "(copy the text into this file)"
            )
        if "user" not in compiled.blocks and any(b in compiled.blocks for b in ("system", "assistant")):
            raise PromptError(f"{origin}: has system/assistant blocks but no 'user' block")
        template = cls(name=name, source=source, strategy=strategy, hash=template_hash(source), path=path,
                       _template=compiled)
        template.dry_render()
        return template

    def dry_render(self) -> None:
        """Render once with sample variables (with and without history), as Haystack's PromptBuilder
        checks its template: a misspelt variable, a blocked attribute or an empty user message is a
        `PromptError` when the template loads, not a failure on every request."""
        history = [{"title": f"Sample film {n}", "text": f"Sample film {n} (2000), Drama"} for n in (1, 2)]
        candidates = [{"title": f"Candidate {n}", "text": f"Candidate {n} (2001), Comedy", "index": n + 1,
                       "label": candidate_label(n)} for n in range(3)]
        for shown_history in (history, []):
            if self.strategy == "letters":
                rendered = self.render(history=shown_history, candidates=candidates, n_candidates=len(candidates))
                self._check_shows(rendered, candidates, labels=True)
            else:
                rendered = self.render(history=shown_history, candidate={**candidates[0], "label": ""}, candidates=[],
                                       n_candidates=len(candidates))
                if self.strategy == "yesno":
                    self._check_shows(rendered, candidates[:1], labels=False)

    def _check_shows(self, rendered: RenderedPrompt, candidates: list[dict[str, Any]], labels: bool) -> None:
        """Every candidate reaches the prompt (its title or text, and its label when the model
        answers with labels): a template that never lists them still renders, and its scores
        would look plausible while ranking nothing."""
        shown = "\n".join(part for part in (rendered.system, rendered.user, rendered.assistant_prefix) if part)
        for c in candidates:
            if c["title"] not in shown and c["text"] not in shown:
                what = "candidates (each label and text, e.g. {% for c in candidates %}{{ c.label }}. {{ c.text }}{% endfor %})" \
                    if labels else "candidate ({{ candidate.text }})"
                raise PromptError(f"{self.origin}: the prompt never shows candidate {c['title']!r}: a {self.strategy} "
                                  f"template must list the {what}")
            if labels and not re.search(rf"(?<![A-Za-z0-9]){re.escape(c['label'])}(?![A-Za-z0-9])", shown):
                raise PromptError(f"{self.origin}: the prompt never shows label {c['label']!r} of candidate "
                                  f"{c['title']!r}: the model answers with labels, so each must be in the prompt")

    @property
    def origin(self) -> str:
        return str(self.path) if self.path is not None else self.name

    def _render_block(self, block: str, context: dict[str, Any]) -> str | None:
        tmpl = self._template
        if block not in tmpl.blocks:
            return None
        return "".join(tmpl.blocks[block](tmpl.new_context(context))).strip()

    def render(self, **variables: Any) -> RenderedPrompt:
        """Render with the given variables (see the module doc); errors name the file."""
        variables = {"domain": domain_namespace(self.domain or _generic_domain()), **variables}
        try:
            if "user" in self._template.blocks:
                user = self._render_block("user", variables) or ""
            else:
                user = self._template.render(**variables).strip()
            system = self._render_block("system", variables)
            assistant = self._render_block("assistant", variables) or ""
            continuation = None
            if self.strategy == "likelihood":
                continuation = self._render_block("continuation", variables)
                if continuation is None and "candidate" in variables:
                    continuation = str(variables["candidate"]["title"]).strip()
        except jinja2.exceptions.SecurityError as exc:
            raise PromptError(f"{self.origin}: unsafe template operation: {exc}") from exc
        except jinja2.UndefinedError as exc:
            raise PromptError(f"{self.origin}: {exc}") from exc
        except jinja2.TemplateError as exc:
            raise PromptError(f"{self.origin}: {exc}") from exc
        except (TypeError, ValueError, AttributeError, KeyError, IndexError, ZeroDivisionError, OverflowError,
                RecursionError) as exc:
            raise PromptError(f"{self.origin}: rendering failed: {type(exc).__name__}: {exc}") from exc
        if not user:
            raise PromptError(f"{self.origin}: the user message rendered empty")
        return RenderedPrompt(user=user, system=system or None, assistant_prefix=assistant,
                              continuation=continuation)


def domain_namespace(words: dict[str, Any]) -> SimpleNamespace:
    """Domain words as templates read them (``domain.items``: a dict's ``items`` would be its method)."""
    return SimpleNamespace(**words)


def _generic_domain() -> dict[str, Any]:
    from promptrec.domain import DOMAIN_PRESETS

    return DOMAIN_PRESETS["generic"].template_vars()


def resolve_template_path(name_or_path: str | Path, prompts_dir: Path | None = None, kind: str = "rerank") -> Path:
    """A template file from a path, or from a name (``letters``, ``letters.j2``, ``rerank/letters``)
    looked up in ``prompts_dir`` (your templates, `Settings.prompts_dir`) first, then in the
    templates shipped with the package."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".j2" and candidate.is_file():
        return candidate
    if candidate.suffix not in ("", ".j2"):
        raise PromptError(f"template {str(name_or_path)!r}: a template file ends in .j2; give a name "
                          f"(`promptrec prompts list`) or the path of a .j2 file")
    name = str(name_or_path)
    if name.endswith(".j2"):
        name = name[: -len(".j2")]
    roots = [Path(prompts_dir)] if prompts_dir is not None else []
    roots.append(default_prompts_dir())
    for root in roots:
        for path in (root / kind / f"{name}.j2", root / f"{name}.j2"):
            if path.is_file():
                return path
    available = ", ".join(list_templates(kind, prompts_dir)) or "none"
    where = " or ".join(str(root / kind) for root in roots)
    raise PromptError(f"no {kind} template {str(name_or_path)!r} in {where} (available: {available})")


def load_template(name_or_path: str | Path, prompts_dir: Path | None = None) -> RerankTemplate:
    """Load a rerank template by name from ``prompts_dir`` (default: the package's ``prompts/``) or by path."""
    path = resolve_template_path(name_or_path, prompts_dir, "rerank")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot read template: {exc}") from exc
    return RerankTemplate.from_string(source, name=path.stem, path=path)


def list_templates(kind: str = "rerank", prompts_dir: Path | None = None) -> list[str]:
    """Names of the templates of one kind (``rerank``, ``explain``): yours in ``prompts_dir`` and
    the package's."""
    return sorted(template_files(kind, prompts_dir))


def template_files(kind: str = "rerank", prompts_dir: Path | None = None) -> dict[str, Path]:
    """name → file of each template of one kind; one in ``prompts_dir`` hides the package's."""
    roots = [default_prompts_dir()] + ([Path(prompts_dir)] if prompts_dir is not None else [])
    return {p.stem: p for root in roots if (root / kind).is_dir() for p in sorted((root / kind).glob("*.j2"))}


# --------------------------------------------------------------------------- template variables


LETTER_LABELS = 26  # letters strategy: at most this many candidates (A..Z)


def candidate_label(index: int) -> str:
    """Label of the index-th (0-based) candidate: A..Z."""
    if not 0 <= index < LETTER_LABELS:
        raise ValueError(f"letters labels exist for {LETTER_LABELS} candidates at most, got index {index}")
    return chr(ord("A") + index)
