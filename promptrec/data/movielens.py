"""MovieLens loaders: RecBole atomic files and GroupLens' own ML-100K and ML-1M layouts."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from promptrec.data.records import items_from_rows, split_title_year, validated_interactions
from promptrec.data.schema import Dataset, Item, LoadReport
from promptrec.data.text_tables import RowGuard, delimited_table, describe_count, read_text, split_lines
from promptrec.errors import DataError

__all__ = ["ML100K_GENRES", "load_atomic", "load_ml100k", "load_ml1m", "load_movielens"]


# The 19 genre flags of ML-100K's u.item, in order (u.genre lists them when present).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


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
    guard = RowGuard(path, skip, report)
    table = delimited_table(
        path, read_text(path, report), "\t", None, guard, typed_header=True, required=("item_id",)
    )
    types = table.types
    title = _first_present(types, "movie_title", "title", "name")
    year = _first_present(types, "release_year", "year")
    genres = _first_present(types, "class", "genre", "genres")
    text_fields = [c for c in types if c not in ("item_id", title, year, genres)]
    lenient = year is not None and not types[year].startswith("float")
    return items_from_rows(
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
    guard = RowGuard(path, skip, report)
    table = delimited_table(
        path, read_text(path, report), "\t", None, guard, typed_header=True, required=("user_id", "item_id")
    )
    types = table.types
    return validated_interactions(
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
    guard = RowGuard(item_path, skip_bad_rows, report)
    columns = ["item_id", "title", "release_date", "video_release_date", "url", *genre_names]
    table = delimited_table(item_path, read_text(item_path, report), "|", columns, guard)
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
    for number, line in enumerate(split_lines(read_text(path, report)), start=1):
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
    guard = RowGuard(movies, skip_bad_rows, report)
    records: list[tuple[int, dict[str, object]]] = []
    for number, line in enumerate(split_lines(read_text(movies, report)), start=1):
        if not line.strip():
            continue
        # The title sits between the first and the last "::", so a title holding "::" still parses.
        head, sep1, rest = line.partition("::")
        title, sep2, genres = rest.rpartition("::")
        if not (sep1 and sep2):
            field, reason = describe_count(["item_id", "title", "genres"], line.count("::") + 1, "::")
            guard.row(number, field, reason)
            continue
        records.append((number, {"item_id": head, "title": title, "genres": genres}))
    items = items_from_rows(
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
    guard = RowGuard(path, skip_bad_rows, report)
    table = delimited_table(path, read_text(path, report), sep, ["user_id", "item_id", "rating", "timestamp"], guard)
    return validated_interactions(
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
