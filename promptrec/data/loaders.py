"""Loaders: MovieLens (RecBole atomic files and GroupLens' own layouts) and generic CSV/JSONL.

Every loader returns typed records: a `Dataset` (name, items, interaction frame, load report),
or, for the generic loaders, a list of `Item` and an interaction frame with the columns
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

import csv
import io
import json
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec.data.schema import INTERACTION_COLUMNS, Dataset, Item, LoadReport, SkippedRow, interactions_frame
from promptrec.errors import DataError

try:  # faster JSON lines when available (chromadb depends on it); json otherwise
    import orjson as _orjson

    _json_loads: Callable[[str], object] = _orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (_orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover
    _json_loads = json.loads
    _JSON_ERRORS = (ValueError,)

__all__ = [
    "ML100K_GENRES",
    "load_atomic",
    "load_bookcrossing",
    "load_catalog",
    "load_interactions",
    "load_ml100k",
    "load_ml1m",
    "load_movielens",
    "split_title_year",
]

# The 19 genre flags of ML-100K's u.item, in order (u.genre lists them when present).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

_TITLE_YEAR = re.compile(r"^(?P<title>.*\S)\s*\((?P<year>\d{4})\)\s*$")


def split_title_year(text: str) -> tuple[str, int | None]:
    """"Toy Story (1995)" -> ("Toy Story", 1995); a title without a trailing year keeps it None."""
    text = text.strip()
    match = _TITLE_YEAR.match(text)
    if match is None:
        return text, None
    return match.group("title").strip(), int(match.group("year"))


# --------------------------------------------------------------------------- reading files


def _read_text(path: Path, report: LoadReport) -> str:
    """The file's text: UTF-8 (BOM allowed), else latin-1; newlines normalised to "\\n"."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a file", path=str(path)) from None
    try:
        text, encoding = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"
    report.encodings[str(path)] = encoding
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


class _Guard:
    """Raises a DataError for the first bad row, or records bad rows as skipped."""

    def __init__(self, path: Path, skip: bool, report: LoadReport):
        self.path, self.skip, self.report = str(path), skip, report

    def row(self, line: int | None, field: str | None, reason: str) -> None:
        if not self.skip:
            raise DataError(reason, path=self.path, line=line, field=field)
        self.report.skipped.append(SkippedRow(path=self.path, line=line, field=field, reason=reason))


class _Table:
    """String columns of one file, with each row's 1-based line number in the file."""

    def __init__(self, path: Path, frame: pd.DataFrame, lines: np.ndarray, types: dict[str, str] | None = None):
        self.path = path
        self.types = types or {}  # RecBole atomic header types: {"rating": "float", ...}
        self.frame = frame.reset_index(drop=True)
        self.lines = np.asarray(lines, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.frame)


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _separator_counts(text: str, lines: list[str], sep: str) -> np.ndarray:
    """How many times `sep` occurs on each line (`lines` is `_split_lines(text)`). An ASCII
    one-character separator is counted over the encoded bytes in bulk (UTF-8 never puts an
    ASCII byte inside a multi-byte character); other separators line by line."""
    if len(sep) == 1 and sep.isascii() and sep != "\n" and lines:
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        starts = np.r_[0, np.flatnonzero(data == 10) + 1][: len(lines)]
        if starts[-1] < len(data):
            return np.add.reduceat(data == ord(sep), starts, dtype=np.int64)
    return np.fromiter((line.count(sep) for line in lines), dtype=np.int64, count=len(lines))


def _describe_count(expected: Sequence[str], found: int, sep: str) -> tuple[str | None, str]:
    """(field, reason) for a row with the wrong number of fields."""
    shown = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}.get(sep, repr(sep))
    reason = f"expected {len(expected)} {shown}-separated fields ({', '.join(expected)}), found {found}"
    field = expected[found] if found < len(expected) else None  # the first missing field
    return field, reason


def _check_header(path: Path, header: Sequence[str], required: Sequence[str]) -> None:
    """Each required field must be a column of the header, once."""
    for field in dict.fromkeys(required):
        count = list(header).count(field)
        if count != 1:
            problem = "column not found" if count == 0 else f"column appears {count} times"
            raise DataError(f"{problem}; the header has {list(header)}", path=str(path), line=1, field=field)


def _delimited_table(
    path: Path,
    text: str,
    sep: str,
    columns: Sequence[str] | None,
    guard: _Guard,
    *,
    typed_header: bool = False,
    required: Sequence[str] = (),
) -> _Table:
    """Parse unquoted delimited text (RecBole atomic, GroupLens, TSV). With `columns` None the
    first line is the header (which must hold the `required` fields); a `typed_header`
    (RecBole's "name:type") is split into names and `_Table.types`. Rows with the wrong
    number of fields are rejected in bulk."""
    lines = _split_lines(text)
    first = 0
    if columns is None:
        while first < len(lines) and not lines[first].strip():
            first += 1
        if first == len(lines):
            raise DataError("the file is empty, expected a header line", path=str(path), line=1)
        columns = [c.strip() for c in lines[first].split(sep)]
        first += 1
    columns = list(columns)
    types: dict[str, str] = {}
    if typed_header:
        for i, column in enumerate(columns):
            name, _, kind = column.partition(":")
            columns[i] = name.strip()
            types[columns[i]] = kind.strip() or "token"
    _check_header(path, columns, required)
    body = lines[first:]
    numbers = np.arange(first + 1, first + 1 + len(body), dtype=np.int64)
    counts = _separator_counts(text, lines, sep)[first:]
    blank = np.zeros(len(body), dtype=bool)
    for i in np.flatnonzero(counts == 0):  # only lines without a separator can be blank
        blank[i] = not body[i].strip()
    wrong = (counts != len(columns) - 1) & ~blank
    if wrong.any():
        index = np.flatnonzero(wrong)
        if not guard.skip:
            i = int(index[0])
            field, reason = _describe_count(columns, int(counts[i]) + 1, sep)
            raise DataError(reason, path=str(path), line=int(numbers[i]), field=field)
        for i in index:
            field, reason = _describe_count(columns, int(counts[i]) + 1, sep)
            guard.row(int(numbers[i]), field, reason)
    good = ~(wrong | blank)
    if not good.all():
        body = [line for line, ok in zip(body, good) if ok]
        numbers = numbers[good]
    if not body:
        return _Table(path, pd.DataFrame({c: pd.Series([], dtype=object) for c in columns}), numbers, types)
    single = sep if len(sep) == 1 else "\x1f"
    joined = "\n".join(body)
    if single != sep:
        joined = joined.replace(sep, single)
    frame = pd.read_csv(
        io.StringIO(joined),
        sep=single,
        header=None,
        names=range(len(columns)),
        dtype=object,
        quoting=csv.QUOTE_NONE,
        na_filter=False,
        skip_blank_lines=False,
        engine="c",
    )
    frame.columns = columns
    if len(frame) != len(body):  # pragma: no cover - guards the bulk parse
        raise DataError(f"parsed {len(frame)} rows from {len(body)} lines", path=str(path))
    return _Table(path, frame, numbers, types)


def _csv_table(path: Path, text: str, delimiter: str, guard: _Guard, required: Sequence[str] = ()) -> _Table:
    """Parse quoted CSV (RFC 4180). A record's line number is the line it starts on."""
    if '"' not in text:  # no quoting at all: the bulk parser is exact and much faster
        return _delimited_table(path, text, delimiter, None, guard, required=required)
    records, numbers = _csv_records(path, text, delimiter)
    header_at = next((i for i, r in enumerate(records) if not _blank_record(r)), None)
    if header_at is None:
        raise DataError("the file is empty, expected a header line", path=str(path), line=1)
    header = [c.strip() for c in records[header_at]]
    _check_header(path, header, required)
    width = len(header)
    body, body_lines = records[header_at + 1 :], numbers[header_at + 1 :]
    if all(len(row) == width for row in body):  # the common case: no bad or blank records
        return _Table(path, _records_frame(body, header), np.asarray(body_lines, dtype=np.int64))
    rows: list[list[str]] = []
    lines: list[int] = []
    for row, number in zip(body, body_lines):
        if len(row) != width:
            if _blank_record(row):
                continue
            field, reason = _describe_count(header, len(row), delimiter)
            guard.row(number, field, reason)
            continue
        rows.append(row)
        lines.append(number)
    return _Table(path, _records_frame(rows, header), np.asarray(lines, dtype=np.int64))


def _records_frame(rows: list[list[str]], header: list[str]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in header})
    return pd.DataFrame(rows, columns=header, dtype=object)


def _blank_record(row: list[str]) -> bool:
    return not row or (len(row) == 1 and not row[0].strip())


def _csv_records(path: Path, text: str, delimiter: str) -> tuple[list[list[str]], list[int]]:
    """All CSV records and the line each starts on. When no quoted field spans lines (the
    common case) record i is line i + 1 and the records are read in one go."""
    physical = text.count("\n") + (0 if text.endswith("\n") else 1)
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error:
        records = None  # read again record by record to find the line
    if records is not None and len(records) == physical:
        return records, list(range(1, len(records) + 1))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records, numbers = [], []
    previous = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # A broken quote swallows the rest of the file: nothing after it can be trusted.
            raise DataError(f"malformed CSV: {exc}", path=str(path), line=previous + 1) from None
        records.append(row)
        numbers.append(previous + 1)
        previous = reader.line_num
    return records, numbers


def _json_value_str(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "|".join(_json_value_str(v) for v in value)
    return str(value)


def _jsonl_records(path: Path, text: str, guard: _Guard) -> tuple[list[dict], list[int]]:
    records: list[dict] = []
    numbers: list[int] = []
    for number, line in enumerate(_split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = _json_loads(line)
        except _JSON_ERRORS as exc:
            guard.row(number, None, f"invalid JSON: {exc}")
            continue
        if not isinstance(record, dict):
            guard.row(number, None, f"expected a JSON object, found {type(record).__name__}")
            continue
        records.append(record)
        numbers.append(number)
    return records, numbers


def _file_kind(path: Path, delimiter: str | None) -> tuple[str, str]:
    """("csv" | "tsv" | "jsonl", delimiter) from the suffix."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zip"):
        raise DataError("compressed files are not read directly: decompress it first", path=str(path))
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl", ""
    if suffix == ".csv":
        return "csv", delimiter or ","
    if suffix in (".tsv", ".tab"):
        return "tsv", delimiter or "\t"
    raise DataError(
        f"unknown file type {suffix or '(no suffix)'!r}: use .csv, .tsv, .jsonl or .ndjson", path=str(path)
    )


def _generic_table(path: Path, text: str, kind: str, delimiter: str, fields: Sequence[str], guard: _Guard) -> _Table:
    """A string table with (at least) the named columns, from a CSV, TSV or JSONL file."""
    if kind == "jsonl":
        records, numbers = _jsonl_records(path, text, guard)
        frame = pd.DataFrame(
            {f: [_json_value_str(r.get(f)) for r in records] for f in dict.fromkeys(fields)}, dtype=object
        )
        return _Table(path, frame, np.asarray(numbers, dtype=np.int64))
    if kind == "csv":
        return _csv_table(path, text, delimiter, guard, required=fields)
    return _delimited_table(path, text, delimiter, None, guard, required=fields)


# --------------------------------------------------------------------------- column checks


class _Checks:
    """Per-column validity masks over one table, applied together: each bad row is reported
    once, for its first failing field, and rows are removed in one step."""

    def __init__(self, table: _Table):
        self.table = table
        self.checks: list[tuple[str, np.ndarray, Callable[[int], str]]] = []

    def add(self, field: str, bad: np.ndarray, reason: Callable[[int], str]) -> None:
        if bad.any():
            self.checks.append((field, bad, reason))

    def apply(self, guard: _Guard) -> np.ndarray:
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


def _factorized(table: _Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(codes, stripped unique values) of a string column: the checks work on the distinct
    values only (thousands of ids or ratings rather than a million rows)."""
    codes, uniques = pd.factorize(table.frame[column].to_numpy(dtype=object), use_na_sentinel=False)
    stripped = np.array([str(u).strip() for u in uniques], dtype=object)
    return codes, stripped


def _id_values(table: _Table, column: str, checks: _Checks, what: str) -> np.ndarray:
    """A stripped id column; empty ids are bad rows."""
    codes, uniques = _factorized(table, column)
    values = uniques[codes]
    checks.add(column, (uniques == "")[codes], lambda i: f"missing {what}")
    return values


def _number_values(table: _Table, column: str, checks: _Checks, *, required: bool, what: str) -> np.ndarray:
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
    table: _Table, column: str, checks: _Checks, *, required: bool, timestamp_format: str | None
) -> np.ndarray:
    codes, uniques = _factorized(table, column)
    values = _to_epoch(pd.Series(uniques, dtype=object), timestamp_format)
    empty_u = uniques == ""
    bad_u = np.isnan(values) & ~empty_u
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
        lambda i: "missing timestamp" if empty_u[codes[i]] else f"timestamp {uniques[codes[i]]!r} is not {expected}",
    )
    return values[codes]


def _interaction_frame(
    table: _Table,
    guard: _Guard,
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


def _finish(guard: _Guard, report: LoadReport | None, path: Path) -> None:
    """Warn about skipped rows when the caller passed no report to hold them."""
    if report is None and guard.report.skipped:
        warnings.warn(f"{path}: {guard.report.summary()}", stacklevel=3)


# --------------------------------------------------------------------------- generic files


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
    guard = _Guard(path, skip_bad_rows, own)
    kind, sep = _file_kind(path, delimiter)
    text = _read_text(path, own)
    fields = [f for f in (user_field, item_field, rating_field, timestamp_field, behaviour_field) if f]
    table = _generic_table(path, text, kind, sep, fields, guard)
    known = None
    if known_items is not None:
        known = {i.item_id if isinstance(i, Item) else str(i).strip() for i in known_items}
    frame = _interaction_frame(
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
    _finish(guard, report, path)
    return frame


def _genres_from(value: object, sep: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        parts = [_json_value_str(v) for v in value]
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
    number = float(text)
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


def _items_from_rows(
    rows: Iterable[tuple[int, dict[str, object]]],
    guard: _Guard,
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
        item_id = _json_value_str(record.get(id_field)).strip()
        if not item_id:
            guard.row(line, id_field, "missing item id")
            continue
        if item_id in items:
            guard.row(line, id_field, f"duplicate item id {item_id!r} (first on line {first_line[item_id]})")
            continue
        title = _json_value_str(record.get(title_field)).strip() if title_field else item_id
        if not title:
            guard.row(line, title_field, "missing title")
            continue
        year: int | None = None
        if title_has_year:
            title, year = split_title_year(title)
        if year_field is not None:
            try:
                year = _year_from(record.get(year_field)) or year
            except ValueError:
                if not lenient_year:
                    guard.row(line, year_field, f"year {record.get(year_field)!r} is not a whole number")
                    continue
        attributes = {}
        for field in text_fields:
            value = _json_value_str(record.get(field)).strip()
            if value:
                attributes[field] = value
        genres = _genres_from(record.get(genres_field), genre_sep) if genres_field else ()
        items[item_id] = Item(item_id=item_id, title=title, year=year, genres=genres, attributes=attributes)
        first_line[item_id] = line
    return list(items.values())


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
    guard = _Guard(path, skip_bad_rows, own)
    kind, sep = _file_kind(path, delimiter)
    text = _read_text(path, own)
    fields = [f for f in (id_field, title_field, genres_field, year_field, *text_fields) if f]
    if kind == "jsonl":
        records, numbers = _jsonl_records(path, text, guard)
        rows: Iterable[tuple[int, dict[str, object]]] = zip(numbers, records)
    else:
        table = _generic_table(path, text, kind, sep, fields, guard)
        rows = zip(table.lines.tolist(), table.frame.to_dict("records"))
    items = _items_from_rows(
        rows,
        guard,
        id_field=id_field,
        title_field=title_field,
        genres_field=genres_field,
        year_field=year_field,
        text_fields=tuple(text_fields),
        genre_sep=genre_sep,
    )
    _finish(guard, report, path)
    return items


# --------------------------------------------------------------------------- RecBole atomic files


def _first_present(types: dict[str, str], *names: str) -> str | None:
    return next((n for n in names if n in types), None)


def load_atomic(folder: str | Path, name: str, *, skip_bad_rows: bool = False) -> Dataset:
    """A RecBole atomic data set: `<folder>/<name>.inter` and `<folder>/<name>.item`.

    Tab-separated files whose header types each column (`user_id:token`, `rating:float`,
    `movie_title:token_seq`, ...). Interactions use user_id, item_id and, when present,
    rating and timestamp (and label/behaviour); items use item_id, a title column
    (movie_title, title or name; else the id), release_year or year (a non-number in a token
    column such as "unknown" is no year), class/genre/genres split on blanks, and every
    other column as an attribute.
    """
    folder = Path(folder)
    report = LoadReport()
    items = _load_atomic_items(folder / f"{name}.item", report, skip_bad_rows)
    frame = _load_atomic_inter(folder / f"{name}.inter", report, skip_bad_rows, items)
    return Dataset(name=name, items=items, interactions=frame, report=report)


def _load_atomic_items(path: Path, report: LoadReport, skip: bool) -> list[Item]:
    guard = _Guard(path, skip, report)
    table = _delimited_table(
        path, _read_text(path, report), "\t", None, guard, typed_header=True, required=("item_id",)
    )
    types = table.types
    title = _first_present(types, "movie_title", "title", "name")
    year = _first_present(types, "release_year", "year")
    genres = _first_present(types, "class", "genre", "genres")
    text_fields = [c for c in types if c not in ("item_id", title, year, genres)]
    lenient = year is not None and not types[year].startswith("float")
    return _items_from_rows(
        zip(table.lines.tolist(), table.frame.to_dict("records")),
        guard,
        id_field="item_id",
        title_field=title,
        genres_field=genres,
        year_field=year,
        text_fields=text_fields,
        genre_sep=None,  # token_seq: blank-separated
        lenient_year=lenient,
    )


def _load_atomic_inter(path: Path, report: LoadReport, skip: bool, items: list[Item]) -> pd.DataFrame:
    guard = _Guard(path, skip, report)
    table = _delimited_table(
        path, _read_text(path, report), "\t", None, guard, typed_header=True, required=("user_id", "item_id")
    )
    types = table.types
    return _interaction_frame(
        table,
        guard,
        user="user_id",
        item="item_id",
        rating=_first_present(types, "rating"),
        timestamp=_first_present(types, "timestamp"),
        behaviour=_first_present(types, "behaviour", "behavior"),
        known_items={i.item_id for i in items},
        catalog_name=f"{path.with_suffix('.item').name}",
    )


# --------------------------------------------------------------------------- GroupLens layouts


def load_ml100k(folder: str | Path, *, name: str = "ml-100k", skip_bad_rows: bool = False) -> Dataset:
    """MovieLens-100K as GroupLens ships it: `u.data` (tab: user, item, rating, timestamp) and
    `u.item` (pipe-separated, latin-1: id|title (year)|release date|video release date|URL|19
    genre flags). Genre names come from `u.genre` when present, else `ML100K_GENRES`. The year
    comes from the title, else from the release date."""
    folder = Path(folder)
    report = LoadReport()
    genre_names = list(ML100K_GENRES)
    genre_path = folder / "u.genre"
    if genre_path.is_file():
        genre_names = _read_u_genre(genre_path, report)
    item_path = folder / "u.item"
    guard = _Guard(item_path, skip_bad_rows, report)
    columns = ["item_id", "title", "release_date", "video_release_date", "url", *genre_names]
    table = _delimited_table(item_path, _read_text(item_path, report), "|", columns, guard)
    flags = table.frame[genre_names].to_numpy(dtype=object)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for row_number, (line, record) in enumerate(zip(table.lines.tolist(), table.frame.to_dict("records"))):
        item_id = str(record["item_id"]).strip()
        if not item_id:
            guard.row(line, "item_id", "missing item id")
            continue
        if item_id in seen:
            guard.row(line, "item_id", f"duplicate item id {item_id!r} (first on line {seen[item_id]})")
            continue
        bad_flag = next((g for g, v in zip(genre_names, flags[row_number]) if v.strip() not in ("0", "1")), None)
        if bad_flag is not None:
            guard.row(line, bad_flag, f"genre flag {record[bad_flag]!r} is not 0 or 1")
            continue
        title, year = split_title_year(str(record["title"]))
        if not title:
            guard.row(line, "title", "missing title")
            continue
        if year is None:
            match = re.search(r"(\d{4})\s*$", str(record["release_date"]))
            year = int(match.group(1)) if match else None
        genres = tuple(g for g, v in zip(genre_names, flags[row_number]) if v.strip() == "1")
        items.append(Item(item_id=item_id, title=title, year=year, genres=genres))
        seen[item_id] = line
    frame = _grouplens_ratings(folder / "u.data", "\t", set(seen), "u.item", skip_bad_rows, report)
    return Dataset(name=name, items=items, interactions=frame, report=report)


def _read_u_genre(path: Path, report: LoadReport) -> list[str]:
    """Genre names in flag order from u.genre ("Action|1" lines)."""
    pairs: list[tuple[int, str]] = []
    for number, line in enumerate(_split_lines(_read_text(path, report)), start=1):
        if not line.strip():
            continue
        name, sep, index = line.rpartition("|")
        if not sep or not index.strip().isdigit() or not name.strip():
            raise DataError(f"expected 'genre|index', found {line!r}", path=str(path), line=number)
        pairs.append((int(index), name.strip()))
    pairs.sort()
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise DataError("genre indexes must run 0, 1, 2, ... without gaps", path=str(path))
    return [n for _, n in pairs]


def load_ml1m(folder: str | Path, *, name: str = "ml-1m", skip_bad_rows: bool = False) -> Dataset:
    """MovieLens-1M as GroupLens ships it: `ratings.dat` (UserID::MovieID::Rating::Timestamp)
    and `movies.dat` (MovieID::Title (Year)::Genre|Genre, latin-1)."""
    folder = Path(folder)
    report = LoadReport()
    movies = folder / "movies.dat"
    guard = _Guard(movies, skip_bad_rows, report)
    records: list[tuple[int, dict[str, object]]] = []
    for number, line in enumerate(_split_lines(_read_text(movies, report)), start=1):
        if not line.strip():
            continue
        # The title sits between the first and the last "::", so a title holding "::" still parses.
        head, sep1, rest = line.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not (sep1 and sep2):
            field, reason = _describe_count(["item_id", "title", "genres"], line.count("::") + 1, "::")
            guard.row(number, field, reason)
            continue
        records.append((number, {"item_id": head, "title": title, "genres": genres}))
    items = _items_from_rows(
        records,
        guard,
        id_field="item_id",
        title_field="title",
        genres_field="genres",
        year_field=None,
        text_fields=(),
        genre_sep="|",
        title_has_year=True,
    )
    frame = _grouplens_ratings(
        folder / "ratings.dat", "::", {i.item_id for i in items}, "movies.dat", skip_bad_rows, report
    )
    return Dataset(name=name, items=items, interactions=frame, report=report)


def _grouplens_ratings(
    path: Path, sep: str, known_items: set[str], catalog_name: str, skip_bad_rows: bool, report: LoadReport
) -> pd.DataFrame:
    """A GroupLens ratings file (user, item, rating, epoch timestamp; all required)."""
    guard = _Guard(path, skip_bad_rows, report)
    table = _delimited_table(path, _read_text(path, report), sep, ["user_id", "item_id", "rating", "timestamp"], guard)
    return _interaction_frame(
        table,
        guard,
        user="user_id",
        item="item_id",
        rating="rating",
        timestamp="timestamp",
        rating_required=True,
        timestamp_required=True,
        timestamp_format="epoch",
        known_items=known_items,
        catalog_name=catalog_name,
    )


def load_movielens(folder: str | Path, *, name: str | None = None, skip_bad_rows: bool = False) -> Dataset:
    """Whichever MovieLens layout `folder` holds: RecBole atomic files (`ml-100k.inter`,
    `ml-1m.inter`, or a single other `*.inter` with its `.item`), GroupLens ML-100K (`u.data`)
    or GroupLens ML-1M (`ratings.dat`). `name` overrides the data set's name (by default the
    atomic file stem, or "ml-100k" / "ml-1m")."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("not a folder", path=str(folder))
    stems = [s for s in ("ml-100k", "ml-1m") if (folder / f"{s}.inter").is_file()]
    if not stems:
        stems = sorted(p.stem for p in folder.glob("*.inter") if (folder / f"{p.stem}.item").is_file())
    if len(stems) > 1:
        raise DataError(f"several atomic data sets here ({', '.join(stems)}): use load_atomic(folder, name)", path=str(folder))
    if stems:
        dataset = load_atomic(folder, stems[0], skip_bad_rows=skip_bad_rows)
    elif (folder / "u.data").is_file():
        dataset = load_ml100k(folder, skip_bad_rows=skip_bad_rows)
    elif (folder / "ratings.dat").is_file():
        dataset = load_ml1m(folder, skip_bad_rows=skip_bad_rows)
    else:
        raise DataError(
            "no MovieLens files found: expected <name>.inter + <name>.item (RecBole), "
            "u.data + u.item (ML-100K) or ratings.dat + movies.dat (ML-1M)",
            path=str(folder),
        )
    if name is not None:
        dataset = dataset.model_copy(update={"name": name})
    return dataset


# --------------------------------------------------------------------------- Book-Crossing

BX_BOOKS = "BX-Books.csv"
BX_RATINGS = "BX-Book-Ratings.csv"


def load_bookcrossing(folder: str | Path, *, name: str = "book-crossing") -> Dataset:
    """Book-Crossing (Ziegler et al. 2005) as shipped in `BX-Books.csv` and `BX-Book-Ratings.csv`
    (`;`-separated, quoted, latin-1, backslash escapes). Items are ISBNs titled by the book
    title, with the author and publisher as attributes and the publication year (that of the
    edition rated); ratings are 1-10 (explicit) or 0 (implicit: the user holds the book); there
    are no timestamps. Ratings of ISBNs missing from the books file are left out."""
    import html

    folder = Path(folder)
    for file in (BX_BOOKS, BX_RATINGS):
        if not (folder / file).is_file():
            raise DataError(f"no {file} here: not a Book-Crossing folder", path=str(folder))
    read = dict(sep=";", encoding="latin-1", escapechar="\\", dtype=str, keep_default_na=False,
                on_bad_lines="skip")
    books = pd.read_csv(folder / BX_BOOKS, usecols=["ISBN", "Book-Title", "Book-Author",
                                                    "Year-Of-Publication", "Publisher"], **read)
    items: dict[str, Item] = {}
    for isbn, title, author, year, publisher in books.itertuples(index=False, name=None):
        isbn, title = isbn.strip(), html.unescape(title).strip()
        if not isbn or not title or isbn in items:
            continue
        attributes = {k: html.unescape(v).strip() for k, v in (("author", author), ("publisher", publisher))
                      if v and v.strip()}
        number = int(year) if year.strip().isdigit() else 0
        items[isbn] = Item(item_id=isbn, title=title, year=number if 1000 <= number <= 2030 else None,
                           attributes=attributes)
    ratings = pd.read_csv(folder / BX_RATINGS, **read)
    ratings.columns = ["user_id", "item_id", "rating"]
    ratings["user_id"] = ratings["user_id"].str.strip()
    ratings["item_id"] = ratings["item_id"].str.strip()
    ratings = ratings[ratings["item_id"].isin(items.keys())]
    frame = interactions_frame(ratings.assign(rating=pd.to_numeric(ratings["rating"], errors="coerce")))
    return Dataset(name=name, items=list(items.values()), interactions=frame)
