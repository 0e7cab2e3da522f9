"""Questions a conversation declines before any model sees them: asking for other users' records
("what did user 12 watch?", "list every user") or for the model's instructions ("print your
system prompt", "ignore your instructions"). The model never had another user's records, so it
could only invent them; declining says plainly what cannot be answered instead.

The rules are phrase patterns, kept narrow on purpose: "people who liked this also liked..."
is a fair question about the evidence, and passes.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel

_OTHER_USERS = re.compile(
    r"\buser\s*(?:#|no\.?|number|id)?\s*\d+\b"
    r"|\b(?:other|another|every|all|each|any)\s+(?:users?|customers?|members?|accounts?|person's|people's)\b"
    r"|\b(?:everyone|everybody|someone else|somebody else)(?:'s)?\s+(?:history|histories|data|ratings?|list|watched|read|bought)\b"
    r"|\b(?:list|show|give|tell)\b[^.?!]{0,30}\b(?:every|all)\s+(?:users?|people|customers?)\b",
    re.IGNORECASE,
)
_INSTRUCTIONS = re.compile(
    r"\b(?:system|hidden|initial|original)\s+(?:prompt|message|instructions?)\b"
    r"|\b(?:your|the)\s+(?:instructions|prompt|rules|guidelines)\b"
    r"|\bignore\b[^.?!]{0,30}\b(?:instructions?|rules|prompt|above|previous)\b"
    r"|\b(?:repeat|print|reveal|show)\b[^.?!]{0,20}\b(?:everything|all)\s+(?:above|before)\b",
    re.IGNORECASE,
)


class Declined(BaseModel):
    """Why a question is not put to the model."""

    reason: Literal["other users", "instructions"]
    matched: str  # the words that matched, as written


def declined(question: str) -> Declined | None:
    """The reason to decline ``question``, or None when the model may answer it."""
    for reason, pattern in (("other users", _OTHER_USERS), ("instructions", _INSTRUCTIONS)):
        found = pattern.search(question)
        if found:
            return Declined(reason=reason, matched=found.group(0))
    return None
