"""Constrained decoding of quoted text on the real SmolLM2 tokenizer and model: inside double
quotes only the given choices can be written."""

from __future__ import annotations

import re

import pytest
import torch

from promptrec.ranker.backends.quoted import QuotedChoices

pytestmark = pytest.mark.integration

CHOICES = ["Heat (1995)", "Fargo (1996)", "Heat"]


@pytest.fixture(scope="module")
def smol():
    from ranker_support import backend

    return backend("float32")


def processor(smol, prompt_ids: list[int]) -> QuotedChoices:
    from promptrec.ranker.backends.quoted import TokenTexts

    if smol._token_texts is None:
        smol._token_texts = TokenTexts(smol.tokenizer)
    return QuotedChoices(smol.tokenizer, smol._token_texts, CHOICES, len(prompt_ids))


def kept_after(smol, prompt: str, written: str) -> set[str]:
    """The token texts that keep their scores after ``written`` follows ``prompt``."""
    prompt_ids = smol.encode(prompt)
    ids = prompt_ids + smol.tokenizer(written, add_special_tokens=False)["input_ids"]
    scores = torch.zeros(1, len(smol.tokenizer))
    out = processor(smol, prompt_ids)(torch.tensor([ids]), scores)
    texts = smol._token_texts.texts
    return {texts[i] for i in torch.nonzero(out[0] > float("-inf")).ravel().tolist()}


def test_inside_a_quote_only_the_rest_of_a_choice_is_kept(smol):
    kept = kept_after(smol, "Say a film.", 'You watched "Fa')
    assert kept and all("rgo (1996)\"".startswith(t) for t in kept)
    closing = kept_after(smol, "Say a film.", 'You watched "Heat')
    assert '"' in closing and " (" in closing  # close now ("Heat") or go on to "Heat (1995)"
    assert not any(t.strip().isalpha() for t in closing)  # no other word can follow inside
    outside = kept_after(smol, "Say a film.", 'You watched "Heat (1995)" and')
    assert ' "' in outside and " the" in outside  # free outside quotes, and a quote may open
    assert not any(t.count('"') == 1 and t.split('"')[1] and not any(c.startswith(t.split('"')[1]) for c in CHOICES)
                   for t in outside)  # but no token opens a quote into another title


def test_generation_quotes_only_the_choices(smol):
    messages = [{"role": "user", "content": "What is the best movie of all time?"},
                {"role": "assistant", "content": 'The best movie of all time is "'}]  # continued: a quote is open
    free = smol.chat(messages, 30)
    held = smol.chat(messages, 30, quoted=CHOICES)
    title = held.split('"')[0]
    assert title in CHOICES, held
    assert free.split('"')[0] not in CHOICES, free  # unconstrained, it names another film
    assert all(q in CHOICES for q in re.findall(r'"([^"]*)"', '"' + held))
    streamed = "".join(smol.chat_stream(messages, 30, quoted=CHOICES))
    assert streamed.strip() == held
    # each choice is quoted once: after "Fargo (1996)" a new quote cannot be it again
    proc = processor(smol, [])
    assert proc.allowed_inside("Far", frozenset({"Fargo (1996)"})) == set()
    assert proc.allowed_inside("Far") and proc.allowed_inside("", frozenset({"Fargo (1996)"}))
    assert proc.allowed_inside("Hea", frozenset({"Heat (1995)"})) == set()  # "Heat" is the same film
    # once every choice is quoted, no quote can open at all
    assert proc.opens_badly(' "', []) and not proc.opens_badly(' "', ["Heat"]) and not proc.opens_badly(" the", [])
