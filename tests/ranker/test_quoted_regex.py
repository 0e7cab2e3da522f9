"""The quoted-choice rule as a regular expression (vLLM's structured outputs): which generated
texts it accepts, checked with Python's own regex engine."""

from __future__ import annotations

import re

from promptrec.ranker.backends.quoted import quoted_choices_regex

CHOICES = ["Heat (1995)", "Fargo (1996)", "Heat"]


def accepts(regex: str, text: str) -> bool:
    return re.fullmatch(regex, text) is not None


def test_quoted_spans_must_be_choices():
    regex = quoted_choices_regex(CHOICES)
    assert accepts(regex, 'You liked "Heat (1995)" and "Fargo (1996)". Both are crime films.')
    assert accepts(regex, "No quotes at all, and that is fine.")
    assert not accepts(regex, 'You liked "The Matrix (1999)".')
    assert not accepts(regex, 'You liked "Fargo".')  # a choice is quoted whole
    assert accepts(regex, 'You liked "Heat".')


def test_the_lead_already_written_decides_what_is_left():
    lead = 'Because you watched "Heat (1995)"'
    regex = quoted_choices_regex(CHOICES, lead)
    assert accepts(regex, ' and "Fargo (1996)", you may like it.')
    assert not accepts(regex, ' and "Heat", again.')  # the lead quoted that film already
    opened = quoted_choices_regex(CHOICES, 'Because you watched "Far')  # a quote left open
    assert accepts(opened, 'go (1996)" you may like it.')
    assert not accepts(opened, 'm Life" you may like it.')
    assert quoted_choices_regex(["Heat"], 'You watched "Heat".') is None  # nothing left to quote
    assert quoted_choices_regex([]) is None
    assert quoted_choices_regex(CHOICES, 'You watched "Mat') is None  # no choice starts so
