"""Reading data files into string tables: UTF-8 (BOM allowed) or latin-1 text, unquoted
delimited files parsed in bulk, quoted CSV and JSON lines record by record, every row with its
1-based line number in the file so that errors can name it. Nothing here interprets a value:
that is `records`' job."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from promptrec.data.schema import LoadReport, SkippedRow
from promptrec.errors import DataError

try:  # faster JSON lines when available (chromadb depends on it); json otherwise
    import orjson as _orjson

    _json_loads: Callable[[str], object] = _orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (_orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover
    _json_loads = json.loads
    _JSON_ERRORS = (ValueError,)


def read_text(path: Path, report: LoadReport) -> str:
    """The file's text: UTF-8 (BOM allowed), else latin-1; newlines normalised to "\\n"."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=str(path)) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a file", path=str(path)) from None
    text, encoding = _decode(data, path)
    report.encodings[str(path)] = encoding
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _decode(data: bytes, path: Path) -> tuple[str, str]:
    """UTF-16 with a byte-order mark, UTF-8, or (no line being UTF-8 beyond ASCII) latin-1. A file
    that mixes UTF-8 lines with other bytes is refused, naming the first bad line: decoding it all
    as latin-1 would turn every UTF-8 title into mojibake."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    if b"\x00" in data[:4096]:
        raise DataError("holds NUL bytes: UTF-16 or UTF-32 without a byte-order mark, or not a text file; "
                        "save it as UTF-8", path=str(path))
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        bad_line = data.count(b"\n", 0, exc.start) + 1
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.isascii():
                continue
            with contextlib.suppress(UnicodeDecodeError):
                raw.decode("utf-8")
                raise DataError(
                    f"mixes text encodings: line {number} is UTF-8 but byte 0x{data[exc.start]:02x} on line "
                    f"{bad_line} is not; save the whole file as UTF-8", path=str(path), line=bad_line,
                ) from None
        return data.decode("latin-1"), "latin-1"


class RowGuard:
    """Raises a DataError for the first bad row, or records bad rows as skipped."""

    def __init__(self, path: Path, skip: bool, report: LoadReport):
        self.path, self.skip, self.report = str(path), skip, report

    def row(self, line: int | None, field: str | None, reason: str) -> None:
        if not self.skip:
            raise DataError(reason, path=self.path, line=line, field=field)
        self.report.skipped.append(SkippedRow(path=self.path, line=line, field=field, reason=reason))


class TextTable:
    """String columns of one file, with each row's 1-based line number in the file."""

    def __init__(self, path: Path, frame: pd.DataFrame, lines: np.ndarray, types: dict[str, str] | None = None):
        self.path = path
        self.types = types or {}  # RecBole atomic header types: {"rating": "float", ...}
        self.frame = frame.reset_index(drop=True)
        self.lines = np.asarray(lines, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.frame)


def split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _separator_counts(text: str, lines: list[str], sep: str) -> np.ndarray:
    """How many times `sep` occurs on each line (`lines` is `split_lines(text)`). An ASCII
    one-character separator is counted over the encoded bytes in bulk (UTF-8 never puts an
    ASCII byte inside a multi-byte character); other separators line by line."""
    if len(sep) == 1 and sep.isascii() and sep != "\n" and lines:
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        starts = np.r_[0, np.flatnonzero(data == 10) + 1][: len(lines)]
        if starts[-1] < len(data):
            return np.add.reduceat(data == ord(sep), starts, dtype=np.int64)
    return np.fromiter((line.count(sep) for line in lines), dtype=np.int64, count=len(lines))


def describe_count(expected: Sequence[str], found: int, sep: str) -> tuple[str | None, str]:
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


def delimited_table(
    path: Path,
    text: str,
    sep: str,
    columns: Sequence[str] | None,
    guard: RowGuard,
    *,
    typed_header: bool = False,
    required: Sequence[str] = (),
) -> TextTable:
    """Parse unquoted delimited text (RecBole atomic, GroupLens, TSV). With `columns` None the
    first line is the header (which must hold the `required` fields); a `typed_header`
    (RecBole's "name:type") is split into names and `TextTable.types`. Rows with the wrong
    number of fields are rejected in bulk."""
    lines = split_lines(text)
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
            field, reason = describe_count(columns, int(counts[i]) + 1, sep)
            raise DataError(reason, path=str(path), line=int(numbers[i]), field=field)
        for i in index:
            field, reason = describe_count(columns, int(counts[i]) + 1, sep)
            guard.row(int(numbers[i]), field, reason)
    good = ~(wrong | blank)
    if not good.all():
        body = [line for line, ok in zip(body, good) if ok]
        numbers = numbers[good]
    if not body:
        return TextTable(path, pd.DataFrame({c: pd.Series([], dtype=object) for c in columns}), numbers, types)
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
    return TextTable(path, frame, numbers, types)


def _csv_table(path: Path, text: str, delimiter: str, guard: RowGuard, required: Sequence[str] = ()) -> TextTable:
    """Parse quoted CSV (RFC 4180). A record's line number is the line it starts on."""
    if '"' not in text:  # no quoting at all: the bulk parser is exact and much faster
        return delimited_table(path, text, delimiter, None, guard, required=required)
    records, numbers = _csv_records(path, text, delimiter)
    header_at = next((i for i, r in enumerate(records) if not _blank_record(r)), None)
    if header_at is None:
        raise DataError("the file is empty, expected a header line", path=str(path), line=1)
    header = [c.strip() for c in records[header_at]]
    _check_header(path, header, required)
    width = len(header)
    body, body_lines = records[header_at + 1 :], numbers[header_at + 1 :]
    if all(len(row) == width for row in body):  # the common case: no bad or blank records
        return TextTable(path, _records_frame(body, header), np.asarray(body_lines, dtype=np.int64))
    rows: list[list[str]] = []
    lines: list[int] = []
    for row, number in zip(body, body_lines):
        if len(row) != width:
            if _blank_record(row):
                continue
            field, reason = describe_count(header, len(row), delimiter)
            guard.row(number, field, reason)
            continue
        rows.append(row)
        lines.append(number)
    return TextTable(path, _records_frame(rows, header), np.asarray(lines, dtype=np.int64))


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


def json_value_str(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "|".join(json_value_str(v) for v in value)
    return str(value)


def jsonl_records(path: Path, text: str, guard: RowGuard) -> tuple[list[dict], list[int]]:
    records: list[dict] = []
    numbers: list[int] = []
    for number, line in enumerate(split_lines(text), start=1):
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


def file_kind(path: Path, delimiter: str | None) -> tuple[str, str]:
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


def _scalar_records(records: list[dict], numbers: list[int], fields: Sequence[str],
                    guard: RowGuard) -> tuple[list[dict], list[int]]:
    """The records whose named fields are JSON scalars: an object or a list where an id, rating
    or timestamp belongs is a bad row (its Python repr is no id)."""
    kept, lines = [], []
    for record, line in zip(records, numbers):
        wrong = next((f for f in fields if isinstance(record.get(f), (dict, list))), None)
        if wrong is None:
            kept.append(record)
            lines.append(line)
        else:
            guard.row(line, wrong, f"{wrong} must be a string or a number, got a JSON {type(record[wrong]).__name__}")
    return kept, lines


def generic_table(path: Path, text: str, kind: str, delimiter: str, fields: Sequence[str], guard: RowGuard) -> TextTable:
    """A string table with (at least) the named columns, from a CSV, TSV or JSONL file."""
    if kind == "jsonl":
        records, numbers = jsonl_records(path, text, guard)
        records, numbers = _scalar_records(records, numbers, fields, guard)
        frame = pd.DataFrame(
            {f: [json_value_str(r.get(f)) for r in records] for f in dict.fromkeys(fields)}, dtype=object
        )
        return TextTable(path, frame, np.asarray(numbers, dtype=np.int64))
    if kind == "csv":
        return _csv_table(path, text, delimiter, guard, required=fields)
    return delimited_table(path, text, delimiter, None, guard, required=fields)
