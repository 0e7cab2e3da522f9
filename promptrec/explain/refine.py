"""Refining a list in conversation: "something lighter", "more like this but newer", "no horror".

`parse_refinement` turns a request into a `Refinement` — genres to leave out or keep to, a year
bound, a text query for the text vectors, the item a "like this" points at — from fixed phrase
rules over the catalog's own genre names; words it does not understand are listed, never
guessed at. `refine` then reorders the user's own retrieval candidates (their history is still
the query): it drops the candidates the filters exclude and the items already shown, and fuses
the retrieval order with the order of similarity to the request (reciprocal rank), so the new
list is still this user's. Each suggestion carries the reasons it fits, built from its record.

    r = parse_refinement("more like this but newer, no horror", rec.catalog, focus=rec.item("50"))
    refined = refine(rec, "1", r, k=5, exclude={"50"})
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field

from promptrec.data.schema import Item
from promptrec.errors import InputError
from promptrec.retrieval.fusion import reciprocal_rank_fusion

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.recommender import Recommender

MAX_REQUEST_CHARS = 300
POOL = 200  # retrieval candidates the refined list is chosen from

# Moods a request may name, as text for the text vectors (the catalog's text is what they match).
MOODS = {
    "lighter": "light-hearted funny feel-good comedy",
    "light": "light-hearted funny feel-good comedy",
    "funnier": "funny comedy",
    "fun": "funny comedy",
    "happier": "feel-good uplifting",
    "darker": "dark serious intense drama",
    "dark": "dark serious intense drama",
    "serious": "serious drama",
    "scarier": "scary horror thriller",
    "shorter": "short",
    "romantic": "romance love story",
    "exciting": "action adventure exciting",
}
_NEGATIONS = ("no", "not", "without", "except", "nothing", "less", "fewer", "avoid", "skip")
_FILLER = frozenset(
    "a an the and but or please some something anything more me give show find recommend like this that "
    "one ones i want would something's kind of sort bit little lot much movie movies film films book books "
    "song songs item items product products to with for it is be than please also maybe".split()
)
_NEWER = re.compile(r"\b(newer|more recent|recent|latest|modern)\b", re.IGNORECASE)
_OLDER = re.compile(r"\b(older|classic|classics|earlier|old)\b", re.IGNORECASE)
_LIKE_THIS = re.compile(r"\b(like (this|that|it)|similar)\b", re.IGNORECASE)


class Refinement(BaseModel):
    """What a refinement request asks for, as understood."""

    request: str
    exclude_genres: list[str] = Field(default_factory=list)
    include_genres: list[str] = Field(default_factory=list)
    newer_than: int | None = None  # a year: only items after it
    older_than: int | None = None
    query: str | None = None  # text matched against the catalog's text vectors
    like_item: str | None = None  # "like this": the item in focus
    understood: list[str] = Field(default_factory=list)  # each part, in words
    not_understood: list[str] = Field(default_factory=list)  # words no rule took

    @property
    def empty(self) -> bool:
        return not (self.exclude_genres or self.include_genres or self.newer_than is not None
                    or self.older_than is not None or self.query or self.like_item)


class RefinedItem(BaseModel):
    """One item of a refined list and why it fits the request."""

    item_id: str
    title: str
    rank: int
    retrieval_rank: int  # its rank among the user's candidates before the request
    reasons: list[str]


class Refined(BaseModel):
    """A refined list and the request it answers."""

    user_id: str
    refinement: Refinement
    items: list[RefinedItem]
    note: str = ""  # what was refused, or why the list is short


def _genre_names(catalog: Mapping[str, Item]) -> dict[str, str]:
    """lower-case genre (and its plural-less form) → the catalog's spelling."""
    names: dict[str, str] = {}
    for item in catalog.values():
        for genre in item.genres:
            low = genre.lower()
            names[low] = genre
            names[low.rstrip("s")] = genre
    return names


def parse_refinement(request: str, catalog: Mapping[str, Item], focus: Item | None = None) -> Refinement:
    """Read a request (see the module doc); raises `InputError` for an empty or too long one."""
    text = (request or "").strip()
    if not text:
        raise InputError("the refinement request is empty")
    if len(text) > MAX_REQUEST_CHARS:
        raise InputError(f"the refinement request is {len(text)} characters; the limit is {MAX_REQUEST_CHARS}")
    out = Refinement(request=text)
    genres = _genre_names(catalog)
    words = re.findall(r"[a-z0-9'-]+", text.lower())
    used: set[int] = set()
    moods: list[str] = []
    for n, word in enumerate(words):
        genre = genres.get(word) or genres.get(word.rstrip("s"))
        if genre is not None:
            negated = any(w in _NEGATIONS for w in words[max(0, n - 2):n])
            target = out.exclude_genres if negated else out.include_genres
            if genre not in target:
                target.append(genre)
            out.understood.append(("no " if negated else "only ") + genre)
            used.update(range(max(0, n - 2), n + 1) if negated else {n})
        elif word in MOODS:
            moods.append(MOODS[word])
            out.understood.append(f"{word}: closer to '{MOODS[word]}'")
            used.add(n)
    if _LIKE_THIS.search(text):
        if focus is None:
            out.not_understood.append("'like this' (no item in focus)")
        else:
            out.like_item = focus.item_id
            out.understood.append(f"like {focus.display_title()}")
    year = focus.year if focus is not None else None
    for pattern, field, word in ((_NEWER, "newer_than", "newer"), (_OLDER, "older_than", "older")):
        if pattern.search(text):
            if year is None:
                out.not_understood.append(f"'{word}' (no year to compare with: no item in focus, or it has none)")
            else:
                setattr(out, field, year)
                out.understood.append(f"{word} than {year}")
    if moods:
        out.query = "; ".join(dict.fromkeys(moods))
    spent = {w for pattern in (_NEWER, _OLDER, _LIKE_THIS) for m in pattern.finditer(text.lower())
             for w in m.group(0).split()}
    left = [w for n, w in enumerate(words) if n not in used and w not in spent and w not in _FILLER
            and w not in _NEGATIONS]
    if left:
        out.not_understood.append("the words " + ", ".join(f"'{w}'" for w in dict.fromkeys(left)))
    return out


def _fits(item: Item, r: Refinement) -> list[str] | None:
    """The reasons an item fits the filters, or None when a filter excludes it."""
    reasons = []
    if any(g in item.genres for g in r.exclude_genres):
        return None
    if r.include_genres:
        matched = [g for g in r.include_genres if g in item.genres]
        if not matched:
            return None
        reasons.append(", ".join(matched))
    if r.newer_than is not None:
        if item.year is None or item.year <= r.newer_than:
            return None
        reasons.append(f"from {item.year}, newer than {r.newer_than}")
    if r.older_than is not None:
        if item.year is None or item.year >= r.older_than:
            return None
        reasons.append(f"from {item.year}, older than {r.older_than}")
    if r.exclude_genres:
        reasons.append("not " + " or ".join(r.exclude_genres))
    return reasons


def refine(rec: Recommender, user_id: str, refinement: Refinement, k: int = 5,
           exclude: Iterable[str] = ()) -> Refined:
    """The user's candidates reordered and filtered by ``refinement`` (see the module doc)."""
    if k <= 0:
        raise InputError(f"k must be positive, got {k}")
    found = rec.candidates(user_id, max(POOL, k))
    skip = set(exclude)
    kept: dict[str, tuple[int, list[str]]] = {}
    for cand in found.candidates:
        reasons = None if cand.item_id in skip else _fits(rec.item(cand.item_id), refinement)
        if reasons is not None:
            kept[cand.item_id] = (cand.rank, reasons)
    order = list(kept)
    targets = []
    if refinement.query:
        targets.append(("request", rec.index.encoder.encode([refinement.query])[0]))
    if refinement.like_item is not None:
        ids, vectors = rec.index.text_vectors([refinement.like_item])
        if len(ids):
            targets.append(("like", np.asarray(vectors[0], dtype=np.float64)))
    similar: dict[str, float] = {}
    if targets and order:
        ids, vectors = rec.index.text_vectors(order)
        unit = np.asarray(vectors, dtype=np.float64)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        rankings = {"retrieval": order}
        for name, target in targets:
            target = target / max(float(np.linalg.norm(target)), 1e-12)
            sims = unit @ target
            rankings[name] = [ids[n] for n in np.argsort(-sims, kind="stable")]
            for n, item_id in enumerate(ids):
                similar[item_id] = max(similar.get(item_id, -1.0), float(sims[n]))
        order = [i for i, _ in reciprocal_rank_fusion(rankings, k=rec.settings.retrieval.rrf_k)]
    items = []
    for rank, item_id in enumerate(order[:k], start=1):
        retrieval_rank, reasons = kept[item_id]
        reasons = list(reasons)
        if item_id in similar:
            what = "the request" if refinement.query else "the item in focus"
            reasons.append(f"text similarity to {what} {similar[item_id]:.2f}")
        reasons.append(f"your candidate number {retrieval_rank}")
        items.append(RefinedItem(item_id=item_id, title=rec.item(item_id).display_title(), rank=rank,
                                 retrieval_rank=retrieval_rank, reasons=reasons))
    notes = []
    if refinement.not_understood:
        notes.append("not understood: " + "; ".join(refinement.not_understood))
    if refinement.empty:
        notes.append("nothing in the request changes the list")
    if len(items) < k:
        notes.append(f"only {len(items)} of your {len(found.candidates)} candidates fit")
    return Refined(user_id=str(user_id), refinement=refinement, items=items, note="; ".join(notes))
