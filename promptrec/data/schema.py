"""Typed records of the data layer: items, interactions, histories and splits."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptrec.config import TieRule

INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "behaviour")


class Item(BaseModel):
    """One catalog entry; `text()` is what the encoder embeds and prompts show."""

    model_config = ConfigDict(frozen=True)

    item_id: str = Field(min_length=1, pattern=r"\S")  # not blank
    title: str = Field(min_length=1, pattern=r"\S")
    year: int | None = None
    genres: tuple[str, ...] = ()
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("item_id", "title")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        return value

    def display_title(self) -> str:
        """Title with the year, e.g. "Toy Story (1995)"."""
        if self.year is not None and not self.title.endswith(f"({self.year})"):
            return f"{self.title} ({self.year})"
        return self.title

    def text(self) -> str:
        """"title (year) — genres; attribute: value …", the text the encoder embeds."""
        parts = [self.display_title()]
        if self.genres:
            parts.append(" — " + ", ".join(self.genres))
        if self.attributes:
            parts.append("; " + "; ".join(f"{k}: {v}" for k, v in sorted(self.attributes.items())))
        return "".join(parts)

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for the vector store, so that filters (e.g. a genre) pass through."""
        meta: dict[str, Any] = {"title": self.title}
        if self.year is not None:
            meta["year"] = self.year
        for genre in self.genres:
            meta[f"genre_{genre}"] = True
        if self.genres:
            meta["genres"] = "|".join(self.genres)
        for key, value in self.attributes.items():
            meta[f"attr_{key}"] = value
        return meta


def items_for_domain(items: "list[Item]", has_year: bool) -> "list[Item]":
    """The items as a domain shows them: without years when the domain has none (`Domain.has_year`)."""
    if has_year:
        return list(items)
    return [it.model_copy(update={"year": None}) if it.year is not None else it for it in items]


class Interaction(BaseModel):
    """One user-item event: a rating, or a behaviour such as "click" or "purchase"."""

    model_config = ConfigDict(frozen=True)

    user_id: str = Field(min_length=1)
    item_id: str = Field(min_length=1)
    rating: float | None = None
    timestamp: float | None = None
    behaviour: str | None = None


def interactions_frame(records: "list[Interaction] | pd.DataFrame") -> pd.DataFrame:
    """A checked interaction frame (columns INTERACTION_COLUMNS) from records or a data frame."""
    if isinstance(records, pd.DataFrame):
        missing = {"user_id", "item_id"} - set(records.columns)
        if missing:
            from promptrec.errors import InputError

            raise InputError(f"interaction frame lacks column(s) {sorted(missing)}: pass user_id and item_id columns")
        frame = records.copy()
    else:
        frame = pd.DataFrame([r.model_dump() for r in records], columns=list(INTERACTION_COLUMNS))
    for column in INTERACTION_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame = frame[list(INTERACTION_COLUMNS)]
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    for column in ("rating", "timestamp"):
        try:
            frame[column] = pd.to_numeric(frame[column], errors="raise").astype(float)
        except (TypeError, ValueError) as exc:
            from promptrec.errors import InputError

            raise InputError(f"interaction column {column!r} must be numeric (or empty): {exc}") from None
    return frame.reset_index(drop=True)


class SkippedRow(BaseModel):
    """One input row a loader left out because it was malformed (only with skip_bad_rows=True)."""

    model_config = ConfigDict(frozen=True)

    path: str
    line: int | None = None  # 1-based, as in the file
    field: str | None = None
    reason: str

    def __str__(self) -> str:
        where = ", ".join(
            part
            for part in (
                self.path,
                f"line {self.line}" if self.line is not None else None,
                f"field {self.field!r}" if self.field is not None else None,
            )
            if part
        )
        return f"{where}: {self.reason}"


class LoadReport(BaseModel):
    """What a loader read: every skipped row with its reason, and the encoding of each file."""

    skipped: list[SkippedRow] = Field(default_factory=list)
    encodings: dict[str, str] = Field(default_factory=dict)  # file -> "utf-8" or "latin-1"

    @property
    def skipped_rows(self) -> int:
        return len(self.skipped)

    def reasons(self) -> dict[str, int]:
        """How many rows were skipped per (file, field)."""
        counts: dict[str, int] = {}
        for row in self.skipped:
            key = f"{row.path} [{row.field or 'row'}]"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def summary(self) -> str:
        if not self.skipped:
            return "no rows skipped"
        parts = ", ".join(f"{key}: {count}" for key, count in sorted(self.reasons().items()))
        return f"{self.skipped_rows} row(s) skipped ({parts}); first: {self.skipped[0]}"


class Dataset(BaseModel):
    """A catalog and its interaction log, as loaded (before any split)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    items: list[Item]
    interactions: pd.DataFrame  # columns INTERACTION_COLUMNS
    report: LoadReport = Field(default_factory=LoadReport)  # rows skipped while loading, encodings

    def catalog(self) -> dict[str, Item]:
        return {item.item_id: item for item in self.items}


class TemporalSplit(BaseModel):
    """Temporal leave-one-out. Each user's interactions are sorted by timestamp, same-timestamp
    ties by the tie rule (`promptrec.data.preprocess`; "id": item id, LlamaRec's order; "hash":
    a seeded hash of (timestamp, user, item)). Ties are common: 44% of MovieLens-100K users
    rated their last two films in the same second. The last one is the test row, the
    second-to-last the validation row, the rest train. Users with fewer than three
    interactions keep everything in train.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    train: pd.DataFrame
    validation: pd.DataFrame  # one row per evaluated user
    test: pd.DataFrame  # one row per evaluated user
    tie_rule: TieRule = "id"  # the tie rule the split was made with
    tie_seed: int = 0  # the "hash" rule's seed
    # How the held-out rows were chosen: "temporal" (the last two under the ordering rule) or
    # "random-holdout seed=N" (order-free data: no timestamps, or all equal).
    rule: str = "temporal"

    @property
    def ordered(self) -> bool:
        """Whether the histories have a time order (False for a random hold-out)."""
        return self.rule == "temporal"

    def history_for_validation(self) -> pd.DataFrame:
        """What is known before each user's validation item: train."""
        return self.train

    def history_for_test(self) -> pd.DataFrame:
        """What is known before each user's test item: train plus the validation row."""
        return pd.concat([self.train, self.validation], ignore_index=True)

    def validation_items(self) -> dict[str, str]:
        return dict(zip(self.validation["user_id"], self.validation["item_id"]))

    def test_items(self) -> dict[str, str]:
        return dict(zip(self.test["user_id"], self.test["item_id"]))
