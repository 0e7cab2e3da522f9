"""Scoring strategies: turn a rendered template and an `LLMBackend` into one raw score per candidate.

* ``letters`` (LlamaRec's verbalizer): the candidates are listed under letters A, B, C...;
  one prompt, and the next-token log-probabilities of the letter tokens score every candidate
  at once. The letter log-probs are renormalised over the listed letters (a log-distribution
  over the candidates). Small models favour early letters, so the list is shown in
  ``permutations`` orders (cyclic shifts by default, or seeded random shuffles; the first is
  the retrieval order) and each candidate's log-prob is averaged over them. The prompts
  share the history prefix, so the backend reuses its KV cache.
* ``likelihood``: score = log P(c | prompt with history) - log P(c | prompt without history),
  c the candidate's continuation text (pointwise mutual information between the history and
  the candidate). Summed over tokens by default (``normalize="sum"``): the token count
  appears in both terms, so the difference needs no length normalisation and stays a true
  log-ratio; ``normalize="mean"`` divides it by the candidate's token count instead.
  One shared prefix per prompt, so two prefix passes and two batched suffix passes in all.
* ``yesno`` (TALLRec): one prompt per candidate, "Will this user enjoy X?"; score =
  log P("Yes") - log P("No") for the first token of the reply (the log-odds of Yes, both
  taken from the full-vocabulary distribution). The prompts share the history prefix.

Label tokens (letters, Yes/No) are chosen for the text they follow: after a newline (the
chat template's "assistant\\n") the bare label ``"A"``, otherwise the label with a leading
space (``"Answer:" + " A"``), exactly as the tokenizer splits such text. A trailing space
in the assistant prefix is dropped first, since "Answer: A" tokenizes as "Answer", ":", " A".
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from promptrec.ranker.backends.base import LLMBackend, next_token_logprobs_grouped
from promptrec.ranker.prompts import LETTER_LABELS, RenderedPrompt, RerankTemplate, candidate_label


class OutputHealth(BaseModel):
    """How well-formed the model's output distribution was.

    ``label_mass``: the probability mass the model put on the answer tokens (letters shown,
    or Yes/No), averaged over prompts. Low mass means the model wanted to say something else
    (a known failure of small models) and the scores are less trustworthy.
    """

    label_mass: float | None = None
    min_label_mass: float | None = None
    notes: list[str] = Field(default_factory=list)


class StrategyResult(BaseModel):
    """Raw scores (higher = better), aligned with the candidates as given."""

    strategy: str
    scores: list[float]
    prompt_tokens: int  # tokens of every distinct prompt text sent (before prefix reuse)
    n_prompts: int
    health: OutputHealth = Field(default_factory=OutputHealth)
    details: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class ItemView:
    """What a template sees of one item: sanitised title and text."""

    title: str
    text: str


class ScoringStrategy(Protocol):
    name: str

    def score(
        self,
        backend: LLMBackend,
        template: RerankTemplate,
        history: list[ItemView],
        candidates: list[ItemView],
    ) -> StrategyResult: ...

    def score_many(
        self,
        backend: LLMBackend,
        template: RerankTemplate,
        requests: list[tuple[list[ItemView], list[ItemView]]],
    ) -> list[StrategyResult]: ...


# --------------------------------------------------------------------------- helpers


def _history_vars(history: list[ItemView]) -> list[dict[str, str]]:
    return [{"title": h.title, "text": h.text} for h in history]


def _candidate_var(view: ItemView, index: int, label: str | None = None) -> dict[str, Any]:
    return {"title": view.title, "text": view.text, "index": index + 1, "label": label or ""}


def _prompt_text(backend: LLMBackend, rendered: RenderedPrompt) -> str:
    """Chat-formatted prompt plus the assistant prefix (trailing spaces dropped)."""
    text = backend.render_chat(rendered.messages())
    if rendered.assistant_prefix:
        text += rendered.assistant_prefix.rstrip(" ")
    return text


def label_form(prompt: str, label: str) -> str:
    """The label as the tokenizer would see it after ``prompt``: bare after whitespace, else " A"."""
    return label if (not prompt or prompt[-1].isspace()) else " " + label


def _check_template(template: RerankTemplate, expected: str) -> None:
    if template.strategy != expected:
        raise ValueError(
            f"template {template.name} declares strategy {template.strategy!r}, not {expected!r}"
        )


def _permutations(n: int, count: int, mode: str, seed: int) -> list[list[int]]:
    """``count`` distinct orders of range(n), the identity first (as far as n allows)."""
    count = max(1, min(count, math.factorial(min(n, 10)) if n else 1))
    orders = [list(range(n))]
    if mode == "cyclic":
        count = min(count, max(n, 1))
        for k in range(1, count):
            shift = round(k * n / count)
            orders.append([(i + shift) % n for i in range(n)])
    elif mode == "random":
        rng = random.Random(seed)
        seen = {tuple(orders[0])}
        tries = 0
        while len(orders) < count and tries < 100 * count:
            tries += 1
            order = list(range(n))
            rng.shuffle(order)
            if tuple(order) not in seen:
                seen.add(tuple(order))
                orders.append(order)
    else:
        raise ValueError(f"unknown permutation mode {mode!r}; use 'cyclic' or 'random'")
    return orders


# --------------------------------------------------------------------------- prompt builders
# One way to build a strategy's prompts, called by the strategies at inference and by
# `promptrec.train.ranker` at training time, so a tuned model sees exactly the served prompts.


def build_letters_prompts(backend: LLMBackend, template: RerankTemplate, history: list[ItemView],
                          candidates: list[ItemView], orders: list[list[int]]) -> tuple[list[str], list[int]]:
    """One letters prompt per order (``order[pos]`` = the candidate shown under the pos-th letter)
    and the token ids of the letters A, B, ... in the form they take after the prompt."""
    n = len(candidates)
    labels = [candidate_label(i) for i in range(n)]
    prompts = []
    for order in orders:
        shown = [_candidate_var(candidates[c], pos, labels[pos]) for pos, c in enumerate(order)]
        rendered = template.render(history=_history_vars(history), candidates=shown, n_candidates=n)
        prompts.append(_prompt_text(backend, rendered))
    # Every permutation's prompt ends with the same assistant prefix, hence the same label form.
    label_ids = backend.label_token_ids([label_form(prompts[0], lab) for lab in labels])
    return prompts, label_ids


def build_yesno_prompts(backend: LLMBackend, template: RerankTemplate, history: list[ItemView],
                        candidates: list[ItemView], yes: str = "Yes", no: str = "No") -> tuple[list[str], list[int]]:
    """One yes/no prompt per candidate and the token ids of (Yes, No) after them."""
    prompts = []
    for i, view in enumerate(candidates):
        rendered = template.render(history=_history_vars(history), candidate=_candidate_var(view, i),
                                   candidates=[], n_candidates=len(candidates))
        prompts.append(_prompt_text(backend, rendered))
    forms = {label_form(p, yes) for p in prompts}
    if len(forms) != 1:
        raise ValueError(f"template {template.name}: candidate prompts end differently; keep the question's end fixed")
    ids = backend.label_token_ids([label_form(prompts[0], yes), label_form(prompts[0], no)])
    return prompts, ids


def build_likelihood_prompts(backend: LLMBackend, template: RerankTemplate,
                             history: list[ItemView], candidates: list[ItemView]) -> tuple[str, list[str]]:
    """The shared prompt (prefix) and each candidate's continuation text, as scored."""
    prefix = None
    continuations = []
    for i, view in enumerate(candidates):
        rendered = template.render(history=_history_vars(history), candidate=_candidate_var(view, i),
                                   candidates=[], n_candidates=len(candidates))
        text = _prompt_text(backend, rendered)
        if prefix is None:
            prefix = text
        elif text != prefix:
            raise ValueError(
                f"template {template.name}: the likelihood prompt must not depend on the candidate; "
                "put the candidate in the 'continuation' block only"
            )
        cont = (rendered.continuation or view.title).strip()
        continuations.append(label_form(text, cont))
    assert prefix is not None
    return prefix, continuations


# --------------------------------------------------------------------------- strategies


class LettersStrategy:
    """Label the candidates A, B, C...; next-token log-probs of the labels, averaged over orders."""

    name = "letters"
    max_candidates = LETTER_LABELS

    def __init__(self, permutations: int = 3, permutation_mode: Literal["cyclic", "random"] = "cyclic", seed: int = 0):
        if permutations < 1:
            raise ValueError("permutations must be >= 1")
        self.permutations = permutations
        self.permutation_mode = permutation_mode
        self.seed = seed

    def build_prompts(self, backend: LLMBackend, template: RerankTemplate, history: list[ItemView],
                      candidates: list[ItemView]) -> tuple[list[list[int]], list[str], list[int]]:
        """The candidate orders, one prompt per order (the history first, so they share it) and the
        label token ids (`build_letters_prompts`, which training uses too)."""
        _check_template(template, self.name)
        n = len(candidates)
        if n > self.max_candidates:
            raise ValueError(f"the letters strategy labels {self.max_candidates} candidates at most, got {n}")
        orders = _permutations(n, self.permutations, self.permutation_mode, self.seed)
        prompts, label_ids = build_letters_prompts(backend, template, history, candidates, orders)
        return orders, prompts, label_ids

    def score(self, backend: LLMBackend, template: RerankTemplate, history: list[ItemView],
              candidates: list[ItemView]) -> StrategyResult:
        return self.score_many(backend, template, [(history, candidates)])[0]

    def score_many(self, backend: LLMBackend, template: RerankTemplate,
                   requests: list[tuple[list[ItemView], list[ItemView]]]) -> list[StrategyResult]:
        """Score several users in one grouped backend call (each user's prompts share a prefix)."""
        built = [self.build_prompts(backend, template, h, c) if c else None for h, c in requests]
        results: list[StrategyResult | None] = [None] * len(requests)
        for n in {len(c) for _, c in requests if c}:  # one label set per candidate count
            which = [i for i, (_, c) in enumerate(requests) if len(c) == n]
            ids = built[which[0]][2]
            logps = next_token_logprobs_grouped(backend, [built[i][1] for i in which], ids)
            for i, logp in zip(which, logps):
                orders, prompts, _ = built[i]
                results[i] = self._finish(backend, orders, prompts, np.asarray(logp, dtype=np.float64))
        return [r or StrategyResult(strategy=self.name, scores=[], prompt_tokens=0, n_prompts=0) for r in results]

    def _finish(self, backend: LLMBackend, orders: list[list[int]], prompts: list[str],
                logp: np.ndarray) -> StrategyResult:
        n = logp.shape[1]
        mass = np.exp(logp).sum(axis=1)
        renorm = logp - np.log(np.maximum(mass, 1e-300))[:, None]
        per_candidate = np.zeros((len(orders), n))
        for p, order in enumerate(orders):
            for pos, c in enumerate(order):
                per_candidate[p, c] = renorm[p, pos]
        scores = per_candidate.mean(axis=0)
        health = OutputHealth(label_mass=float(mass.mean()), min_label_mass=float(mass.min()))
        if mass.mean() < 0.5:
            health.notes.append(f"only {mass.mean():.0%} of the next-token mass is on the candidate letters")
        return StrategyResult(
            strategy=self.name,
            scores=[float(s) for s in scores],
            prompt_tokens=sum(backend.count_tokens(p) for p in prompts),
            n_prompts=len(prompts),
            health=health,
            # the first order alone (the retrieval order): what 1 permutation would have scored,
            # for ranker.mode = "auto" to weigh 1 order against all of them (`ranker.mode`)
            details={"permutations": [list(o) for o in orders],
                     "position_logprobs": renorm.mean(axis=0).tolist(),
                     "first_order_scores": per_candidate[0].tolist()},
        )


class LikelihoodStrategy:
    """log P(candidate | with history) - log P(candidate | without history)."""

    name = "likelihood"

    def __init__(self, normalize: Literal["sum", "mean"] = "sum"):
        if normalize not in ("sum", "mean"):
            raise ValueError("normalize must be 'sum' or 'mean'")
        self.normalize = normalize

    def _prefix_and_continuations(self, backend: LLMBackend, template: RerankTemplate,
                                  history: list[ItemView], candidates: list[ItemView]) -> tuple[str, list[str]]:
        return build_likelihood_prompts(backend, template, history, candidates)

    def score(self, backend: LLMBackend, template: RerankTemplate, history: list[ItemView],
              candidates: list[ItemView]) -> StrategyResult:
        _check_template(template, self.name)
        if not candidates:
            return StrategyResult(strategy=self.name, scores=[], prompt_tokens=0, n_prompts=0)
        with_prefix, conts = build_likelihood_prompts(backend, template, history, candidates)
        without_prefix, conts0 = build_likelihood_prompts(backend, template, [], candidates)
        lp_with = np.asarray(backend.continuation_logprobs(with_prefix, conts), dtype=np.float64)
        lp_without = np.asarray(backend.continuation_logprobs(without_prefix, conts0), dtype=np.float64)
        scores = lp_with - lp_without
        lengths = np.array([max(1, backend.count_tokens(c)) for c in conts], dtype=np.float64)
        if self.normalize == "mean":
            scores = scores / lengths
        cont_tokens = int(lengths.sum())
        return StrategyResult(
            strategy=self.name,
            scores=[float(s) for s in scores],
            prompt_tokens=backend.count_tokens(with_prefix) + backend.count_tokens(without_prefix) + 2 * cont_tokens,
            n_prompts=2,
            details={"logp_with_history": lp_with.tolist(), "logp_without_history": lp_without.tolist(),
                     "normalize": self.normalize},
        )

    def score_many(self, backend: LLMBackend, template: RerankTemplate,
                   requests: list[tuple[list[ItemView], list[ItemView]]]) -> list[StrategyResult]:
        """One user at a time: each user's two prefixes are already shared by all its candidates."""
        return [self.score(backend, template, h, c) for h, c in requests]


class YesNoStrategy:
    """log P(Yes) - log P(No) after "Will this user enjoy X?", one prompt per candidate."""

    name = "yesno"

    def __init__(self, yes: str = "Yes", no: str = "No"):
        self.yes, self.no = yes, no

    def build_prompts(self, backend: LLMBackend, template: RerankTemplate, history: list[ItemView],
                      candidates: list[ItemView]) -> tuple[list[str], list[int]]:
        """One prompt per candidate (sharing the history prefix) and the (Yes, No) token ids."""
        _check_template(template, self.name)
        return build_yesno_prompts(backend, template, history, candidates, self.yes, self.no)

    def score(self, backend: LLMBackend, template: RerankTemplate, history: list[ItemView],
              candidates: list[ItemView]) -> StrategyResult:
        return self.score_many(backend, template, [(history, candidates)])[0]

    def score_many(self, backend: LLMBackend, template: RerankTemplate,
                   requests: list[tuple[list[ItemView], list[ItemView]]]) -> list[StrategyResult]:
        """Score several users in one grouped backend call (each user's prompts share a prefix)."""
        built = [self.build_prompts(backend, template, h, c) if c else None for h, c in requests]
        which = [i for i, b in enumerate(built) if b is not None]
        results = [StrategyResult(strategy=self.name, scores=[], prompt_tokens=0, n_prompts=0) for _ in requests]
        if not which:
            return results
        ids = built[which[0]][1]
        for i, logp in zip(which, next_token_logprobs_grouped(backend, [built[i][0] for i in which], ids)):
            logp = np.asarray(logp, dtype=np.float64)  # (n, 2)
            mass = np.exp(logp).sum(axis=1)
            health = OutputHealth(label_mass=float(mass.mean()), min_label_mass=float(mass.min()))
            if mass.mean() < 0.5:
                health.notes.append(f"only {mass.mean():.0%} of the next-token mass is on Yes/No")
            results[i] = StrategyResult(
                strategy=self.name,
                scores=[float(s) for s in logp[:, 0] - logp[:, 1]],
                prompt_tokens=sum(backend.count_tokens(p) for p in built[i][0]),
                n_prompts=len(built[i][0]),
                health=health,
                details={"p_yes": np.exp(logp[:, 0]).tolist()},
            )
        return results


_STRATEGIES = {"letters": LettersStrategy, "likelihood": LikelihoodStrategy, "yesno": YesNoStrategy}


def make_strategy(name: str, **options: Any) -> ScoringStrategy:
    """A strategy by name with its options (letters: permutations, permutation_mode, seed;
    likelihood: normalize; yesno: yes, no)."""
    try:
        cls = _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; expected one of {', '.join(_STRATEGIES)}") from None
    return cls(**options)
