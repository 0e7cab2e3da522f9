"""The grounding check: which item titles does an answer name, and are they allowed?

`TitleIndex` knows every catalog title in several written forms ("Usual Suspects, The",
"The Usual Suspects", with or without "(1995)", the main and the alternative title of
"Seven (Se7en)"), normalised (case, accents, punctuation, "&" = "and"). `TitleIndex.check`
scans an answer and returns a `GroundingCheck`:

* ``mentions``: catalog titles the answer names, longest match first, each with the item
  ids it may denote (a following "(year)" narrows a title shared by several items);
* ``unsupported``: mentions of real catalog items none of which is in the allowed set (the
  evidence the model was shown): a leak or an irrelevant claim;
* ``invented``: title-like text that is in no catalog: a quoted, capitalised phrase, or a
  run of capitalised words followed by "(year)", that matches no catalog title.

Prose is full of words that are also film titles ("heat", "now and then", "big"), so a
catalog mention must be written like a title: every capitalised word of the catalog title
capitalised in the answer too; a one-word title must also be quoted, followed by its year, or
not open a sentence — unless the title is one of the allowed ones (citing the evidence is
matched leniently, flagging strictly).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, Field

from promptrec.data.schema import Item

# Titles that are placeholders, not films (MovieLens-100K has an "unknown" item, spelt "unkonwn").
PLACEHOLDER_TITLES = frozenset({"unknown", "unkonwn", "untitled", "n a"})
ARTICLES = ("the", "a", "an", "les", "le", "la", "l", "il", "el", "los", "las", "die", "der", "das")
JOINERS = frozenset(
    "of the and a an in on to for with at by from de la le les du des et vs or is my me".split()
)
MAX_TITLE_TOKENS = 48
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*|&")
_YEAR = re.compile(r"\s*[(\[]\s*(1[89]\d\d|20\d\d)\s*[)\]]")
_QUOTED = re.compile(
    r'"([^"\n]{2,100})"'
    r"|“([^”\n]{2,100})”"
    r"|\*\*([^*\n]{2,100})\*\*"
    r"|(?<![\w*])\*([^*\n]{2,100})\*(?![\w*])"
    r"|(?<![\w'])'([^'\n]{2,100})'(?![\w'])"
    r"|‘([^’\n]{2,100})’"
)
_SENTENCE_END = re.compile(r"[.!?:;\n]\s*$|^\s*$|^\s*[-*•]\s*$|\n\s*[-*•\d.)]*\s*$")


def fold(text: str) -> str:
    """Lower case without accents (NFKD, combining marks dropped)."""
    value = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in value if not unicodedata.combining(ch)).casefold()


def tokens_of(text: str) -> list[tuple[str, int, int]]:
    """(normalised token, start, end) for each word of ``text``; apostrophes drop, "&" reads "and"."""
    out = []
    for match in _TOKEN.finditer(text):
        raw = match.group(0)
        norm = "and" if raw == "&" else fold(raw).replace("'", "").replace("’", "")
        if norm:
            out.append((norm, match.start(), match.end()))
    return out


def normalize_title(text: str) -> str:
    """The comparison form of a title: folded words joined by single spaces."""
    return " ".join(t for t, _, _ in tokens_of(text))


def title_variants(title: str) -> set[str]:
    """Normalised forms a title may be written in.

    "Usual Suspects, The" → "usual suspects the", "the usual suspects", "usual suspects";
    "Seven (Se7en)" → "seven se7en", "seven", "se7en"; a trailing "(1995)" is dropped.
    """
    title = _YEAR.sub("", title).strip()
    parts = [title]
    alt = re.match(r"^(.*?)\s*\(([^()]+)\)\s*$", title)
    if alt:  # "Main (Alternative)"
        parts = [title, alt.group(1), alt.group(2)]
    variants: set[str] = set()
    for part in parts:
        part = part.strip()
        if not part:
            continue
        variants.add(normalize_title(part))
        moved = re.match(r"^(.*?),\s*(" + "|".join(ARTICLES) + r")\.?$", part, flags=re.IGNORECASE)
        if moved:
            body, article = moved.group(1), moved.group(2)
            variants.add(normalize_title(f"{article} {body}"))
            variants.add(normalize_title(body))
        elif (lead := re.match(r"^(" + "|".join(ARTICLES) + r")\s+(.+)$", part, flags=re.IGNORECASE)):
            variants.add(normalize_title(lead.group(2)))
    return {v for v in variants if v and v not in PLACEHOLDER_TITLES}


def _raw_tokens(text: str) -> list[str]:
    return [m.group(0) for m in _TOKEN.finditer(text)]


class TitleMention(BaseModel):
    """One catalog title found in an answer."""

    text: str  # as written in the answer
    start: int
    end: int
    item_ids: list[str]  # the catalog items the words may denote (several when titles repeat)
    allowed: bool  # at least one of them is in the allowed set


class GroundingCheck(BaseModel):
    """What one check of one answer found."""

    mentions: list[TitleMention] = Field(default_factory=list)
    unsupported: list[TitleMention] = Field(default_factory=list)  # catalog titles outside the evidence
    invented: list[str] = Field(default_factory=list)  # title-like text in no catalog
    # Allowed titles the answer says the user watched, though they are not in the user's history:
    misattributed: list[TitleMention] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.invented and not self.misattributed

    def cited_item_ids(self, among: Iterable[str] | None = None) -> list[str]:
        """Allowed item ids the answer names (in order of first mention), optionally only ``among``."""
        wanted = set(among) if among is not None else None
        out: list[str] = []
        for mention in self.mentions:
            if not mention.allowed:
                continue
            for item_id in mention.item_ids:
                if (wanted is None or item_id in wanted) and item_id not in out:
                    out.append(item_id)
        return out

    def offending(self) -> list[str]:
        """The offending titles as written, unsupported first (each once)."""
        out: list[str] = []
        for text in [m.text for m in self.unsupported] + self.invented + [m.text for m in self.misattributed]:
            if text not in out:
                out.append(text)
        return out


@dataclass(frozen=True)
class _Entry:
    item_ids: tuple[str, ...]
    capitals: tuple[bool, ...]  # per token: capitalised in the catalog


class TitleIndex:
    """Every catalog title in its normalised written forms (see the module doc)."""

    def __init__(self, catalog: Mapping[str, Item] | Iterable[Item]):
        items = catalog.values() if isinstance(catalog, Mapping) else catalog
        self.items: dict[str, Item] = {}
        entries: dict[str, tuple[list[str], tuple[bool, ...]]] = {}
        for item in items:
            self.items[item.item_id] = item
            for variant, capitals in self._forms(item.title):
                ids, caps = entries.setdefault(variant, ([], capitals))
                if item.item_id not in ids:
                    ids.append(item.item_id)
        self._entries = {v: _Entry(tuple(ids), caps) for v, (ids, caps) in entries.items()}
        # Genre names ("War", "Crime") are also titles in MovieLens; alone they read as genres.
        self.genres = {normalize_title(g) for item in self.items.values() for g in item.genres}
        self.max_tokens = min(MAX_TITLE_TOKENS, max((len(v.split()) for v in self._entries), default=1))

    @staticmethod
    def _forms(title: str) -> list[tuple[str, tuple[bool, ...]]]:
        from promptrec.explain.prompts import safe_title

        out = []
        shown = safe_title(title)  # the form prompts show (markers removed, capped)
        variants = title_variants(title) | (title_variants(shown.rstrip("…")) if shown != title else set())
        for variant in variants:
            words = variant.split()
            # Capitalisation as the catalog writes each word (articles moved to the front are capitalised).
            raw = {fold(w).replace("'", "").replace("’", ""): w for w in _raw_tokens(_YEAR.sub("", title))}
            caps = []
            for n, word in enumerate(words):
                written = raw.get(word, word)
                cap = written[:1].isupper() or written[:1].isdigit()
                if n == 0 and word in ARTICLES:
                    cap = True
                if word in JOINERS and n > 0:
                    cap = False  # "of", "the" inside a title: either case is fine
                caps.append(cap)
            out.append((variant, tuple(caps)))
        return out

    def lookup(self, text: str) -> list[str]:
        """Item ids whose title (any written form, a trailing year narrows) equals ``text``."""
        year = _YEAR.search(text)
        entry = self._entries.get(normalize_title(_YEAR.sub("", text)))
        if entry is None:
            return []
        ids = list(entry.item_ids)
        if year:
            narrowed = [i for i in ids if self.items[i].year == int(year.group(1))]
            ids = narrowed or ids
        return ids

    # ------------------------------------------------------------------ scanning

    def find_mentions(self, answer: str, allowed: set[str] = frozenset()) -> list[TitleMention]:
        """Catalog titles written in ``answer`` (longest match at each place, left to right)."""
        toks = tokens_of(answer)
        out: list[TitleMention] = []
        n = 0
        while n < len(toks):
            found = None
            for width in range(min(self.max_tokens, len(toks) - n), 0, -1):
                key = " ".join(t for t, _, _ in toks[n : n + width])
                entry = self._entries.get(key)
                if entry is None:
                    continue
                mention = self._accept(answer, toks, n, width, entry, allowed)
                if mention is not None:
                    found = (mention, width)
                    break
            if found:
                out.append(found[0])
                n += found[1]
            else:
                n += 1
        return out

    def _accept(self, answer, toks, n, width, entry: _Entry, allowed) -> TitleMention | None:
        start, end = toks[n][1], toks[n + width - 1][2]
        after = answer[end:]
        year = _YEAR.match(after)
        ids = list(entry.item_ids)
        if year:
            narrowed = [i for i in ids if self.items[i].year == int(year.group(1))]
            ids = narrowed or ids
        is_allowed = any(i in allowed for i in ids)
        written = [answer[s:e] for _, s, e in toks[n : n + width]]
        for cap, word in zip(entry.capitals, written):
            if cap and not (word[:1].isupper() or word[:1].isdigit()):
                return None
        if not entry.capitals or not any(entry.capitals):
            return None
        quoted = _is_quoted(answer, start, end)
        if not year and " ".join(t for t, _, _ in toks[n : n + width]) in self.genres:
            return None  # "also War": the genre, unless a year makes it the film
        if width == 1 and not (year or quoted or is_allowed):
            if _SENTENCE_END.search(answer[:start]):
                return None  # a capitalised word opening a sentence is not evidence of a title
            if written[0].isupper() and len(written[0]) > 1:
                return None  # "IT", "OK": acronyms, not titles
        if year:
            end = end + year.end()
        return TitleMention(text=answer[start:end], start=start, end=end, item_ids=ids, allowed=is_allowed)

    def find_invented(
        self, answer: str, ignore: Iterable[str] = (), mentions: Iterable[TitleMention] = ()
    ) -> list[str]:
        """Title-like phrases in ``answer`` that match no catalog title (see the module doc).

        ``mentions``: catalog mentions already found; a "(year)" right after one is not
        another title.
        """
        skip = {normalize_title(s) for s in ignore if s}
        mention_ends = [m.end for m in mentions]
        out: list[str] = []
        seen: set[str] = set()  # normalised, year dropped: '"X" (2001)' is one title, not two

        def consider(phrase: str) -> None:
            phrase = phrase.strip().strip(" ,.;:!?-—")
            if not phrase:
                return
            norm = normalize_title(_YEAR.sub("", phrase))
            if not norm or norm in skip:
                return
            parts = [normalize_title(p) for p in re.split(r"[,/&;]|\band\b|\bor\b", _YEAR.sub("", phrase))]
            parts = [p for p in parts if p]
            if parts and all(p in skip for p in parts):
                return  # "Mystery, Thriller": a list of genres, not a title
            words = norm.split()
            if self._known_suffix(words) or norm in seen:
                return
            seen.add(norm)
            out.append(phrase)

        quotes: list[tuple[int, int]] = []
        for match in _QUOTED.finditer(answer):
            quotes.append(match.span())
            phrase = next(g for g in match.groups() if g is not None).strip()
            # One quoted word ("Movies") is too often just emphasis; with a year it is a title claim.
            if len(_raw_tokens(_YEAR.sub("", phrase))) < 2 and not _YEAR.search(phrase):
                continue
            if _looks_like_title(phrase):
                consider(phrase)
        toks = tokens_of(answer)
        for match in _YEAR.finditer(answer):
            if any(match.start() <= end <= match.end() for end in mention_ends):
                continue
            if any(qs <= match.start() < qe or (qe <= match.start() and not answer[qe : match.start()].strip())
                   for qs, qe in quotes):
                continue  # '"Title (1997)"' or '"Title" (1997)': the quoted phrase was judged already
            run = _capitalised_run_before(answer, toks, match.start())
            if run:
                consider(f"{run} ({match.group(1)})")
        return out

    def _known_suffix(self, words: list[str]) -> bool:
        """Whether the words, or a tail of them (a run may start with prose), name a catalog title."""
        for start in range(len(words)):
            if " ".join(words[start:]) in self._entries:
                return True
        return False

    def check(
        self,
        answer: str,
        allowed: Iterable[str],
        ignore: Iterable[str] = (),
        history: Iterable[str] | None = None,
    ) -> GroundingCheck:
        """Mentions, unsupported mentions (not in ``allowed`` ids) and invented titles of an answer.

        ``ignore``: phrases that are not titles even when quoted (genre names, the question).
        ``history``: the user's item ids; when given, an allowed title the answer says the
        user watched ("you watched X", "I saw X") but that is not in it is ``misattributed``.
        """
        allowed_set = set(allowed)
        mentions = self.find_mentions(answer, allowed_set)
        unsupported = [m for m in mentions if not m.allowed]
        invented = self.find_invented(answer, ignore, mentions)
        misattributed = []
        if history is not None:
            seen = set(history)
            misattributed = [
                m for m in mentions
                if m.allowed and not seen.intersection(m.item_ids) and _claims_watched(answer, m.start)
            ]
        return GroundingCheck(mentions=mentions, unsupported=unsupported, invented=invented,
                              misattributed=misattributed)


_WATCHED = re.compile(
    r"\b(?:you|i|the user|they|he|she)(?:'ve|\s+have|\s+had|\s+already|\s+also|\s+just|\s+recently|\s+both)*"
    r"\s+(?:watched|saw|seen|liked|loved|enjoyed|rated|viewed)\b",
    re.IGNORECASE,
)
_CLAUSE_BREAK = re.compile(
    r"[.!?;\n]|\b(?:so|recommend\w*|suggest\w*|because|but|which|that|led|leads?|therefore|thus|why|might"
    r"|may|will|would)\b",
    re.IGNORECASE,
)


def _claims_watched(text: str, start: int) -> bool:
    """Whether the clause leading up to ``start`` says someone watched what follows."""
    before = text[max(0, start - 160) : start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    clause = before[breaks[-1].end() :] if breaks else before
    return bool(_WATCHED.search(clause))


def _is_quoted(text: str, start: int, end: int) -> bool:
    before, after = text[max(0, start - 2) : start], text[end : end + 2]
    return any(q in before for q in "\"“'‘*_") and any(q in after for q in "\"”'’*_")


def _looks_like_title(phrase: str) -> bool:
    """A quoted phrase that reads as a title: short, capitalised, not a sentence or a question."""
    phrase = phrase.strip()
    raw = _raw_tokens(_YEAR.sub("", phrase))
    if not raw or len(raw) > 10:
        return False
    if phrase.endswith(("?", ".", "!")) and not _YEAR.search(phrase):
        return False
    if not (raw[0][:1].isupper() or raw[0][:1].isdigit()):
        return False
    content = [w for w in raw if fold(w) not in JOINERS]
    if not content:
        return bool(_YEAR.search(phrase))  # '"The (1996)"': a title claim, if a degenerate one
    capitalised = [w for w in content if w[:1].isupper() or w[:1].isdigit()]
    return len(capitalised) >= max(1, (len(content) + 1) // 2)


def _capitalised_run_before(text: str, toks: list[tuple[str, int, int]], pos: int) -> str:
    """The run of capitalised words (with joiners like "of the") that ends right before ``pos``."""
    last = None
    for n in range(len(toks) - 1, -1, -1):
        if toks[n][2] <= pos:
            last = n
            break
    if last is None or text[toks[last][2] : pos].strip(" ,:'\"’”*"):
        return ""
    first = None
    n = last
    while n >= 0:
        word = text[toks[n][1] : toks[n][2]]
        capital = word[:1].isupper() or word[:1].isdigit()
        if not capital and toks[n][0] not in JOINERS:
            break
        if n < last:
            gap = text[toks[n][2] : toks[n + 1][1]]
            if gap.strip(" ,:'’-–&/") or "\n" in gap:
                break
        if capital:
            first = n
        n -= 1
        if last - n >= MAX_TITLE_TOKENS:
            break
    if first is None:
        return ""
    return text[toks[first][1] : toks[last][2]]
