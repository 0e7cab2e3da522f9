"""The generic loaders: a catalog or an interaction log from any CSV, TSV or JSON-lines file.

The named data sets have their own modules (`movielens`, `bookcrossing`) and return a
`Dataset` (name, items, interaction frame, load report); these return a list of `Item` and an
interaction frame with the columns
`INTERACTION_COLUMNS` (user_id and item_id as str, rating and timestamp as float, NaN where
unknown, behaviour as str or None).

Malformed input raises `DataError` naming the file, the 1-based line number as in the file,
and the field. With ``skip_bad_rows=True`` malformed rows are left out instead, and each one
is recorded as a `SkippedRow` in a `LoadReport`: `Dataset.report` for the data-set loaders,
the ``report=`` argument for `load_catalog` and `load_interactions` (without one, a warning
says how many rows were skipped). Nothing is dropped silently; only blank lines are ignored.

Files are read as UTF-8 (a BOM is allowed) and, when that fails, as latin-1; the report
records which encoding each file was read with.

Large files are parsed in bulk (pandas), validated column by column, and line numbers are
only worked out for the rows that fail, so MovieLens-1M (1M ratings) loads in seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from promptrec.data.records import items_from_rows, validated_interactions, warn_skipped
from promptrec.data.schema import Item, LoadReport
from promptrec.data.text_tables import RowGuard, file_kind, generic_table, jsonl_records, read_text

__all__ = ["load_catalog", "load_interactions"]


def load_interactions(
    path: str | Path,
    user_field: str = "user_id",
    item_field: str = "item_id",
    rating_field: str | None = None,
    timestamp_field: str | None = None,
    behaviour_field: str | None = None,
    timestamp_format: str | None = None,
    *,
    delimiter: str | None = None,
    known_items: Iterable[Item | str] | None = None,
    skip_bad_rows: bool = False,
    report: LoadReport | None = None,
) -> pd.DataFrame:
    """An interaction log from a CSV, TSV or JSON-lines file (format by suffix: .csv, .tsv,
    .jsonl/.ndjson), as a frame with the columns INTERACTION_COLUMNS.

    CSV files have a header line and may quote fields; TSV files have a header and no quoting.
    Timestamps (`timestamp_format`): None reads numbers as epoch seconds and anything else as
    ISO-8601 (naive times are UTC); "epoch", "epoch_ms", "iso8601", or a strptime pattern such
    as "%d/%m/%Y %H:%M". An empty rating or timestamp is NaN; a behaviour ("click",
    "purchase") is kept as a string. Ids are strings, stripped of surrounding blanks.

    `known_items` (items or item ids): interactions with another item are malformed rows.
    Malformed rows raise DataError (file, line, field); with `skip_bad_rows` they are left
    out and recorded in `report` (a warning says how many when no report is given).
    """
    path = Path(path)
    own = report if report is not None else LoadReport()
    guard = RowGuard(path, skip_bad_rows, own)
    kind, sep = file_kind(path, delimiter)
    text = read_text(path, own)
    fields = [f for f in (user_field, item_field, rating_field, timestamp_field, behaviour_field) if f]
    table = generic_table(path, text, kind, sep, fields, guard)
    known = None
    if known_items is not None:
        known = {i.item_id if isinstance(i, Item) else str(i).strip() for i in known_items}
    frame = validated_interactions(
        table,
        guard,
        user=user_field,
        item=item_field,
        rating=rating_field,
        timestamp=timestamp_field,
        behaviour=behaviour_field,
        timestamp_format=timestamp_format,
        known_items=known,
    )
    warn_skipped(guard, report, path)
    return frame


def load_catalog(
    path: str | Path,
    id_field: str = "item_id",
    title_field: str = "title",
    text_fields: Sequence[str] = (),
    genres_field: str | None = None,
    year_field: str | None = None,
    genre_sep: str = "|",
    *,
    delimiter: str | None = None,
    skip_bad_rows: bool = False,
    report: LoadReport | None = None,
) -> list[Item]:
    """A catalog from a CSV, TSV or JSON-lines file (format by suffix), one item a row.

    `text_fields` become the item's attributes (shown in prompts and embedded with the title);
    `genres_field` is split on `genre_sep` (a JSON list is taken as is); `year_field` must hold
    a whole number. A missing id or title, a duplicate id, or a bad year is a malformed row:
    DataError (file, line, field), or left out and recorded with `skip_bad_rows`.
    """
    path = Path(path)
    own = report if report is not None else LoadReport()
    guard = RowGuard(path, skip_bad_rows, own)
    kind, sep = file_kind(path, delimiter)
    text = read_text(path, own)
    fields = [f for f in (id_field, title_field, genres_field, year_field, *text_fields) if f]
    if kind == "jsonl":
        records, numbers = jsonl_records(path, text, guard)
        rows: Iterable[tuple[int, dict[str, object]]] = zip(numbers, records)
    else:
        table = generic_table(path, text, kind, sep, fields, guard)
        rows = zip(table.lines.tolist(), table.frame.to_dict("records"))
    items = items_from_rows(
        rows,
        guard,
        id_field=id_field,
        title_field=title_field,
        genres_field=genres_field,
        year_field=year_field,
        text_fields=tuple(text_fields),
        genre_sep=genre_sep,
    )
    warn_skipped(guard, report, path)
    return items
