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


# "you chose X to recommend Y": the user cast as the recommender.
_USER_AS_RECOMMENDER = re.compile(
    r"\byou(?:'ve| have)?\s+(?:chose|chosen|picked|selected|recommended|suggested)\b[^.!?]{0,120}?"
    r"\bto\s+(?:recommend|suggest)\b", re.I)
# A recommendation that ends right before a title: "I recommend (that you watch)", "you should read".
_RECOMMENDS_NEXT = re.compile(
    r"(?:\b(?:I|we)(?:\s+would)?\s+(?:recommend|suggest)(?:ed)?(?:\s+(?:that\s+)?you)?"
    r"|\byou\s+(?:should|might|could|may|would)\s+(?:also\s+)?(?:like|love|enjoy))"
    r"(?:\s+(?:to\s+)?(?:watch|watching|read|reading|listen\s+to|listening\s+to|try|trying|check\s+out|see))?"
    r"[\s\"“”‘’'*_]*$", re.I)


def swapped_roles(answer: str, titles_out: str, history_spans: list[tuple[int, int]]) -> list[str]:
    """Phrases with the roles swapped: the user cast as the one recommending ("you chose X to
    recommend Y"), or one of the user's own items recommended to them ("I recommend you watch
    X" for an X in their history). ``titles_out``: the answer with its titles blanked;
    ``history_spans``: where the answer names items of the user's history."""
    out = [m.group(0) for m in _USER_AS_RECOMMENDER.finditer(titles_out)]
    for start, end in history_spans:
        base = max(0, start - 80)
        lead = _RECOMMENDS_NEXT.search(answer[base:start])
        if lead:
            out.append(answer[base + lead.start():end])
    return out
