"""The domain vocabulary: what a catalog holds and what users do with it, in the words every
prompt uses, and which preset each named data set takes. Ground floor: settings, data and the
prompts read it; it imports nothing of promptrec."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Domain(BaseModel):
    """The resolved domain words (see `DomainSettings`); templates see `template_vars()`."""

    model_config = ConfigDict(frozen=True)

    name: str = "generic"
    item: str = "item"
    items: str = "items"
    verb_past: str = "chose"
    verb_present: str = "choose"
    audience: str = "people"
    has_year: bool = False
    extra_verbs: list[str] = Field(default_factory=list)

    @property
    def a_item(self) -> str:
        """The noun with its indefinite article: "a movie", "an item"."""
        return ("an " if self.item[:1].lower() in "aeiou" else "a ") + self.item

    def consumption_verbs(self) -> list[str]:
        """Every verb that says a user consumed an item, longest first."""
        verbs = {self.verb_past, *self.extra_verbs, "liked", "loved", "enjoyed", "rated"}
        return sorted({v for v in verbs if v}, key=lambda v: (-len(v), v))

    def template_vars(self) -> dict:
        """What templates see as ``domain``: the fields, ``a_item`` and ``Item`` (capitalised)."""
        out = self.model_dump()
        out.update(a_item=self.a_item, Item=self.item[:1].upper() + self.item[1:],
                   Items=self.items[:1].upper() + self.items[1:])
        return out


DOMAIN_PRESETS: dict[str, Domain] = {
    "generic": Domain(),
    "movies": Domain(name="movies", item="movie", items="movies", verb_past="watched", verb_present="watch",
                     audience="viewers", has_year=True, extra_verbs=["saw", "seen", "viewed"]),
    # Book-Crossing's years are those of the edition rated, not of the book: no years shown.
    "books": Domain(name="books", item="book", items="books", verb_past="read", verb_present="read",
                    audience="readers", has_year=False, extra_verbs=["finished", "bought"]),
    "shop": Domain(name="shop", item="product", items="products", verb_past="bought", verb_present="buy",
                   audience="shoppers", has_year=False, extra_verbs=["purchased", "ordered", "got"]),
    "news": Domain(name="news", item="article", items="articles", verb_past="read", verb_present="read",
                   audience="readers", has_year=False, extra_verbs=["clicked", "opened", "viewed"]),
    "music": Domain(name="music", item="track", items="tracks", verb_past="listened to",
                    verb_present="listen to", audience="listeners", has_year=False,
                    extra_verbs=["heard", "played", "streamed"]),
}


#: The domain preset of each named data set (`promptrec.data.named` reads these data sets).
DATASET_DOMAINS: dict[str, str] = {"movielens-100k": "movies", "movielens-1m": "movies", "book-crossing": "books"}


def domain_preset_of(name: str) -> str:
    """The domain preset a named data set uses ("generic" for an unknown name)."""
    return DATASET_DOMAINS.get(name.strip().lower(), "generic")
