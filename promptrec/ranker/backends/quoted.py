"""Constrained decoding for quoted text: inside double quotes, a generator may only write one of
the given strings (then the closing quote), and each of them once. Explanations quote titles,
so a model held to this cannot quote a title that is not in its evidence, nor name one twice;
what it writes outside quotes is left free (and checked afterwards, sentence by sentence).

`QuotedChoices` is a transformers logits processor over the generated tokens. At each step it
decodes what was generated so far: inside an open quote, only tokens that continue one of the
choices whose start matches what is written (or close the quote after a whole choice) keep
their scores; outside, tokens that would open a quote into text no unused choice starts with
are masked, and once every choice is used no quote can open. When no choice fits (a quote
opened by a token the model was already committed to), nothing is masked and the checks
downstream decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

QUOTE = '"'


class TokenTexts:
    """Each token id's text, decoded alone, indexed for `QuotedChoices` (built once per tokenizer)."""

    def __init__(self, tokenizer: Any):
        size = len(tokenizer)
        self.texts = [tokenizer.decode([i], skip_special_tokens=True) for i in range(size)]
        self.by_text: dict[str, list[int]] = {}
        for i, text in enumerate(self.texts):
            if text:
                self.by_text.setdefault(text, []).append(i)
        self.with_quote = [i for i, t in enumerate(self.texts) if QUOTE in t]
        # tokens that close a quote and go on without opening another: '"', '".', '",' ...
        self.closing = [i for i, t in enumerate(self.texts) if t.startswith(QUOTE) and t.count(QUOTE) == 1]


class QuotedChoices:
    """A logits processor (transformers' ``LogitsProcessor`` protocol): quoted spans of the
    generated text must be one of ``choices``. ``prompt_length``: the prompt's token count (the
    processor reads the tokens after it); ``written``: the answer's text already in the prompt
    (an assistant message being continued), which may have opened a quote."""

    def __init__(self, tokenizer: Any, texts: TokenTexts, choices: Sequence[str], prompt_length: int,
                 written: str = ""):
        self.tokenizer = tokenizer
        self.texts = texts
        self.choices = sorted({c for c in choices if c and QUOTE not in c})
        self.prompt_length = prompt_length
        self.written = written

    def allowed_inside(self, partial: str, used: frozenset[str] = frozenset()) -> set[int]:
        """Tokens that may follow an open quote and ``partial``: a piece of a choice's rest, or
        the closing quote once a whole choice is written (empty: no choice starts so). Choices
        in ``used`` (quoted already), or that one of them starts with or is the start of, are not
        offered again."""
        allowed: set[int] = set()
        by_text = self.texts.by_text
        for choice in self.available(used):
            if not choice.startswith(partial):
                continue
            rest = choice[len(partial):] + QUOTE
            if rest == QUOTE:
                allowed.update(self.texts.closing)
            for end in range(1, len(rest) + 1):
                allowed.update(by_text.get(rest[:end], ()))
        return allowed

    def available(self, used: frozenset[str]) -> list[str]:
        """The choices not quoted yet: a title quoted with its year has been quoted without it
        too ("Heat (1995)", "Heat"), so a choice that starts a used one, or that one starts, is out."""
        return [c for c in self.choices if not any(c.startswith(u) or u.startswith(c) for u in used)]

    def opens_badly(self, token_text: str, choices: Sequence[str]) -> bool:
        """Whether a token, written outside quotes, opens a quote into text none of ``choices``
        starts with (any quote, when there are none left)."""
        if token_text.count(QUOTE) != 1:
            return token_text.count(QUOTE) > 1  # a whole quoted span in one token: never a title
        after = token_text.split(QUOTE, 1)[1]
        return not choices or (bool(after) and not any(c.startswith(after) for c in choices))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if not self.choices:
            return scores
        for row in range(input_ids.shape[0]):
            text = self.written + self.tokenizer.decode(input_ids[row, self.prompt_length:], skip_special_tokens=True)
            parts = text.split(QUOTE)
            if len(parts) % 2 == 0:  # a quote is open
                used = frozenset(parts[1:-1:2])  # the spans quoted (and closed) so far
                allowed = self.allowed_inside(parts[-1], used)
                if allowed:
                    keep = torch.full_like(scores[row], float("-inf"))
                    index = torch.tensor(sorted(allowed), device=scores.device)
                    keep[index] = scores[row, index]
                    scores[row] = keep
            else:
                left = self.available(frozenset(parts[1::2]))
                bad = [t for t in self.texts.with_quote if self.opens_badly(self.texts.texts[t], left)]
                if bad:
                    scores[row, torch.tensor(bad, device=scores.device)] = float("-inf")
        return scores


def quoted_choices_regex(choices: Sequence[str], written: str = "") -> str | None:
    """The same rule as a regular expression over the generated text, for engines that take
    structured-output regexes (vLLM): quoted spans are one of ``choices``. ``written``: the
    answer's text already in the prompt; its quoted titles are not offered again, and a quote it
    left open must be finished with a choice. Weaker than `QuotedChoices` in one way: a choice
    may be quoted twice in the generated text (the sentence checks see repeats). None when there
    is nothing to hold quotes to."""
    import re

    parts = written.split(QUOTE)
    used = frozenset(parts[1:-1:2] if len(parts) % 2 == 0 else parts[1::2])
    left = [c for c in sorted({c for c in choices if c and QUOTE not in c})
            if not any(c.startswith(u) or u.startswith(c) for u in used)]
    if not left:
        return None
    alternatives = "|".join(re.escape(c) for c in sorted(left, key=len, reverse=True))
    free = f'[^"]*("({alternatives})"[^"]*)*'
    if len(parts) % 2 == 1:
        return free
    partial = parts[-1]  # a quote is open: finish one of the choices that start so
    rests = [c[len(partial):] for c in left if c.startswith(partial)]
    if not rests:
        return None
    return "(" + "|".join(re.escape(r) for r in sorted(rests, key=len, reverse=True)) + ')"' + free
