"""Roles and words of an answer, checked on every answer beside its titles (`TitleIndex.check`):
the model speaks as the recommender about the user's items, so it never claims to have
consumed an item itself ("I watched", "I loved reading"), never talks about what it was given
("the facts", "the evidence", "the prompt", "the instructions"), and uses the domain's words
(books are read, songs are listened to: "you watched" is wrong for a book)."""

from __future__ import annotations

import re

from promptrec.domain import Domain

# Verbs that name one medium only (form -> its past), "read" left out ("read about", "read more").
_MEDIUM_VERBS = {"watched": "watched", "watching": "watched", "listened to": "listened to",
                 "listening to": "listened to"}
_META = re.compile(
    r"\b(?:the|these|those|this|given|provided|your)\s+(?:facts?|evidence|prompt|instructions?|system message|"
    r"context provided|data provided|information provided)\b", re.I)


def first_person_claims(answer: str, domain: Domain) -> list[str]:
    """Phrases in which the model says it consumed or liked an item itself ("I watched", "I've
    also enjoyed", "we loved")."""
    verbs = "|".join(re.escape(v) for v in [*domain.consumption_verbs(), "love", "like", "enjoy"])
    pattern = re.compile(
        rf"\b(?:I|we)(?:'ve|'d| have| had| also| really| personally| just| too)*\s+(?:{verbs})\b", re.I)
    return [m.group(0) for m in pattern.finditer(answer)]


def meta_talk(answer: str) -> list[str]:
    """Phrases about what the model was given rather than about the user's items."""
    return [m.group(0) for m in _META.finditer(answer)]


def wrong_domain_words(answer: str, domain: Domain) -> list[str]:
    """Verbs of another medium ("watched" in an answer about books); none for the generic domain."""
    if domain.name == "generic":
        return []
    own = {v.lower() for v in domain.consumption_verbs()}
    foreign = [verb for verb, past in _MEDIUM_VERBS.items() if past not in own]
    if not foreign:
        return []
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(v) for v in foreign) + r")\b", re.I)
    return [m.group(0) for m in pattern.finditer(answer)]
