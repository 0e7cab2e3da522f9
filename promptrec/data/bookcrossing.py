"""The Book-Crossing loader (`BX-Books.csv`, `BX-Book-Ratings.csv`)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pandas as pd

from promptrec.data.schema import Dataset, Item, LoadReport, SkippedRow, interactions_frame
from promptrec.errors import DataError

__all__ = ["BX_BOOKS", "BX_RATINGS", "load_bookcrossing"]

BX_BOOKS = "BX-Books.csv"
BX_RATINGS = "BX-Book-Ratings.csv"


def load_bookcrossing(folder: str | Path, *, name: str = "book-crossing") -> Dataset:
    """Book-Crossing (Ziegler et al. 2005) as shipped in `BX-Books.csv` and `BX-Book-Ratings.csv`
    (`;`-separated, quoted, latin-1, backslash escapes). Items are ISBNs titled by the book
    title, with the author and publisher as attributes and the publication year (that of the
    edition rated); ratings are 1-10 (explicit) or 0 (implicit: the user holds the book); there
    are no timestamps. Ratings of ISBNs missing from the books file are left out, and lines with
    the wrong number of fields are skipped; both are recorded in the data set's report."""
    import html

    folder = Path(folder)
    for file in (BX_BOOKS, BX_RATINGS):
        if not (folder / file).is_file():
            raise DataError(f"no {file} here: not a Book-Crossing folder", path=str(folder))
    report = LoadReport()
    # All columns are read (not `usecols`): only then does pandas see a line with extra fields.
    books = _read_bx(folder / BX_BOOKS, report)[["ISBN", "Book-Title", "Book-Author", "Year-Of-Publication",
                                                 "Publisher"]]
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
    ratings = _read_bx(folder / BX_RATINGS, report)
    ratings.columns = ["user_id", "item_id", "rating"]
    ratings["user_id"] = ratings["user_id"].str.strip()
    ratings["item_id"] = ratings["item_id"].str.strip()
    known = ratings["item_id"].isin(items.keys()).to_numpy()
    path = str(folder / BX_RATINGS)
    report.skipped.extend(
        SkippedRow(path=path, line=None, field="item_id", reason=f"ISBN {isbn!r} is not in {BX_BOOKS}")
        for isbn in ratings["item_id"].to_numpy()[~known]
    )
    ratings = ratings[known]
    frame = interactions_frame(ratings.assign(rating=pd.to_numeric(ratings["rating"], errors="coerce")))
    return Dataset(name=name, items=list(items.values()), interactions=frame, report=report)


_SKIPPED_LINE = re.compile(r"Skipping line (\d+): (.*)", re.S)


def _read_bx(path: Path, report: LoadReport) -> pd.DataFrame:
    """One Book-Crossing file as strings; each line pandas cannot split is recorded as skipped."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        frame = pd.read_csv(path, sep=";", encoding="latin-1", escapechar="\\", dtype=str,
                            keep_default_na=False, on_bad_lines="warn")
    report.encodings[str(path)] = "latin-1"
    for warning in caught:
        for part in str(warning.message).strip().split("\n"):
            match = _SKIPPED_LINE.match(part.strip())
            if match:
                report.skipped.append(SkippedRow(path=str(path), line=int(match[1]), reason=match[2].strip()))
    return frame
