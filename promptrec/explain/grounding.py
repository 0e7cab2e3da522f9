"""The grounding check: which item titles does an answer name, and are they allowed?

`TitleIndex` knows every catalog title in several written forms ("Usual Suspects, The",
"The Usual Suspects", with or without "(1995)", the main and the alternative title of
"Seven (Se7en)"), normalised (case, accents, punctuation, "&" = "and"). `TitleIndex.check`
scans an answer and returns a `GroundingCheck`:

* ``mentions``: catalog titles the answer names, longest match first, each with the item
  ids it may denote (a following "(year)" narrows a title shared by several items);
* ``unsupported``: mentions of real catalog items none of which is in the allowed set (the
  evidence the model was shown): a leak or an irrelevant claim;
* ``invented``: title-like text that is in no catalog: a quoted, capitalised phrase, a
  run of capitalised words followed by "(year)", or (any domain, no year needed) a run of two
  or more capitalised words that is no catalog title, genre or attribute value (author,
  brand...). Each such span is first matched against the catalog titles fuzzily (difflib,
  over the titles sharing a word with it): a close match (`FUZZY_RATIO`) is a mention of
  that title, not an invention;
* ``misattributed``: allowed titles the answer says the user consumed ("you watched X",
  "you bought X", "you listened to X": the domain's verbs, `Domain.consumption_verbs`)
  though they are not in the user's history;
* ``unsupported_claims``: numbers and years the answer states that the facts it was given
  do not contain ("released in 1988" when the facts say 2004; "read by over 43 people");
* ``first_person``, ``meta_talk``, ``wrong_domain``, ``swapped``: the roles and words of the
  answer (`promptrec.explain.roles`): "I watched", "the facts", "you watched" a book, "you chose
  X to recommend Y" or the user's own item recommended to them.

Prose is full of words that are also film titles ("heat", "now and then", "big"), so a
catalog mention must be written like a title: every capitalised word of the catalog title
capitalised in the answer too; a one-word title must also be quoted, followed by its year, or
not open a sentence — unless the title is one of the allowed ones (citing the evidence is
matched leniently, flagging strictly).
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from promptrec.data.schema import Item
from promptrec.explain.roles import first_person_claims, meta_talk, swapped_roles, wrong_domain_words

if TYPE_CHECKING:  # pragma: no cover
    from promptrec.domain import Domain

FUZZY_RATIO = 0.88  # difflib ratio above which a span is taken for a catalog title
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")

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
    # Allowed titles the answer says the user consumed, though they are not in the user's history:
    misattributed: list[TitleMention] = Field(default_factory=list)
    # Numbers and years the answer states that the facts do not contain:
    unsupported_claims: list[str] = Field(default_factory=list)
    # Not an answer: runs of the instructions it was given, parroted back (e.g. the retry note),
    # and phrases it repeats (the same clause twice is filler, not an explanation):
    echoed: list[str] = Field(default_factory=list)
    repeated: list[str] = Field(default_factory=list)
    # Roles and words (`promptrec.explain.roles`): the model claiming to have consumed an item
    # itself, talk about its prompt ("the facts"), another medium's verbs ("watched" a book):
    first_person: list[str] = Field(default_factory=list)
    meta_talk: list[str] = Field(default_factory=list)
    wrong_domain: list[str] = Field(default_factory=list)
    # Swapped roles: the user cast as the recommender, or their own item recommended to them:
    swapped: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (not self.unsupported and not self.invented and not self.misattributed and not self.unsupported_claims
                and not self.echoed and not self.repeated and not self.first_person and not self.meta_talk
                and not self.wrong_domain and not self.swapped)

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
        for text in ([m.text for m in self.unsupported] + self.invented + [m.text for m in self.misattributed]
                     + self.unsupported_claims + [f"(repeats the instructions: {e!r})" for e in self.echoed]
                     + [f"(repeats itself: {r!r})" for r in self.repeated]
                     + [f"(speaks as if it consumed an item itself: {v!r})" for v in self.first_person]
                     + [f"(talks about its input: {m!r})" for m in self.meta_talk]
                     + [f"(another medium's word: {w!r})" for w in self.wrong_domain]
                     + [f"(swaps the roles: {r!r})" for r in self.swapped]):
            if text not in out:
                out.append(text)
        return out


@dataclass(frozen=True)
class _Entry:
    item_ids: tuple[str, ...]
    capitals: tuple[bool, ...]  # per token: capitalised in the catalog


class TitleIndex:
    """Every catalog title in its normalised written forms (see the module doc)."""

    def __init__(self, catalog: Mapping[str, Item] | Iterable[Item], domain: Domain | None = None):
        from promptrec.domain import DOMAIN_PRESETS

        self.domain = domain or DOMAIN_PRESETS["generic"]
        self._claims = _claim_pattern(self.domain.consumption_verbs())
        items = catalog.values() if isinstance(catalog, Mapping) else catalog
        self.items: dict[str, Item] = {}
        entries: dict[str, tuple[list[str], tuple[bool, ...]]] = {}
        for item in items:
            self.items[item.item_id] = item
            for variant, capitals in self._forms(item.title):
                ids, caps = entries.setdefault(variant, ([], capitals))
                if item.item_id not in ids:
                    ids.append(item.item_id)
                if caps != capitals:  # items sharing a form: a word must be capitalised only where all do
                    entries[variant] = (ids, tuple(a and b for a, b in zip(caps, capitals)))
        self._entries = {v: _Entry(tuple(ids), caps) for v, (ids, caps) in entries.items()}
        # Genre names ("War", "Crime") are also titles in MovieLens; alone they read as genres.
        self.genres = {normalize_title(g) for item in self.items.values() for g in item.genres}
        self.max_tokens = min(MAX_TITLE_TOKENS, max((len(v.split()) for v in self._entries), default=1))
        # Names that are not titles: attribute values (authors, brands), genres, the domain's nouns.
        self.names = {normalize_title(v) for item in self.items.values() for v in item.attributes.values()}
        self.names |= self.genres
        # Words a list of genres or a noun phrase is made of ("Sci-Fi Action", "Running products").
        self.name_words = {w for g in self.genres for w in g.split()} | {
            w for word in (self.domain.item, self.domain.items, self.domain.audience) for w in normalize_title(word).split()
        }
        self._names_text = "\n".join(sorted(self.names))
        self._by_word: dict[str, list[str]] | None = None  # word -> title forms, built on first fuzzy lookup

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

    def fuzzy_lookup(self, text: str) -> list[str]:
        """Item ids of the catalog title closest to ``text`` when it is close enough
        (difflib ratio >= FUZZY_RATIO over the normalised forms); [] otherwise."""
        norm = normalize_title(_YEAR.sub("", text))
        if not norm:
            return []
        if norm in self._entries:
            return list(self._entries[norm].item_ids)
        if self._by_word is None:
            self._by_word = {}
            for form in self._entries:
                for word in set(form.split()):
                    if word not in JOINERS:
                        self._by_word.setdefault(word, []).append(form)
        pool: set[str] = set()
        for word in set(norm.split()) - JOINERS:
            forms = self._by_word.get(word, ())
            if len(forms) <= 5000:
                pool.update(forms)
        best, best_ratio = None, 0.0
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(norm)
        for form in sorted(pool):
            matcher.set_seq1(form)
            if matcher.real_quick_ratio() < FUZZY_RATIO or matcher.quick_ratio() < FUZZY_RATIO:
                continue
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best, best_ratio = form, ratio
        if best is None or best_ratio < FUZZY_RATIO:
            return []
        return list(self._entries[best].item_ids)

    def is_name(self, phrase: str) -> bool:
        """Whether ``phrase`` is a known non-title name: an attribute value or a genre, whole or
        its run of words ("Stephen King", "King"), or made only of genre words and the domain's
        nouns ("Sci-Fi Action", "Running products")."""
        norm = normalize_title(_YEAR.sub("", phrase))
        words = [w for w in norm.split() if w not in JOINERS]
        if not words:
            return False
        if norm in self.names or all(w in self.name_words for w in words):
            return True
        return re.search(rf"(?:^| ){re.escape(norm)}(?: |$)", self._names_text, flags=re.MULTILINE) is not None

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
        self, answer: str, ignore: Iterable[str] = (), mentions: Iterable[TitleMention] = (),
        near: list[TitleMention] | None = None, allowed: set[str] = frozenset(),
    ) -> list[str]:
        """Title-like phrases in ``answer`` that match no catalog title (see the module doc).

        ``mentions``: catalog mentions already found; a "(year)" right after one is not
        another title. ``near``: when given, phrases close to a catalog title (`fuzzy_lookup`)
        are appended to it as mentions (``allowed`` says which ids the evidence holds) instead
        of being reported as invented.
        """
        skip = {normalize_title(s) for s in ignore if s}
        mentions = list(mentions)
        mention_ends = [m.end for m in mentions]
        spans = [(m.start, m.end) for m in mentions]
        out: list[str] = []
        seen: set[str] = set()  # normalised, year dropped: '"X" (2001)' is one title, not two

        def consider(phrase: str) -> None:
            phrase = phrase.strip().strip(" ,.;:!?-—")
            if not phrase:
                return
            if self.is_name(phrase):
                return
            norm = normalize_title(_YEAR.sub("", phrase))
            if not norm or norm in skip:
                return
            parts = [normalize_title(p) for p in re.split(r"[,/&;]|\band\b|\bor\b", _YEAR.sub("", phrase))]
            parts = [p for p in parts if p]
            if parts and all(p in skip for p in parts):
                return  # "Mystery, Thriller": a list of genres, not a title
            words = norm.split()
            tail = words
            while tail and (tail[0].isdigit() or tail[0] in _COUNT_VERBS):
                tail = tail[1:]
            if tail != words and " ".join(tail) in skip:
                return  # "1 is Sci-Fi": a count of a genre, not a title
            if self._known_suffix(words) or norm in seen:
                return
            seen.add(norm)
            ids = self.fuzzy_lookup(phrase)
            if ids:
                if near is not None:
                    start = answer.find(phrase)
                    near.append(TitleMention(text=phrase, start=max(start, 0), end=max(start, 0) + len(phrase),
                                             item_ids=ids, allowed=any(i in allowed for i in ids)))
                return
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
        # Unquoted, yearless title-like spans: runs of 2+ capitalised words outside quotes and mentions.
        for start, end, run in _capitalised_runs(answer, toks):
            if any(s < end and start < e for s, e in spans) or any(qs <= start < qe for qs, qe in quotes):
                continue
            consider(run)
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
        facts: str | None = None,
        instructions: Iterable[str] = (),
    ) -> GroundingCheck:
        """Mentions, unsupported mentions (not in ``allowed`` ids) and invented titles of an answer.

        ``facts``: the text the model was given (the evidence and the question); when given,
        numbers and years the answer states that it does not hold are ``unsupported_claims``.

        ``ignore``: phrases that are not titles even when quoted (genre names, the question).
        ``history``: the user's item ids; when given, an allowed title the answer says the
        user watched ("you watched X", "I saw X") but that is not in it is ``misattributed``.
        ``instructions``: what the model was told to do (not the facts it may restate); a run of
        ``ECHO_WORDS`` of their words in the answer is ``echoed``. A clause of ``REPEAT_WORDS``
        words that the answer says twice (titles aside) is ``repeated``, and so is a title named
        again within ``DOUBLED_GAP_WORDS`` words ('"X" and "X"').
        """
        allowed_set = set(allowed)
        mentions = self.find_mentions(answer, allowed_set)
        near: list[TitleMention] = []
        invented = self.find_invented(answer, ignore, mentions, near=near, allowed=allowed_set)
        mentions = sorted(mentions + near, key=lambda m: m.start)
        unsupported = [m for m in mentions if not m.allowed]
        misattributed, history_spans = [], []
        if history is not None:
            seen = set(history)
            history_spans = [(m.start, m.end) for m in mentions if m.allowed and seen.intersection(m.item_ids)]
            misattributed = [
                m for m in mentions
                if m.allowed and not seen.intersection(m.item_ids) and _claims_watched(answer, m.start, self._claims)
            ]
        claims = []
        if facts is not None:
            spans = [(m.start, m.end) for m in mentions]
            for phrase in invented:  # an invented title's own "(2001)" is part of that claim
                start = answer.find(phrase)
                if start >= 0:
                    end = start + len(phrase)
                    end += len(answer[end:]) - len(answer[end:].lstrip("\"”’'*_"))
                    year = _YEAR.match(answer, end)
                    spans.append((start, year.end() if year else end))
            claims = unsupported_numbers(answer, facts, spans)
        titles_out = _blank_spans(answer, [(m.start, m.end) for m in mentions])
        return GroundingCheck(mentions=mentions, unsupported=unsupported, invented=invented,
                              misattributed=misattributed, unsupported_claims=claims,
                              echoed=echoed_runs(titles_out, instructions),
                              repeated=repeated_runs(titles_out) + doubled_titles(answer, mentions),
                              first_person=first_person_claims(titles_out, self.domain),
                              meta_talk=meta_talk(titles_out), wrong_domain=wrong_domain_words(titles_out, self.domain),
                              swapped=swapped_roles(answer, titles_out, history_spans))


_COUNT_VERBS = frozenset({"is", "are", "was", "were", "of"})
ECHO_WORDS = 8  # a run this long copied from the instructions is parroting, not an answer
REPEAT_WORDS = 6  # a clause this long said twice is filler
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _blank_spans(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """The text with the given spans (title mentions) replaced by a separator."""
    out, last = [], 0
    for start, end in sorted(spans):
        if start >= last:
            out += [text[last:start], " | "]
            last = end
    return "".join(out) + text[last:]


def _runs(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def echoed_runs(answer: str, instructions: Iterable[str], n: int = ECHO_WORDS) -> list[str]:
    """Runs of ``n`` words of the answer that stand word for word in one of the instructions."""
    told = {run for text in instructions for run in _runs(_words(text), n)}
    found = [" ".join(run) for run in _runs(_words(answer), n) if run in told]
    return _merged(found)


def repeated_runs(answer: str, n: int = REPEAT_WORDS) -> list[str]:
    """Runs of ``n`` words the answer says more than once (separators such as titles break runs)."""
    seen: set[tuple[str, ...]] = set()
    found = []
    for part in answer.split(" | "):
        for run in _runs(_words(part), n):
            if run in seen and " ".join(run) not in found:
                found.append(" ".join(run))
            seen.add(run)
    return _merged(found)


DOUBLED_GAP_WORDS = 2


def doubled_titles(answer: str, mentions: Sequence[TitleMention], gap: int = DOUBLED_GAP_WORDS) -> list[str]:
    """Titles named twice in a row, a few words apart ('"X" and "X" are two movies')."""
    found: list[str] = []
    for before, after in zip(mentions, mentions[1:]):
        between = answer[before.end:after.start]
        if set(before.item_ids) & set(after.item_ids) and len(_words(between)) <= gap:
            text = f"{after.text} (named twice)"
            if text not in found:
                found.append(text)
    return found


def _merged(runs: list[str]) -> list[str]:
    """At most three runs, overlapping ones reported once."""
    out: list[str] = []
    for run in runs:
        if not any(run[: len(run) // 2] in kept for kept in out):
            out.append(run)
    return out[:3]


def _claim_pattern(verbs: Iterable[str]) -> re.Pattern[str]:
    """"you (have|already|...) <verb>" for the domain's consumption verbs ("watched", "bought", "listened to")."""
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in v.split()) for v in verbs)
    return re.compile(
        r"\b(?:you|i|the user|they|he|she)(?:'ve|\s+have|\s+had|\s+already|\s+also|\s+just|\s+recently|\s+both)*"
        rf"\s+(?:{alternatives})\b",
        re.IGNORECASE,
    )


def unsupported_numbers(answer: str, facts: str, spans: Iterable[tuple[int, int]] = ()) -> list[str]:
    """Numbers (and years) in ``answer`` that ``facts`` does not contain, outside the given
    (start, end) spans (titles); a list marker ("1." opening a line) is not a claim."""
    known = {m.group(0).replace(",", "") for m in _NUMBER.finditer(facts)}
    spans = list(spans)
    out: list[str] = []
    for match in _NUMBER.finditer(answer):
        start, end = match.span()
        if any(s <= start and end <= e for s, e in spans):
            continue
        line_start = answer.rfind("\n", 0, start) + 1
        if not answer[line_start:start].strip() and re.match(r"[.)]\s", answer[end : end + 2]):
            continue  # "1. ..." opening a line: a list marker
        value = match.group(0).replace(",", "")
        if value not in known and match.group(0) not in out:
            out.append(match.group(0))
    return out
_CLAUSE_BREAK = re.compile(
    r"[.!?;\n]|\b(?:so|recommend\w*|suggest\w*|because|but|which|that|led|leads?|therefore|thus|why|might"
    r"|may|will|would)\b",
    re.IGNORECASE,
)


def _claims_watched(text: str, start: int, pattern: re.Pattern[str]) -> bool:
    """Whether the clause leading up to ``start`` says someone consumed what follows."""
    before = text[max(0, start - 160) : start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    clause = before[breaks[-1].end() :] if breaks else before
    return bool(pattern.search(clause))


def _capitalised_runs(text: str, toks: list[tuple[str, int, int]]) -> list[tuple[int, int, str]]:
    """Runs of 2+ capitalised words (joiners like "of the" inside allowed) within one clause;
    a sentence's first word only counts when the word after it is capitalised too."""
    out: list[tuple[int, int, str]] = []
    n = 0
    while n < len(toks):
        word = text[toks[n][1] : toks[n][2]]
        if not (word[:1].isupper() or word[:1].isdigit()) or toks[n][0] in JOINERS:
            n += 1
            continue
        if toks[n][0] in ("i", "you"):
            n += 1
            continue
        if _SENTENCE_END.search(text[: toks[n][1]]):
            # "Because ...": a capital that opens a sentence says nothing unless the next word has one too
            nxt = text[toks[n + 1][1] : toks[n + 1][2]] if n + 1 < len(toks) else ""
            if not (nxt[:1].isupper() or nxt[:1].isdigit()) or toks[n + 1][0] in JOINERS | {"i"}:
                n += 1
                continue
        last, m = n, n + 1
        while m < len(toks) and m - n < MAX_TITLE_TOKENS:
            gap = text[toks[m - 1][2] : toks[m][1]]
            if gap.strip(" :'’-–&") or "\n" in gap:
                break
            nxt = text[toks[m][1] : toks[m][2]]
            if toks[m][0] == "i":
                break  # the pronoun "I" ends a run: "So I recommend"
            if nxt[:1].isupper() or nxt[:1].isdigit():
                last = m
            elif toks[m][0] not in JOINERS:
                break
            m += 1
        capitals = sum(
            1 for k in range(n, last + 1)
            if text[toks[k][1]:toks[k][2]][:1].isupper() and toks[k][0] not in JOINERS
        )
        if capitals >= 2:
            out.append((toks[n][1], toks[last][2], text[toks[n][1] : toks[last][2]]))
        n = last + 1
    return out


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
