"""Loaders over small hand-made files (every layout, malformed rows, skip mode) and the real
MovieLens-100K from its wheel on PyPI."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from promptrec.data import (
    INTERACTION_COLUMNS,
    Item,
    LoadReport,
    load_atomic,
    load_bookcrossing,
    load_catalog,
    load_interactions,
    load_ml1m,
    load_ml100k,
    load_movielens,
    split_title_year,
    temporal_split,
)
from promptrec.errors import DataError

ATOMIC_ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "1\tToy Story\t1995\tAnimation Children's Comedy\n"
    "2\tGoldenEye\t1995\tAction Adventure Thriller\n"
    "3\tunkonwn\tunkonwn\tunknown\n"
)
ATOMIC_INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "10\t1\t4\t881250949\n"
    "10\t2\t3\t881250950\n"
    "11\t3\t5\t881250951\n"
)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def atomic(folder: Path, inter: str = ATOMIC_INTER, item: str = ATOMIC_ITEM, name: str = "mini") -> Path:
    write(folder / f"{name}.inter", inter)
    write(folder / f"{name}.item", item)
    return folder


def check_error(exc: pytest.ExceptionInfo, path: Path, line: int | None, field: str | None) -> None:
    err = exc.value
    assert isinstance(err, DataError)
    assert err.path == str(path)
    assert err.line == line
    assert err.field == field
    message = str(err)
    assert str(path) in message
    if line is not None:
        assert f"line {line}" in message
    if field is not None:
        assert repr(field) in message


def check_frame(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == list(INTERACTION_COLUMNS)
    assert all(isinstance(v, str) for v in frame["user_id"])
    assert all(isinstance(v, str) for v in frame["item_id"])
    assert frame["rating"].dtype == float
    assert frame["timestamp"].dtype == float


# ------------------------------------------------------------------ title parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Toy Story (1995)", ("Toy Story", 1995)),
        ("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995)", ("Shanghai Triad (Yao a yao yao dao waipo qiao)", 1995)),
        ("Slingshot, The (Kådisbellan ) (1993) ", ("Slingshot, The (Kådisbellan )", 1993)),
        ("unknown", ("unknown", None)),
        ("(1995)", ("(1995)", None)),
    ],
)
def test_split_title_year(text, expected):
    assert split_title_year(text) == expected


# ------------------------------------------------------------------ RecBole atomic


def test_load_atomic(tmp_path):
    ds = load_atomic(atomic(tmp_path), "mini")
    assert ds.name == "mini"
    items = ds.catalog()
    assert items["1"] == Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy"))
    assert items["3"].year is None  # "unkonwn" in a token column is no year
    check_frame(ds.interactions)
    assert ds.interactions.iloc[0].to_dict() == {
        "user_id": "10",
        "item_id": "1",
        "rating": 4.0,
        "timestamp": 881250949.0,
        "behaviour": None,
    }
    assert ds.report.skipped_rows == 0
    assert set(ds.report.encodings.values()) == {"utf-8"}


def test_load_atomic_crlf_latin1_and_title_ids(tmp_path):
    # ML-1M's RecBole layout: items keyed by "Title (Year)", float year, genre:token, CRLF
    item = (
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\r\n"
        "Misérables, Les (1995)\tMisérables, Les\t1995\tDrama Musical\r\n"
        "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\r\n"
    )
    inter = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\r\n"
        "1m_1\tMisérables, Les (1995)\t5\t978300760\r\n"
        "1m_1\tToy Story (1995)\t3\t978302109\r\n"
    )
    write(tmp_path / "ml-1m.item", item, "latin-1")
    write(tmp_path / "ml-1m.inter", inter, "utf-8")
    ds = load_atomic(tmp_path, "ml-1m")
    assert ds.catalog()["Misérables, Les (1995)"].display_title() == "Misérables, Les (1995)"
    assert ds.catalog()["Toy Story (1995)"].genres == ("Animation", "Children's", "Comedy")
    assert list(ds.interactions["item_id"]) == ["Misérables, Les (1995)", "Toy Story (1995)"]
    assert ds.report.encodings == {str(tmp_path / "ml-1m.item"): "latin-1", str(tmp_path / "ml-1m.inter"): "utf-8"}


@pytest.mark.parametrize(
    "bad_line, field, fragment",
    [
        ("10\t1\t4\n", "timestamp", "expected 4 tab-separated fields"),
        ("10\t1\tfour\t881250949\n", "rating", "'four' is not a number"),
        ("10\t1\t4\tyesterday\n", "timestamp", "'yesterday' is not"),
        ("\t1\t4\t881250949\n", "user_id", "missing user id"),
        ("10\t\t4\t881250949\n", "item_id", "missing item id"),
        ("10\t99\t4\t881250949\n", "item_id", "'99' is not in mini.item"),
    ],
)
def test_load_atomic_malformed_interactions(tmp_path, bad_line, field, fragment):
    inter = ATOMIC_INTER + bad_line + "12\t1\t3\t881250999\n"
    folder = atomic(tmp_path, inter=inter)
    with pytest.raises(DataError, match=fragment) as exc:
        load_atomic(folder, "mini")
    check_error(exc, folder / "mini.inter", 5, field)

    ds = load_atomic(folder, "mini", skip_bad_rows=True)
    assert len(ds.interactions) == 4  # the bad row is left out, the row after it is kept
    assert ds.report.skipped_rows == 1
    skipped = ds.report.skipped[0]
    assert (skipped.path, skipped.line, skipped.field) == (str(folder / "mini.inter"), 5, field)
    assert fragment in skipped.reason


def test_load_atomic_too_many_fields_and_the_first_bad_line_wins(tmp_path):
    inter = ATOMIC_INTER + "12\t1\t3\t881250999\n" + "10\t1\t4\t1\textra\n" + "10\tx\t4\t1\n"
    folder = atomic(tmp_path, inter=inter)
    with pytest.raises(DataError, match="found 5") as exc:
        load_atomic(folder, "mini")
    check_error(exc, folder / "mini.inter", 6, None)
    ds = load_atomic(folder, "mini", skip_bad_rows=True)
    assert [(s.line, s.field) for s in ds.report.skipped] == [(6, None), (7, "item_id")]
    assert ds.report.reasons() == {f"{folder / 'mini.inter'} [row]": 1, f"{folder / 'mini.inter'} [item_id]": 1}
    assert "2 row(s) skipped" in ds.report.summary()


def test_load_atomic_malformed_items(tmp_path):
    item = ATOMIC_ITEM + "1\tDuplicate\t1990\tDrama\n" + "4\t\t1990\tDrama\n"
    folder = atomic(tmp_path, item=item)
    with pytest.raises(DataError, match="duplicate item id '1'") as exc:
        load_atomic(folder, "mini")
    check_error(exc, folder / "mini.item", 5, "item_id")
    ds = load_atomic(folder, "mini", skip_bad_rows=True)
    assert [(s.line, s.field) for s in ds.report.skipped] == [(5, "item_id"), (6, "movie_title")]
    assert ds.catalog()["1"].title == "Toy Story"  # the first one is kept


def test_load_atomic_skipped_item_makes_its_interactions_unknown(tmp_path):
    item = ATOMIC_ITEM.replace("2\tGoldenEye\t1995", "2\t\t1995")  # item 2 has no title
    folder = atomic(tmp_path, item=item)
    with pytest.raises(DataError, match="missing title"):
        load_atomic(folder, "mini")
    ds = load_atomic(folder, "mini", skip_bad_rows=True)
    assert [(Path(s.path).name, s.line, s.field) for s in ds.report.skipped] == [
        ("mini.item", 3, "movie_title"),
        ("mini.inter", 3, "item_id"),
    ]
    assert len(ds.interactions) == 2


def test_load_atomic_float_year_must_be_a_number(tmp_path):
    item = "item_id:token\tmovie_title:token\trelease_year:float\n1\tA\t19x5\n"
    folder = atomic(tmp_path, inter="user_id:token\titem_id:token\n1\t1\n", item=item)
    with pytest.raises(DataError) as exc:
        load_atomic(folder, "mini")
    check_error(exc, folder / "mini.item", 2, "release_year")
    ds = load_atomic(folder, "mini", skip_bad_rows=True)  # the item goes, then its interaction
    assert ds.report.skipped_rows == 2 and ds.items == []
    assert len(ds.interactions) == 0


def test_load_atomic_without_rating_or_timestamp_columns(tmp_path):
    folder = atomic(tmp_path, inter="user_id:token\titem_id:token\n1\t1\n\n1\t2\n")
    frame = load_atomic(folder, "mini").interactions
    check_frame(frame)
    assert len(frame) == 2  # the blank line is not a row
    assert frame["rating"].isna().all() and frame["timestamp"].isna().all()


def test_load_atomic_needs_id_columns(tmp_path):
    folder = atomic(tmp_path, inter="user:token\titem_id:token\n1\t1\n")
    with pytest.raises(DataError, match="column not found") as exc:
        load_atomic(folder, "mini")
    check_error(exc, folder / "mini.inter", 1, "user_id")


def test_missing_file_is_a_data_error(tmp_path):
    write(tmp_path / "mini.item", ATOMIC_ITEM)
    with pytest.raises(DataError, match="file not found") as exc:
        load_atomic(tmp_path, "mini")
    assert exc.value.path == str(tmp_path / "mini.inter")


# ------------------------------------------------------------------ GroupLens ML-100K

U_ITEM = (
    "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "2|Misérables, Les (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0\n"
    "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
    "5|Copycat|01-Jan-1995||http://x|0|0|0|0|0|0|1|0|1|0|0|0|0|0|0|0|1|0|0\n"
)
U_DATA = "196\t1\t3\t881250949\n186\t2\t3\t891717742\n22\t267\t1\t878887116\n196\t5\t4\t881250950\n"


def ml100k(folder: Path, data: str = U_DATA, item: str = U_ITEM) -> Path:
    write(folder / "u.item", item, "latin-1")
    write(folder / "u.data", data)
    return folder


def test_load_ml100k(tmp_path):
    ds = load_ml100k(ml100k(tmp_path))
    assert ds.name == "ml-100k"
    items = ds.catalog()
    assert items["1"] == Item(item_id="1", title="Toy Story", year=1995, genres=("Animation", "Children's", "Comedy"))
    assert items["2"].title == "Misérables, Les" and items["2"].genres == ("Drama", "Musical")
    assert items["267"].year is None and items["267"].genres == ("unknown",)
    assert items["5"].year == 1995  # no year in the title: the release date's year
    check_frame(ds.interactions)
    assert len(ds.interactions) == 4
    assert ds.report.encodings[str(tmp_path / "u.item")] == "latin-1"


def test_load_ml100k_reads_genre_names_from_u_genre(tmp_path):
    names = [f"G{i}" for i in range(19)]
    write(tmp_path / "u.genre", "".join(f"{n}|{i}\n" for i, n in enumerate(names)) + "\n")
    ds = load_ml100k(ml100k(tmp_path))
    assert ds.catalog()["1"].genres == ("G3", "G4", "G5")


def test_load_ml100k_malformed(tmp_path):
    folder = ml100k(tmp_path, data=U_DATA + "196\t2\t\t881250950\n")
    with pytest.raises(DataError, match="missing rating") as exc:
        load_ml100k(folder)
    check_error(exc, folder / "u.data", 5, "rating")

    bad_item = U_ITEM.replace("5|Copycat|01-Jan-1995||http://x|0|0|0|0|0|0|1", "5|Copycat|01-Jan-1995||http://x|0|0|0|0|0|0|y")
    folder = ml100k(tmp_path / "b", item=bad_item)
    with pytest.raises(DataError, match="genre flag 'y'") as exc:
        load_ml100k(folder)
    check_error(exc, folder / "u.item", 4, "Crime")
    ds = load_ml100k(folder, skip_bad_rows=True)  # item 5 goes, and with it line 4 of u.data
    assert [(Path(s.path).name, s.line) for s in ds.report.skipped] == [("u.item", 4), ("u.data", 4)]

    folder = ml100k(tmp_path / "c", item=U_ITEM + "6|Short|01-Jan-1995\n")
    with pytest.raises(DataError, match="expected 24 pipe-separated fields") as exc:
        load_ml100k(folder)
    check_error(exc, folder / "u.item", 5, "video_release_date")


# ------------------------------------------------------------------ GroupLens ML-1M

MOVIES = "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Misérables, Les (1995)::Drama|Musical\n"
RATINGS = "1::1::5::978300760\n1::2::3::978302109\n2::1::4::978301968\n"


def ml1m(folder: Path, ratings: str = RATINGS, movies: str = MOVIES) -> Path:
    write(folder / "movies.dat", movies, "latin-1")
    write(folder / "ratings.dat", ratings)
    return folder


def test_load_ml1m(tmp_path):
    ds = load_ml1m(ml1m(tmp_path))
    assert ds.name == "ml-1m"
    assert ds.catalog()["2"] == Item(item_id="2", title="Misérables, Les", year=1995, genres=("Drama", "Musical"))
    check_frame(ds.interactions)
    assert ds.interactions["rating"].tolist() == [5.0, 3.0, 4.0]


def test_load_ml1m_malformed(tmp_path):
    folder = ml1m(tmp_path, ratings=RATINGS + "2::2::4\n")
    with pytest.raises(DataError, match="expected 4 '::'-separated fields") as exc:
        load_ml1m(folder)
    check_error(exc, folder / "ratings.dat", 4, "timestamp")

    folder = ml1m(tmp_path / "b", movies=MOVIES + "3 Broken line\n")
    with pytest.raises(DataError) as exc:
        load_ml1m(folder)
    check_error(exc, folder / "movies.dat", 3, "title")

    folder = ml1m(tmp_path / "c", ratings=RATINGS + "2::2::4::soon\n3::1::x::1\n")
    ds = load_ml1m(folder, skip_bad_rows=True)
    assert [(s.line, s.field) for s in ds.report.skipped] == [(4, "timestamp"), (5, "rating")]
    assert len(ds.interactions) == 3


# ------------------------------------------------------------------ layout detection


def test_load_movielens_detects_the_layout(tmp_path):
    assert len(load_movielens(atomic(tmp_path / "a", name="ml-100k")).items) == 3
    assert load_movielens(tmp_path / "a").name == "ml-100k"
    assert load_movielens(ml100k(tmp_path / "b")).name == "ml-100k"
    assert load_movielens(ml1m(tmp_path / "c"), name="movielens-1m").name == "movielens-1m"
    assert load_movielens(atomic(tmp_path / "d", name="other")).name == "other"
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no MovieLens files"):
        load_movielens(tmp_path / "e")


# ------------------------------------------------------------------ generic catalogs


def test_load_catalog_csv_with_quotes_and_multiline_fields(tmp_path):
    path = write(
        tmp_path / "products.csv",
        "sku,name,brand,category,tags,year\n"
        'A1,"Kettle, steel",Acme,Kitchen,home|kitchen,2020\n'
        'B2,"Mug ""XL""\nwith handle",Acme,,kitchen,\n'
        "C3,Lamp,Lumo,Home,,2019.0\n",
    )
    items = load_catalog(
        path, id_field="sku", title_field="name", text_fields=("brand", "category"), genres_field="tags", year_field="year"
    )
    assert items[0] == Item(
        item_id="A1",
        title="Kettle, steel",
        year=2020,
        genres=("home", "kitchen"),
        attributes={"brand": "Acme", "category": "Kitchen"},
    )
    assert items[1].title == 'Mug "XL"\nwith handle' and items[1].attributes == {"brand": "Acme"}
    assert items[2].year == 2019

    bad = write(tmp_path / "bad.csv", "sku,name,year\n" 'A1,"two\nlines",2020\n' "B2,Lamp,soon\n")
    with pytest.raises(DataError, match="'soon' is not a whole number") as exc:
        load_catalog(bad, id_field="sku", title_field="name", year_field="year")
    check_error(exc, bad, 4, "year")  # line 4: the quoted record before it spans lines 2-3


def test_load_catalog_jsonl(tmp_path):
    path = write(
        tmp_path / "news.jsonl",
        json.dumps({"id": 7, "headline": "Rates rise", "topics": ["economy", "finance"], "source": "Wire"}) + "\n"
        + "\n"
        + json.dumps({"id": "8", "headline": "Storm", "topics": "weather|local"}) + "\n",
    )
    items = load_catalog(path, id_field="id", title_field="headline", genres_field="topics", text_fields=("source",))
    assert [i.item_id for i in items] == ["7", "8"]
    assert items[0].genres == ("economy", "finance") and items[0].attributes == {"source": "Wire"}
    assert items[1].genres == ("weather", "local")


@pytest.mark.parametrize(
    "line, field, fragment",
    [
        ('{"id": 1, "title": "A"', None, "invalid JSON"),
        ('[1, "A"]', None, "expected a JSON object"),
        ('{"title": "A"}', "id", "missing item id"),
        ('{"id": 2}', "title", "missing title"),
        ('{"id": 1, "title": "again"}', "id", "duplicate item id '1' (first on line 1)"),
    ],
)
def test_load_catalog_jsonl_malformed(tmp_path, line, field, fragment):
    path = write(tmp_path / "items.ndjson", '{"id": 1, "title": "A"}\n' + line + "\n" + '{"id": 3, "title": "C"}\n')
    with pytest.raises(DataError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as exc:
        load_catalog(path, id_field="id")
    check_error(exc, path, 2, field)
    report = LoadReport()
    items = load_catalog(path, id_field="id", skip_bad_rows=True, report=report)
    assert [i.item_id for i in items] == ["1", "3"]
    assert report.skipped_rows == 1 and report.skipped[0].line == 2


def test_load_catalog_missing_column_and_unknown_suffix(tmp_path):
    path = write(tmp_path / "items.csv", "id,title\n1,A\n2\n")  # the header is checked first
    with pytest.raises(DataError, match="column not found") as exc:
        load_catalog(path, id_field="id", genres_field="genre")
    check_error(exc, path, 1, "genre")
    path = write(tmp_path / "items.tsv", "id\ttitle\tid\n1\tA\t1\n")
    with pytest.raises(DataError, match="column appears 2 times") as exc:
        load_catalog(path, id_field="id")
    check_error(exc, path, 1, "id")
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        load_catalog(write(tmp_path / "items.xlsx", "x"))


# ------------------------------------------------------------------ generic interaction logs


def test_load_interactions_csv_iso_and_epoch_timestamps(tmp_path):
    path = write(
        tmp_path / "events.csv",
        "user,sku,event,when,stars\n"
        "u1,A1,click,2024-01-02T03:04:05Z,\n"
        "u1,B2,purchase,2024-01-02 03:04:06+00:00,5\n"
        "u2,A1,click,1704164645,\n"
        " u3 , A1 ,,2024-01-02,4.5\n",
    )
    frame = load_interactions(
        path, user_field="user", item_field="sku", rating_field="stars", timestamp_field="when", behaviour_field="event"
    )
    check_frame(frame)
    assert frame["timestamp"].tolist() == [1704164645.0, 1704164646.0, 1704164645.0, 1704153600.0]
    assert frame["behaviour"].tolist() == ["click", "purchase", "click", None]
    assert frame["user_id"].tolist() == ["u1", "u1", "u2", "u3"]
    assert frame["item_id"].tolist() == ["A1", "B2", "A1", "A1"]
    assert math.isnan(frame["rating"][0]) and frame["rating"][3] == 4.5


def test_load_interactions_explicit_formats_and_tsv(tmp_path):
    path = write(tmp_path / "plays.tsv", "user_id\titem_id\tts\nu\t1\t1704164645000\n")
    frame = load_interactions(path, timestamp_field="ts", timestamp_format="epoch_ms")
    assert frame["timestamp"].tolist() == [1704164645.0]
    path = write(tmp_path / "plays2.csv", "user_id,item_id,ts\nu,1,02/01/2024 03:04\nu,2,2024-01-02\n")
    with pytest.raises(DataError, match="not a date-time in the format") as exc:
        load_interactions(path, timestamp_field="ts", timestamp_format="%d/%m/%Y %H:%M")
    check_error(exc, path, 3, "ts")
    report = LoadReport()
    frame = load_interactions(path, timestamp_field="ts", timestamp_format="%d/%m/%Y %H:%M", skip_bad_rows=True, report=report)
    assert frame["timestamp"].tolist() == [1704164640.0] and report.skipped_rows == 1


@pytest.mark.parametrize(
    "line, field, fragment",
    [
        ('{"user_id": "u", "item_id": "1", "rating": "high"}', "rating", "'high' is not a number"),
        ('{"user_id": "u", "item_id": "1", "ts": "noon"}', "ts", "'noon' is not epoch seconds or an ISO-8601"),
        ('{"user_id": null, "item_id": "1"}', "user_id", "missing user id"),
        ('{"user_id": "u", "item_id": "zz"}', "item_id", "'zz' is not in the catalog"),
        ('{"user_id": "u", "item_id": 1', None, "invalid JSON"),
    ],
)
def test_load_interactions_jsonl_malformed(tmp_path, line, field, fragment):
    path = write(
        tmp_path / "log.jsonl",
        '{"user_id": 5, "item_id": 1, "rating": 4, "ts": 1700000000}\n' + line + "\n" + '{"user_id": "v", "item_id": "2"}\n',
    )
    kwargs = dict(rating_field="rating", timestamp_field="ts", known_items=[Item(item_id="1", title="A"), "2"])
    with pytest.raises(DataError, match=fragment) as exc:
        load_interactions(path, **kwargs)
    check_error(exc, path, 2, field)
    report = LoadReport()
    frame = load_interactions(path, skip_bad_rows=True, report=report, **kwargs)
    assert frame["user_id"].tolist() == ["5", "v"]
    assert frame["rating"][0] == 4.0 and frame["timestamp"][0] == 1.7e9
    assert [(s.line, s.field) for s in report.skipped] == [(2, field)]


def test_skip_without_a_report_warns(tmp_path):
    path = write(tmp_path / "log.csv", "user_id,item_id,rating\nu,1,x\nu,2,3\n")
    with pytest.warns(UserWarning, match="1 row\\(s\\) skipped"):
        frame = load_interactions(path, rating_field="rating", skip_bad_rows=True)
    assert frame["item_id"].tolist() == ["2"]


def test_load_interactions_wrong_field_count_in_quoted_csv(tmp_path):
    path = write(tmp_path / "log.csv", 'user_id,item_id,note\nu,1,"a, b"\nu,2\n')
    with pytest.raises(DataError, match="expected 3 comma-separated fields") as exc:
        load_interactions(path, behaviour_field="note")
    check_error(exc, path, 3, "note")


def test_load_interactions_broken_quote(tmp_path):
    path = write(tmp_path / "log.csv", 'user_id,item_id\nu,1\nu,"2\n')
    with pytest.raises(DataError, match="malformed CSV") as exc:
        load_interactions(path)
    check_error(exc, path, 3, None)


# ------------------------------------------------------------------ the real MovieLens-100K


@pytest.fixture(scope="session")
def movielens_100k(tmp_path_factory) -> Path:
    """ML-100K's RecBole files, fetched from the recbole wheel on PyPI into a temporary cache."""
    cache = tmp_path_factory.mktemp("promptrec-cache")
    try:
        from promptrec.assets import fetch_dataset
        from promptrec.config import Settings
    except ImportError:  # the asset registry is not there: fetch the wheel directly
        wheels = tmp_path_factory.mktemp("wheels")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "recbole==1.2.1", "-d", str(wheels)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot download recbole==1.2.1 from PyPI: {proc.stderr.strip()[-300:]}")
        wheel = next(wheels.glob("recbole-1.2.1-*.whl"))
        prefix = "recbole/dataset_example/ml-100k/"
        with zipfile.ZipFile(wheel) as zf:
            for ext in ("inter", "item"):
                with zf.open(f"{prefix}ml-100k.{ext}") as src, open(cache / f"ml-100k.{ext}", "wb") as out:
                    shutil.copyfileobj(src, out)
        return cache
    from promptrec.errors import AssetError

    try:
        return fetch_dataset("movielens-100k", Settings(cache_dir=cache))
    except AssetError as exc:
        pytest.skip(f"MovieLens-100K could not be fetched: {exc}")


@pytest.mark.integration
def test_real_movielens_100k(movielens_100k):
    ds = load_movielens(movielens_100k)
    frame = ds.interactions
    check_frame(frame)
    assert (frame["user_id"].nunique(), len(ds.items), len(frame)) == (943, 1682, 100000)
    assert frame["item_id"].nunique() == 1682
    assert ds.report.skipped_rows == 0
    assert ds.catalog()["1"].text() == "Toy Story (1995) — Animation, Children's, Comedy"
    split = temporal_split(frame)
    assert len(split.test) == len(split.validation) == 943
    assert len(split.train) == 100000 - 2 * 943
    # 44% of the users rated their last two films in the same second (the tie rule matters)
    same = (split.validation.set_index("user_id")["timestamp"] == split.test.set_index("user_id")["timestamp"]).mean()
    assert 0.43 < same < 0.45


def test_load_bookcrossing_records_what_it_leaves_out(tmp_path):
    """Book-Crossing's layout (`;`, quoted, latin-1, backslash escapes): a line with too many
    fields and a rating of a book missing from the catalog are left out and recorded, not lost."""
    header = '"ISBN";"Book-Title";"Book-Author";"Year-Of-Publication";"Publisher";"Image-URL-S"\n'
    books = (
        header
        + '"0195153448";"Classical Mythology";"Mark P. O. Morford";"2002";"Oxford University Press";"u"\n'
        + '"0002005018";"Clara Callan";"Richard Bruce Wright";"2001";"HarperFlamingo";"u";"stray"\n'
        + '"0060973129";"Decision in Normandy";"Carlo D\'Este";"1991";"HarperPerennial";"u"\n'
    )
    (tmp_path / "BX-Books.csv").write_bytes(books.encode("latin-1"))
    ratings = '"User-ID";"ISBN";"Book-Rating"\n"1";"0195153448";"5"\n"2";"0060973129";"0"\n"3";"9999999999";"7"\n'
    (tmp_path / "BX-Book-Ratings.csv").write_text(ratings, encoding="latin-1")
    data = load_bookcrossing(tmp_path)
    assert [i.item_id for i in data.items] == ["0195153448", "0060973129"]
    assert data.items[0].attributes == {"author": "Mark P. O. Morford", "publisher": "Oxford University Press"}
    assert data.interactions["item_id"].tolist() == ["0195153448", "0060973129"]
    skipped = {(Path(s.path).name, s.line, s.field) for s in data.report.skipped}
    assert skipped == {("BX-Books.csv", 3, None), ("BX-Book-Ratings.csv", None, "item_id")}
    assert "9999999999" in next(s.reason for s in data.report.skipped if s.field == "item_id")


# ----------------------------------------------------------------------------- nothing silent


def _log(tmp_path: Path, name: str, body: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def test_one_latin1_byte_in_a_utf8_file_is_refused_naming_its_line(tmp_path):
    body = "item_id,title\n1,Amélie\n2,Léon\n".encode() + "3,Café\n".encode("latin-1")
    with pytest.raises(DataError, match=r"line 4.*mixes text encodings|mixes text encodings.*line 4"):
        load_catalog(_log(tmp_path, "c.csv", body))


def test_a_whole_latin1_file_still_loads(tmp_path):
    items = load_catalog(_log(tmp_path, "c.csv", "item_id,title\n1,Amélie\n2,Café\n".encode("latin-1")))
    assert [i.title for i in items] == ["Amélie", "Café"]


def test_a_utf16_file_with_a_bom_loads_and_one_without_names_its_encoding(tmp_path):
    text = "item_id,title\n1,Amélie\n"
    assert load_catalog(_log(tmp_path, "a.csv", text.encode("utf-16")))[0].title == "Amélie"
    with pytest.raises(DataError, match="UTF-16"):
        load_catalog(_log(tmp_path, "b.csv", text.encode("utf-16-le")))


def test_epoch_milliseconds_among_seconds_are_bad_rows(tmp_path):
    body = b"user_id,item_id,timestamp\n1,a,881250949\n1,b,881250949000\n"
    with pytest.raises(DataError, match=r"line 3.*epoch_ms"):
        load_interactions(_log(tmp_path, "l.csv", body), timestamp_field="timestamp")
    ms = load_interactions(_log(tmp_path, "m.csv", b"user_id,item_id,timestamp\n1,a,881250949000\n"),
                           timestamp_field="timestamp", timestamp_format="epoch_ms")
    assert ms["timestamp"].tolist() == [881250949.0]


@pytest.mark.parametrize("value", ['{"a": 1}', '["a", "b"]'])
def test_json_objects_and_lists_are_no_ids(tmp_path, value):
    log = _log(tmp_path, "l.jsonl", f'{{"user_id": "1", "item_id": "x"}}\n{{"user_id": "1", "item_id": {value}}}\n'.encode())
    with pytest.raises(DataError, match=r"line 2.*item_id.*JSON"):
        load_interactions(log)
    catalog = _log(tmp_path, "c.jsonl", f'{{"item_id": {value}, "title": "T"}}\n'.encode())
    with pytest.raises(DataError, match=r"line 1.*item_id.*JSON"):
        load_catalog(catalog)


@pytest.mark.parametrize("year", ["100000000000000000000", "-500", "0"])
def test_years_outside_four_digits_are_bad_rows(tmp_path, year):
    with pytest.raises(DataError, match=r"line 2.*year.*outside"):
        load_catalog(_log(tmp_path, "c.csv", f"item_id,title,year\n1,T,{year}\n".encode()), year_field="year")


def test_a_log_with_a_header_and_no_rows_is_an_error(tmp_path):
    from promptrec.config import Settings
    from promptrec.recommender import Recommender

    frame = load_interactions(_log(tmp_path, "l.csv", b"user_id,item_id\n"))
    assert frame.empty
    with pytest.raises(DataError, match="no rows"):
        Recommender.from_interactions([Item(item_id="a", title="A")], frame, Settings(index_dir=tmp_path / "index"))
    assert not (tmp_path / "index").exists()
