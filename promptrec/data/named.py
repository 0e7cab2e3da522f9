"""Named data sets (see `promptrec.assets`) and files of your own, loaded into a Dataset.

`load_dataset(settings)` is the one entry point: the files named in the settings' ``[data]``
section when there are any, else the named data set ``settings.dataset``. Each named data set
has a reader, a domain preset (MovieLens: "movies", Book-Crossing: "books") and its fixed
preprocessing (Book-Crossing: explicit ratings only, then a 5-core).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from promptrec.config import Settings
from promptrec.data.schema import Dataset

log = logging.getLogger(__name__)


class NamedDataset(BaseModel):
    """How a registered data set is read and its fixed preprocessing (its domain words:
    `promptrec.domain.DATASET_DOMAINS`)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    reader: Callable[[Path], Dataset]
    min_rating: float | None = None  # always applied (e.g. Book-Crossing's 0 = implicit rows)
    k_core: tuple[int, int] | None = None


def _movielens(folder: Path) -> Dataset:
    from promptrec.data.movielens import load_movielens

    return load_movielens(folder)


def _bookcrossing(folder: Path) -> Dataset:
    from promptrec.data.bookcrossing import load_bookcrossing

    return load_bookcrossing(folder)


NAMED_DATASETS: dict[str, NamedDataset] = {
    "movielens-100k": NamedDataset(reader=_movielens),
    "movielens-1m": NamedDataset(reader=_movielens),
    "book-crossing": NamedDataset(reader=_bookcrossing, min_rating=1.0, k_core=(5, 5)),
}


def _preprocess(dataset: Dataset, name: str, min_rating: float | None, core: tuple[int, int] | None) -> Dataset:
    """The one preprocessing path (`prepare_interactions`: repeats removed, the rating threshold),
    then a k-core when the data set or the settings ask for one."""
    from promptrec.data.preprocess import k_core, prepare_interactions

    frame = prepare_interactions(dataset.interactions, min_rating, name)
    if core is not None:
        before = len(frame)
        frame = k_core(frame, core[0], core[1])
        log.info("%s: %d-core (users) x %d-core (items) removed %d rows", name, core[0], core[1], before - len(frame))
        seen = set(frame["item_id"])
        dataset = dataset.model_copy(update={"items": [it for it in dataset.items if it.item_id in seen]})
    return dataset.model_copy(update={"name": name, "interactions": frame})


def load_named_dataset(name: str, settings: Settings | None = None) -> Dataset:
    """Fetch a registered data set (once) and load it, applying its own and the configured preprocessing.

    ``name`` may also be a folder of MovieLens-layout files (RecBole atomic ``<stem>.inter`` +
    ``<stem>.item``, or GroupLens ``u.data`` / ``ratings.dat``), e.g. a slice of a data set:
    ``PROMPTREC_DATASET=/data/my-slice``."""
    from promptrec.assets import ASSETS, fetch_dataset

    settings = settings or Settings()
    entry = NAMED_DATASETS.get(name.strip().lower())
    folder = Path(name).expanduser()
    if entry is None and name.lower() not in ASSETS and folder.is_dir():
        return _preprocess(_movielens(folder), name, settings.min_rating, None)
    if entry is None:
        fetch_dataset(name, settings)  # an unknown name: AssetError listing the known ones
        raise KeyError(name)  # pragma: no cover - a registered asset without a reader
    dataset = entry.reader(fetch_dataset(name, settings))
    if entry.min_rating is not None or entry.k_core is not None:
        dataset = _preprocess(dataset, name, entry.min_rating, entry.k_core)
    return _preprocess(dataset, name, settings.min_rating, None)


def load_custom_dataset(settings: Settings) -> Dataset:
    """The catalog and log named in `settings.data`, read with their loader options."""
    from promptrec.data.loaders import load_catalog, load_interactions
    from promptrec.data.schema import LoadReport

    data = settings.data
    assert data.catalog is not None and data.interactions is not None
    report = LoadReport()
    c, i = data.catalog, data.interactions
    items = load_catalog(
        c.path, c.id_field, c.title_field, tuple(c.text_fields), c.genres_field, c.year_field, c.genre_sep,
        delimiter=c.delimiter, skip_bad_rows=data.skip_bad_rows, report=report,
    )
    frame = load_interactions(
        i.path, i.user_field, i.item_field, i.rating_field, i.timestamp_field, i.behaviour_field,
        i.timestamp_format, delimiter=i.delimiter, known_items=items, skip_bad_rows=data.skip_bad_rows,
        report=report,
    )
    dataset = Dataset(name=settings.dataset_name(), items=items, interactions=frame, report=report)
    return _preprocess(dataset, settings.dataset_name(), settings.min_rating, data.k_core)


def load_dataset(settings: Settings | None = None) -> Dataset:
    """The configured data: the `[data]` files when given, else the named `dataset`."""
    settings = settings or Settings()
    if settings.data.custom:
        return load_custom_dataset(settings)
    return load_named_dataset(settings.dataset, settings)
