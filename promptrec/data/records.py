"""Typed records from string tables: id, number and timestamp columns validated in bulk into
the interaction frame, and catalog rows into `Item`s. A bad value is a malformed row, raised or
recorded by the table's `RowGuard` with its line and field."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec.data.schema import INTERACTION_COLUMNS, Item, LoadReport
from promptrec.data.text_tables import RowGuard, TextTable, json_value_str

YEAR_RANGE = (1, 9999)  # the years a title shows as "Title (1995)": four digits at most
#: Epoch timestamps outside these years are no dates of interactions; milliseconds read as seconds
#: land near the year 50,000 (a log that mixes the two would sort them last).
TIMESTAMP_YEARS = (1900, 2200)
_TITLE_YEAR = re.compile(r"^(?P<title>.*\S)\s*\((?P<year>\d{4})\)\s*$")


def split_title_year(text: str) -> tuple[str, int | None]:
    """"Toy Story (1995)" -> ("Toy Story", 1995); a title without a trailing year keeps it None."""
    text = text.strip()
    match = _TITLE_YEAR.match(text)
    if match is None:
        return text, None
    return match.group("title").strip(), int(match.group("year"))


class _Checks:
    """Per-column validity masks over one table, applied together: each bad row is reported
    once, for its first failing field, and rows are removed in one step."""

    def __init__(self, table: TextTable):
        self.table = table
        self.checks: list[tuple[str, np.ndarray, Callable[[int], str]]] = []

    def add(self, field: str, bad: np.ndarray, reason: Callable[[int], str]) -> None:
        if bad.any():
            self.checks.append((field, bad, reason))

    def apply(self, guard: RowGuard) -> np.ndarray:
        """Raise for (or record) the bad rows; the mask of rows to keep."""
        keep = np.ones(len(self.table), dtype=bool)
        if not self.checks:
            return keep
        lines = self.table.lines
        for _, bad, _ in self.checks:
            keep &= ~bad
        index = np.flatnonzero(~keep)
        index = index[np.argsort(lines[index], kind="stable")]
        for i in index:
            field, _, reason = next(c for c in self.checks if c[1][i])
            guard.row(int(lines[i]), field, reason(int(i)))  # raises unless skipping
        return keep


def _factorized(table: TextTable, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, stripped unique values) of a string column: the checks work on the distinct
    values only (thousands of ids or ratings rather than a million rows)."""
    codes, uniques = pd.factorize(table.frame[column].to_numpy(dtype=object), use_na_sentinel=False)
    stripped = np.array([str(u).strip() for u in uniques], dtype=object)
    return codes, stripped


def _id_values(table: TextTable, column: str, checks: _Checks, what: str) -> np.ndarray:
    """A stripped id column; empty ids are bad rows."""
    codes, uniques = _factorized(table, column)
    values = uniques[codes]
    checks.add(column, (uniques == "")[codes], lambda i: f"missing {what}")
    return values


def _number_values(table: TextTable, column: str, checks: _Checks, *, required: bool, what: str) -> np.ndarray:
    """Floats from a string column; empty means NaN (a bad row when required)."""
    codes, uniques = _factorized(table, column)
    numbers = np.array(pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce"), dtype=float)
    empty_u = uniques == ""
    bad_u = ~np.isfinite(numbers) & ~empty_u
    if required:
        bad_u |= empty_u
    numbers[empty_u] = np.nan
    checks.add(
        column,
        bad_u[codes],
        lambda i: f"missing {what}" if empty_u[codes[i]] else f"{what} {uniques[codes[i]]!r} is not a number",
    )
    return numbers[codes]


_EPOCH = pd.Timestamp(0, tz="UTC")


def _to_epoch(raw: pd.Series, timestamp_format: str | None) -> np.ndarray:
    """Epoch seconds (float, NaN where unparseable) from timestamp strings."""
    if timestamp_format in (None, "epoch", "epoch_ms"):
        values = np.array(pd.to_numeric(raw, errors="coerce"), dtype=float)
        values[~np.isfinite(values)] = np.nan
        if timestamp_format == "epoch_ms":
            values = values / 1000.0
        if timestamp_format is not None:
            return values
        todo = np.isnan(values) & (raw != "").to_numpy()
        if todo.any():  # auto: what is not a number is read as ISO-8601
            values[todo] = _to_epoch(raw[todo], "iso8601")
        return values
    if timestamp_format.lower() in ("iso8601", "iso-8601", "iso"):
        parsed = pd.to_datetime(raw, format="ISO8601", utc=True, errors="coerce")
    else:
        parsed = pd.to_datetime(raw, format=timestamp_format, utc=True, errors="coerce")
    return np.array(((parsed - _EPOCH) / pd.Timedelta(seconds=1)).to_numpy(dtype=float, na_value=np.nan))


def _timestamp_values(
    table: TextTable, column: str, checks: _Checks, *, required: bool, timestamp_format: str | None
) -> np.ndarray:
    codes, uniques = _factorized(table, column)
    values = _to_epoch(pd.Series(uniques, dtype=object), timestamp_format)
    empty_u = uniques == ""
    bad_u = np.isnan(values) & ~empty_u
    low, high = (float((pd.Timestamp(f"{y}-01-01", tz="UTC") - _EPOCH) / pd.Timedelta(seconds=1)) for y in TIMESTAMP_YEARS)
    implausible_u = ~np.isnan(values) & ((values < low) | (values >= high))
    bad_u |= implausible_u
    if required:
        bad_u |= empty_u
    expected = {
        None: "epoch seconds or an ISO-8601 date-time",
        "epoch": "epoch seconds",
        "epoch_ms": "epoch milliseconds",
    }.get(timestamp_format, f"a date-time in the format {timestamp_format!r}")
    checks.add(
        column,
        bad_u[codes],
        lambda i: "missing timestamp" if empty_u[codes[i]] else (
            f"timestamp {uniques[codes[i]]!r} is not between the years {TIMESTAMP_YEARS[0]} and {TIMESTAMP_YEARS[1]}"
            + (" (epoch milliseconds among seconds? set timestamp_format = \"epoch_ms\" for a log in milliseconds)"
               if timestamp_format in (None, "epoch") and values[codes[i]] >= high else "")
            if implausible_u[codes[i]] else f"timestamp {uniques[codes[i]]!r} is not {expected}"),
    )
    return values[codes]


def validated_interactions(
    table: TextTable,
    guard: RowGuard,
    *,
    user: str,
    item: str,
    rating: str | None,
    timestamp: str | None,
    behaviour: str | None = None,
    rating_required: bool = False,
    timestamp_required: bool = False,
    timestamp_format: str | None = None,
    known_items: set[str] | None = None,
    catalog_name: str = "the catalog",
) -> pd.DataFrame:
    """Validate a string table in bulk and build the interaction frame."""
    n = len(table)
    checks = _Checks(table)
    users = _id_values(table, user, checks, "user id")
    items = _id_values(table, item, checks, "item id")
    ratings = (
        _number_values(table, rating, checks, required=rating_required, what="rating")
        if rating is not None
        else np.full(n, np.nan)
    )
    times = (
        _timestamp_values(table, timestamp, checks, required=timestamp_required, timestamp_format=timestamp_format)
        if timestamp is not None
        else np.full(n, np.nan)
    )
    if behaviour is not None:
        codes, uniques = _factorized(table, behaviour)
        uniques[uniques == ""] = None
        behaviours = uniques[codes]
    else:
        behaviours = np.full(n, None, dtype=object)
    if known_items is not None:
        unknown = ~pd.Series(items).isin(known_items).to_numpy() & (items != "")
        checks.add(item, unknown, lambda i: f"item id {items[i]!r} is not in {catalog_name}")
    keep = checks.apply(guard)
    frame = pd.DataFrame(
        {
            "user_id": pd.Series(users, dtype=str),
            "item_id": pd.Series(items, dtype=str),
            "rating": ratings,
            "timestamp": times,
            "behaviour": pd.Series(behaviours, dtype=object),  # str or None
        },
        columns=list(INTERACTION_COLUMNS),
    )
    if not keep.all():
        frame = frame[keep].reset_index(drop=True)
    return frame


def warn_skipped(guard: RowGuard, report: LoadReport | None, path: Path) -> None:
    """Warn about skipped rows when the caller passed no report to hold them."""
    if report is None and guard.report.skipped:
        warnings.warn(f"{path}: {guard.report.summary()}", stacklevel=3)


def _genres_from(value: object, sep: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        parts = [json_value_str(v) for v in value]
    else:
        parts = str(value).split(sep) if sep else str(value).split()
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def _year_from(value: object) -> int | None:
    """An int year from "1995", "1995.0" or 1995; None when empty; ValueError otherwise."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if not text:
        return None
    try:
        number = float(text)
    except ValueError:
        raise ValueError("is not a whole number") from None
    if not number.is_integer():
        raise ValueError("is not a whole number")
    if not YEAR_RANGE[0] <= number <= YEAR_RANGE[1]:
        raise ValueError(f"is outside {YEAR_RANGE[0]}-{YEAR_RANGE[1]}")
    return int(number)


def items_from_rows(
    rows: Iterable[tuple[int, dict[str, object]]],
    guard: RowGuard,
    *,
    id_field: str,
    title_field: str | None,
    genres_field: str | None,
    year_field: str | None,
    text_fields: Sequence[str],
    genre_sep: str | None,
    lenient_year: bool = False,
    title_has_year: bool = False,
) -> list[Item]:
    """Items from (line, record) pairs; duplicate ids and bad fields are malformed rows."""
    items: dict[str, Item] = {}
    first_line: dict[str, int] = {}
    for line, record in rows:
        wrong = next((f for f in (id_field, title_field) if f and isinstance(record.get(f), (dict, list))), None)
        if wrong is not None:
            guard.row(line, wrong, f"{wrong} must be a string or a number, got a JSON {type(record[wrong]).__name__}")
            continue
        item_id = json_value_str(record.get(id_field)).strip()
        if not item_id:
            guard.row(line, id_field, "missing item id")
            continue
        if item_id in items:
            guard.row(line, id_field, f"duplicate item id {item_id!r} (first on line {first_line[item_id]})")
            continue
        title = json_value_str(record.get(title_field)).strip() if title_field else item_id
        if not title:
            guard.row(line, title_field, "missing title")
            continue
        year: int | None = None
        if title_has_year:
            title, year = split_title_year(title)
        if year_field is not None:
            try:
                year = _year_from(record.get(year_field)) or year
            except ValueError as exc:
                if not lenient_year:
                    guard.row(line, year_field, f"year {record.get(year_field)!r} {exc}")
                    continue
        attributes = {}
        for field in text_fields:
            value = json_value_str(record.get(field)).strip()
            if value:
                attributes[field] = value
        genres = _genres_from(record.get(genres_field), genre_sep) if genres_field else ()
        items[item_id] = Item(item_id=item_id, title=title, year=year, genres=genres, attributes=attributes)
        first_line[item_id] = line
    return list(items.values())
